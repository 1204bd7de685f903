"""Exceptions the Vault client raises to its callers (never carrying a secret value)."""

from __future__ import annotations


class VaultClientError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigurationError(VaultClientError):
    """The environment is incomplete or unsafe (e.g. production without a needed variable)."""


class VaultUnavailableError(VaultClientError):
    """Vault cannot answer and there is no usable cached or fallback value."""


class SecretIdWrappingError(VaultClientError):
    """A wrapped secret ID failed its creation-path check: possible tampering."""


class SecretNotFoundError(VaultClientError, LookupError):
    """The KV path has no readable current version (never written, deleted or destroyed)."""


class PermissionDeniedError(VaultClientError):
    """Vault refused the read even with a fresh token: the policy does not allow this path."""
