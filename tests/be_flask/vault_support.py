"""Shared pieces of the Vault client tests: building clients for a server, audit counting,
and a guard that fails a test when any log record carries a secret value."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from src.vault_client import VaultClient, VaultSettings
from tests.harness.openbao import OpenBao

# Keys whose values are secret (host, port, database and username are not).
SECRET_KEYS = ("jwt_secret", "admin_password", "user_password", "password")

FAST = {
    "connect_timeout": 1.0,
    "read_timeout": 1.0,
    "read_retries": 0,
    "backoff_initial": 0.5,
    "backoff_max": 2.0,
}


def settings_for(server: OpenBao, **overrides: Any) -> VaultSettings:
    """Settings that log in to `server` with the AppRole credentials init-vault.sh wrote."""
    base = VaultSettings(
        addresses=(server.addr,), role_id=server.role_id, secret_id=server.secret_id
    )
    return replace(base, **overrides)


def audit_paths(server: OpenBao, since: int = 0) -> Counter[str]:
    """How many requests per path reached Vault (audit 'request' lines after line `since`)."""
    entries = server.audit_entries()[since:]
    return Counter(e["request"]["path"] for e in entries if e.get("type") == "request")


class SecretWatch:
    """Values that must never appear in a log record; checked at the end of the test."""

    def __init__(self) -> None:
        self.values: set[str] = set()
        self.clients: list[VaultClient] = []

    def add(self, *values: Any) -> None:
        for value in values:
            if isinstance(value, dict):
                self.add(*value.values())
            elif isinstance(value, str) and len(value) >= 6:
                self.values.add(value)

    def add_server(self, server: OpenBao) -> None:
        self.add(server.root_token, server.operator_token, server.secret_id)
        root = server.client(server.root_token)
        for path in ("app/flask", "database/postgres", "database/bootstrap"):
            try:
                secret = root.secrets.kv.v2.read_secret_version(
                    path=path, mount_point="secret", raise_on_deleted_version=True
                )
            except Exception:  # noqa: S112 - a broken server has nothing more to hide
                continue
            data = secret["data"]["data"]
            self.add(*(data[key] for key in SECRET_KEYS if key in data))

    def client(self, settings: VaultSettings) -> VaultClient:
        """A VaultClient whose token and secret ID are watched too."""
        client = VaultClient(settings)
        self.clients.append(client)
        store = client.tokens._store

        def recording_store(result: Any, **kwargs: Any) -> Any:
            self.add(result.token)  # every token the client ever held
            return store(result, **kwargs)

        client.tokens._store = recording_store  # type: ignore[method-assign]
        self.add(settings.secret_id)
        return client

    def leaks(self, records: list[logging.LogRecord]) -> list[str]:
        for client in self.clients:
            if client.tokens.state is not None:
                self.add(client.tokens.state.token)
        found = []
        for record in records:
            text = record.getMessage() + (record.exc_text or "")
            found += [f"{record.name}: {text}" for v in self.values if v in text]
        return found


@pytest.fixture
def secret_watch(caplog: pytest.LogCaptureFixture) -> Iterator[SecretWatch]:
    """Capture every log record at DEBUG; fail if one carries a watched value."""
    caplog.set_level(logging.DEBUG)
    watch = SecretWatch()
    yield watch
    assert watch.leaks(caplog.records) == []
