"""What every harness shares: free ports, waiting for a port, skipping when a server is missing."""

from __future__ import annotations

import os
import socket
import time

import pytest


def missing_server(reason: str) -> None:
    """Skip a test whose server is not on this machine; under CI a missing server is a failure."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"required server missing under CI: {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")
