"""How to reach Vault, read from the environment (never a secret value except AppRole creds)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import ConfigurationError

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
AUTH_METHODS = ("approle", "kubernetes")
# Where the kubelet mounts the pod's projected service-account token (rotated by Kubernetes).
SERVICE_ACCOUNT_TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105 - a path


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None


def _optional(env: Mapping[str, str], name: str) -> str | None:
    return env.get(name, "").strip() or None


@dataclass(frozen=True)
class FallbackSettings:
    """Values used only while Vault has never answered in this process."""

    secret_key: str | None = field(default=None, repr=False)
    database_url: str | None = field(default=None, repr=False)
    admin_password: str | None = field(default=None, repr=False)
    user_password: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> FallbackSettings:
        """Read SECRET_KEY, DATABASE_URL, ADMIN_PASSWORD and USER_PASSWORD."""
        return cls(
            secret_key=_optional(env, "SECRET_KEY"),
            database_url=_optional(env, "DATABASE_URL"),
            admin_password=_optional(env, "ADMIN_PASSWORD"),
            user_password=_optional(env, "USER_PASSWORD"),
        )


@dataclass(frozen=True)
class VaultSettings:
    """Everything the client needs; build it with from_env() or directly in tests."""

    addresses: tuple[str, ...] = ("http://127.0.0.1:8200",)
    role_id: str | None = field(default=None, repr=False)
    secret_id: str | None = field(default=None, repr=False)
    secret_id_file: str | None = None
    role_name: str = "flask-app"
    approle_mount: str = "approle"
    auth_method: str = "approle"  # or "kubernetes": the pod's service-account token
    kubernetes_role: str = "flask-app"
    kubernetes_mount: str = "kubernetes"
    kubernetes_token_file: str = SERVICE_ACCOUNT_TOKEN_FILE
    kv_mount: str = "secret"
    cache_ttl: float = 300.0
    max_staleness: float | None = None  # None: serve the last good value for ever
    connect_timeout: float = 2.0
    read_timeout: float = 5.0
    read_retries: int = 2
    retry_delay: float = 0.2
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    cacert: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    skip_verify: bool = False
    app_env: str = "production"
    db_mode: str = "static"  # "dynamic": logins from the database secrets engine
    fallback: FallbackSettings = field(default_factory=FallbackSettings)

    def __post_init__(self) -> None:
        if self.skip_verify and not self.is_development:
            raise ConfigurationError(
                "VAULT_SKIP_VERIFY is refused unless APP_ENV=development: set VAULT_CACERT instead"
            )
        if bool(self.client_cert) != bool(self.client_key):
            raise ConfigurationError("VAULT_CLIENT_CERT and VAULT_CLIENT_KEY go together")
        if not self.addresses:
            raise ConfigurationError("VAULT_ADDR names no address")
        if self.auth_method not in AUTH_METHODS:
            raise ConfigurationError(
                f"VAULT_AUTH_METHOD must be approle or kubernetes, got {self.auth_method!r}"
            )
        if self.db_mode not in ("static", "dynamic"):
            raise ConfigurationError(
                f"VAULT_DB_MODE must be static or dynamic, got {self.db_mode!r}"
            )

    @property
    def is_development(self) -> bool:
        """True only for an explicit APP_ENV=development: the one mode with public defaults.

        Any other value (production, local, a typo) forbids them, so a key that is in the
        repository can never be served by accident.
        """
        return self.app_env == "development"

    @property
    def has_approle(self) -> bool:
        """True when AppRole credentials are configured at all."""
        return bool(self.role_id and (self.secret_id or self.secret_id_file))

    @property
    def has_credentials(self) -> bool:
        """True when the chosen auth method can try a login (the token file is read then)."""
        return self.auth_method == "kubernetes" or self.has_approle

    @property
    def verify(self) -> bool | str:
        """The `verify` argument of requests: a CA bundle path, True, or False (dev only)."""
        if self.skip_verify:
            return False
        return self.cacert or True

    @property
    def cert(self) -> tuple[str, str] | None:
        """The client certificate pair for mutual TLS, if any."""
        if self.client_cert and self.client_key:
            return (self.client_cert, self.client_key)
        return None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> VaultSettings:
        """Read the VAULT_* variables, APP_ENV and the fallback variables."""
        env = os.environ if env is None else env
        addr = env.get("VAULT_ADDR", "") or "http://127.0.0.1:8200"
        max_staleness = _float(env, "VAULT_MAX_STALENESS", 0.0)
        return cls(
            addresses=tuple(a.strip().rstrip("/") for a in addr.split(",") if a.strip()),
            role_id=_optional(env, "VAULT_ROLE_ID"),
            secret_id=_optional(env, "VAULT_SECRET_ID"),
            secret_id_file=_optional(env, "VAULT_SECRET_ID_FILE"),
            role_name=env.get("VAULT_APPROLE_ROLE_NAME", "") or "flask-app",
            approle_mount=env.get("VAULT_APPROLE_MOUNT", "") or "approle",
            auth_method=(env.get("VAULT_AUTH_METHOD", "") or "approle").strip().lower(),
            kubernetes_role=env.get("VAULT_KUBERNETES_ROLE", "") or "flask-app",
            kubernetes_mount=env.get("VAULT_KUBERNETES_MOUNT", "") or "kubernetes",
            kubernetes_token_file=env.get("VAULT_KUBERNETES_TOKEN_FILE", "")
            or SERVICE_ACCOUNT_TOKEN_FILE,
            kv_mount=env.get("VAULT_KV_MOUNT", "") or "secret",
            cache_ttl=_float(env, "VAULT_CACHE_TTL", 300.0),
            max_staleness=max_staleness or None,
            connect_timeout=_float(env, "VAULT_CONNECT_TIMEOUT", 2.0),
            read_timeout=_float(env, "VAULT_READ_TIMEOUT", 5.0),
            read_retries=int(_float(env, "VAULT_READ_RETRIES", 2)),
            backoff_initial=_float(env, "VAULT_BACKOFF_INITIAL", 1.0),
            backoff_max=_float(env, "VAULT_BACKOFF_MAX", 60.0),
            cacert=_optional(env, "VAULT_CACERT"),
            client_cert=_optional(env, "VAULT_CLIENT_CERT"),
            client_key=_optional(env, "VAULT_CLIENT_KEY"),
            skip_verify=env.get("VAULT_SKIP_VERIFY", "").strip().lower() in TRUE_WORDS,
            app_env=(env.get("APP_ENV", "") or "production").strip().lower(),
            db_mode=(env.get("VAULT_DB_MODE", "") or "static").strip().lower(),
            fallback=FallbackSettings.from_env(env),
        )
