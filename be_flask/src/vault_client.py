"""The backend's Vault client: import from here (see src/vault/ for the parts).

    from src.vault_client import get_vault_client
    secrets = get_vault_client().get_app_secrets()

Nothing here talks to Vault at import time; the first read logs in.
"""

from __future__ import annotations

from .vault.client import VaultClient
from .vault.errors import (
    ConfigurationError,
    PermissionDeniedError,
    SecretIdWrappingError,
    SecretNotFoundError,
    VaultClientError,
    VaultUnavailableError,
)
from .vault.extension import Vault
from .vault.process import get_vault_client, reset_vault_client
from .vault.settings import VaultSettings

__all__ = [
    "ConfigurationError",
    "PermissionDeniedError",
    "SecretIdWrappingError",
    "SecretNotFoundError",
    "Vault",
    "VaultClient",
    "VaultClientError",
    "VaultSettings",
    "VaultUnavailableError",
    "get_vault_client",
    "reset_vault_client",
]

if __name__ == "__main__":
    import sys

    from .vault.cli import main

    sys.exit(main())
