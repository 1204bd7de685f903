"""Kubernetes login: the pod's service-account token, read from its file at each login.

The kubelet rotates a projected service-account token (about hourly, and at every pod
restart), so the token is never kept: every login reads the file again. Vault checks the
token with the Kubernetes TokenReview API and that it belongs to the service account and
namespace the role is bound to. The token TTL, renewal and re-login after that are the
TokenManager's, exactly as for AppRole.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .approle import LOGIN_REFUSED, REFUSALS, LoginResult, login_result
from .errors import ConfigurationError
from .settings import VaultSettings
from .transport.ha import HAAdapter, describe

log = logging.getLogger(__name__)


class KubernetesLogin:
    """Logs in with auth/<mount>/login {role, jwt}; knows where the token file is."""

    def __init__(self, settings: VaultSettings, adapter: HAAdapter) -> None:
        self.settings = settings
        self.adapter = adapter

    def login(self) -> LoginResult:
        """POST auth/<mount>/login with the service-account token as it is in the file now."""
        role = self.settings.kubernetes_role
        log.info("logging in with Kubernetes (role %s)", role)
        try:
            response = self.adapter.post(
                f"/v1/auth/{self.settings.kubernetes_mount}/login",
                json={"role": role, "jwt": self.service_account_token()},
            )
        except REFUSALS as error:
            log.error(LOGIN_REFUSED, extra={"role": role, "reason": describe(error)})
            raise
        except Exception as error:
            log.warning("logging in with Kubernetes: failed (%s)", describe(error))
            raise
        result = login_result(response["auth"])
        log.info(
            "logging in with Kubernetes: ok (accessor %s, ttl %ss)", result.accessor, result.ttl
        )
        return result

    def service_account_token(self) -> str:
        """The token file's content now (Kubernetes may have rotated it since the last login)."""
        path = self.settings.kubernetes_token_file
        try:
            token = Path(path).read_text().strip()
        except OSError as error:
            raise ConfigurationError(
                f"cannot read VAULT_KUBERNETES_TOKEN_FILE {path}: {error}"
            ) from None
        if not token:
            raise ConfigurationError(f"VAULT_KUBERNETES_TOKEN_FILE {path} is empty")
        return token
