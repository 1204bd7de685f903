"""The process-wide VaultClient: created lazily, dropped in a forked child so it makes its own."""

from __future__ import annotations

import os
import threading

from .client import VaultClient

_client: VaultClient | None = None
_client_pid: int | None = None
_lock = threading.Lock()


def get_vault_client() -> VaultClient:
    """This process's client, created from the environment on first use."""
    global _client, _client_pid
    client = _client
    if client is not None and _client_pid == os.getpid():
        return client
    with _lock:
        if _client is None or _client_pid != os.getpid():
            _client, _client_pid = VaultClient.from_env(), os.getpid()
        return _client


def reset_vault_client() -> None:
    """Forget the process-wide client (after fork, or in tests)."""
    global _client, _client_pid, _lock
    _client, _client_pid = None, None
    _lock = threading.Lock()  # a lock held by a parent's thread stays held in the child


os.register_at_fork(after_in_child=reset_vault_client)
