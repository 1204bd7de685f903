"""Run last among the backend tests: no log line written so far carries a secret value."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness.app import SECRETS_SEEN


def test_no_secret_value_in_any_backend_log(
    app_log_dir: Path, vault_secrets: dict[str, str]
) -> None:
    logs = {
        path: path.read_text(encoding="utf-8", errors="replace") for path in app_log_dir.iterdir()
    }
    if not any(logs.values()):
        pytest.skip("no backend log written in this run (run with the other backend tests)")
    secrets = SECRETS_SEEN | {v for v in vault_secrets.values() if len(v) >= 8}
    assert len(secrets) >= 3
    leaks = [
        f"{path.name}: line {number}"
        for path, text in logs.items()
        for number, line in enumerate(text.splitlines(), 1)
        if any(secret in line for secret in secrets)
    ]
    assert leaks == []


def test_the_redaction_filter_cuts_patterns_and_known_values() -> None:
    """The filter itself, on the shapes a careless log call could produce."""
    import logging

    from src.logging_setup import RedactingFilter, secrets_registry

    secrets_registry.remember(["known-secret-value-123"])
    record = logging.makeLogRecord(
        {
            "msg": "a=%s b=%s c=%s d=%s e=%s",
            "args": (
                "known-secret-value-123",
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
                "hvs." + "CAESIJ" + "1234567890abcdefghijkl",  # split: no token-shaped literal
                "password=hunter2hunter2",
                "postgresql+psycopg://app:pa55w0rd-xyz@db:5432/appdb",
            ),
        }
    )
    RedactingFilter().filter(record)
    text = record.getMessage()
    for leaked in ("known-secret-value-123", "eyJhbGci", "hvs.CAES", "hunter2", "pa55w0rd"):
        assert leaked not in text
    assert "[REDACTED]" in text
