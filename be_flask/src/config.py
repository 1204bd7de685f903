"""Flask configuration whose secrets are read through the Vault client at each access."""

from __future__ import annotations

from .vault_client import VaultClient, get_vault_client


class Config:
    """SECRET_KEY, JWT_SECRET_KEY and SQLALCHEMY_DATABASE_URI come from Vault (cached)."""

    def __init__(self, vault_client: VaultClient | None = None) -> None:
        self.vault_client = vault_client if vault_client is not None else get_vault_client()

    @property
    def APP_ENV(self) -> str:
        # The client's reading of APP_ENV, so both agree on what "production" is.
        return self.vault_client.settings.app_env

    @property
    def SECRET_KEY(self) -> str:
        return str(self.vault_client.get_app_secrets()["jwt_secret"])

    @property
    def JWT_SECRET_KEY(self) -> str:
        return str(self.vault_client.get_app_secrets()["jwt_secret"])

    @property
    def SQLALCHEMY_DATABASE_URI(self) -> str:
        return str(self.vault_client.get_database_config()["url"])


def get_config(vault_client: VaultClient | None = None) -> Config:
    """The configuration, bound to the given client or the process-wide one."""
    return Config(vault_client)
