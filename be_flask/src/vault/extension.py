"""Vault as an ordinary Flask extension: the client lives in app.extensions["vault"]."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Flask, current_app

if TYPE_CHECKING:
    from .client import VaultClient


class Vault:
    """`vault.init_app(app)` in the factory; app.config["VAULT_CLIENT"] overrides (tests)."""

    def __init__(self, app: Flask | None = None, client: VaultClient | None = None) -> None:
        self._client = client
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register the client (given, configured, or the process-wide one) with the app."""
        from .process import get_vault_client

        client = app.config.get("VAULT_CLIENT") or self._client or get_vault_client()
        app.extensions["vault"] = client

    @property
    def client(self) -> VaultClient:
        """The client of the current app."""
        client: VaultClient = current_app.extensions["vault"]
        return client
