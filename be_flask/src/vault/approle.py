"""AppRole login: the role ID plus a secret ID from the environment or a file read at each login.

The file may hold a response-wrapped secret ID (a wrapping token). Before unwrapping we ask
`sys/wrapping/lookup` where the token was created: only `auth/<mount>/role/<role>/secret-id`
is accepted, so a token minted elsewhere (e.g. wrapping a secret an attacker controls) is
refused with an alert. A wrapping token is single-use, so its unwrapped secret ID is
remembered for as long as the file still holds that same token.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac.exceptions

from .errors import ConfigurationError, SecretIdWrappingError
from .settings import VaultSettings
from .transport.ha import HAAdapter, describe

log = logging.getLogger(__name__)

# Quoted by the original design document; logged when Vault refuses the role or secret ID.
LOGIN_REFUSED = "Vault authentication failed: permission denied"
# What Vault answers to a login with a wrong, destroyed or expired role or secret ID
# (400 "invalid role or secret ID"), or from an address outside the bound CIDRs (403).
REFUSALS = (hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized)

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)


def masked(value: str | None) -> str:
    """Enough of an identifier to recognise it in logs, never the whole of it."""
    if not value:
        return "<none>"
    return value[:4] + "..." if len(value) > 8 else "..."


@dataclass(frozen=True)
class LoginResult:
    """What a login or renewal gives us about the token (the token itself is in `token`)."""

    token: str
    accessor: str
    ttl: float
    renewable: bool


def login_result(auth: dict[str, Any]) -> LoginResult:
    """Turn the `auth` block of a login or renew-self response into a LoginResult."""
    return LoginResult(
        token=auth["client_token"],
        accessor=auth.get("accessor", ""),
        ttl=float(auth.get("lease_duration") or 0),
        renewable=bool(auth.get("renewable")),
    )


class AppRoleLogin:
    """Logs in with AppRole; knows where the secret ID comes from."""

    def __init__(self, settings: VaultSettings, adapter: HAAdapter) -> None:
        self.settings = settings
        self.adapter = adapter
        self._unwrapped_lock = threading.Lock()
        self._unwrapped: tuple[str, str] | None = None  # (wrapping token, secret id)

    def login(self) -> LoginResult:
        """POST auth/<mount>/login with the current credentials."""
        role_id = self.settings.role_id
        if not role_id:
            raise ConfigurationError("VAULT_ROLE_ID is not set")
        log.info("logging in with AppRole (role_id %s)", masked(role_id))
        try:
            response = self.adapter.post(
                f"/v1/auth/{self.settings.approle_mount}/login",
                json={"role_id": role_id, "secret_id": self.secret_id()},
            )
        except REFUSALS as error:
            log.error(LOGIN_REFUSED, extra={"role_id": masked(role_id), "reason": describe(error)})
            raise
        except Exception as error:
            log.warning("logging in with AppRole: failed (%s)", describe(error))
            raise
        result = login_result(response["auth"])
        log.info("logging in with AppRole: ok (accessor %s, ttl %ss)", result.accessor, result.ttl)
        return result

    def secret_id(self) -> str:
        """The secret ID: VAULT_SECRET_ID_FILE (re-read now, unwrapped if wrapped) or env."""
        path = self.settings.secret_id_file
        if not path:
            if not self.settings.secret_id:
                raise ConfigurationError("set VAULT_SECRET_ID or VAULT_SECRET_ID_FILE")
            return self.settings.secret_id
        try:
            content = Path(path).read_text().strip()
        except OSError as error:
            raise ConfigurationError(f"cannot read VAULT_SECRET_ID_FILE {path}: {error}") from None
        if not content:
            raise ConfigurationError(f"VAULT_SECRET_ID_FILE {path} is empty")
        if UUID_RE.match(content):
            return content
        return self._unwrap(content)

    def _unwrap(self, wrapping_token: str) -> str:
        with self._unwrapped_lock:
            if self._unwrapped and self._unwrapped[0] == wrapping_token:
                return self._unwrapped[1]
            self._check_creation_path(wrapping_token)
            log.info("unwrapping secret ID")
            response = self.adapter.post(
                "/v1/sys/wrapping/unwrap", headers={"X-Vault-Token": wrapping_token}
            )
            secret_id = str(response["data"]["secret_id"])
            log.info(
                "unwrapping secret ID: ok (accessor %s)", response["data"].get("secret_id_accessor")
            )
            self._unwrapped = (wrapping_token, secret_id)
            return secret_id

    def _check_creation_path(self, wrapping_token: str) -> None:
        expected = f"auth/{self.settings.approle_mount}/role/{self.settings.role_name}/secret-id"
        try:
            info = self.adapter.post("/v1/sys/wrapping/lookup", json={"token": wrapping_token})
        except hvac.exceptions.InvalidRequest:
            log.error(
                "ALERT: VAULT_SECRET_ID_FILE holds neither a secret ID nor a live wrapping token"
            )
            raise SecretIdWrappingError(
                "the wrapping token is invalid, expired or already used"
            ) from None
        creation_path = info["data"].get("creation_path", "")
        if creation_path != expected:
            log.error(
                "ALERT: wrapped secret ID refused: created at %r, expected %r (possible tampering)",
                creation_path,
                expected,
            )
            raise SecretIdWrappingError(
                f"wrapping token was created at {creation_path!r}, not {expected!r}"
            )
