"""No log line carries a secret value: the careless leaks, and the app's own handler.

Every backend log of the session is scanned once more when the session ends (app_log_dir's
teardown in tests/harness/app.py). The logs scanned here are written by the app's own
handler only (in-process.log, gunicorn's output): the harness's session-wide copy redacts a
copy of each record, never the record the app's handler sees, so these files are only as
clean as the app's own filter makes them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from tests.harness.app import (
    BACKEND,
    SECRETS_SEEN,
    Gunicorn,
    check_no_secret_in_logs,
    gunicorn_env,
    login,
    secret_lines,
)


def test_no_secret_value_in_any_backend_log(
    make_app: Callable[..., Flask],
    start_gunicorn: Callable[..., Gunicorn],
    backend_openbao: Any,
    app_log_dir: Path,
    vault_secrets: dict[str, str],
) -> None:
    """The careless-but-common leak: a user types a password into the username field, and
    the failed login is logged with that "username". In-process and under gunicorn."""
    password = vault_secrets["admin_password"]
    app = make_app()
    assert login(app.test_client(), password, "not-it").status_code == 401
    assert login(app.test_client(), "admin", password).status_code == 200
    server = start_gunicorn(
        gunicorn_env(backend_openbao, RATELIMIT_ENABLED="false"), workers=1, name="redaction"
    )
    for username, typed in ((password, "x"), ("admin", password)):
        body = {"username": username, "password": typed}
        requests.post(f"{server.url}/api/auth/login", json=body, timeout=10)
    server.stop()  # flushed and closed before it is read

    app_written = {app_log_dir / "in-process.log", server.log}
    logs = {path: path.read_text(encoding="utf-8", errors="replace") for path in app_written}
    secrets = SECRETS_SEEN | {v for v in vault_secrets.values() if len(v) >= 8}
    assert len(secrets) >= 3
    assert secret_lines(logs, secrets) == []
    # The failed logins were logged (redacted): the scan looks at lines that would carry it.
    for path in app_written:
        failed = [json.loads(line) for line in logs[path].splitlines() if '"login failed"' in line]
        assert any(entry.get("user") == "[REDACTED]" for entry in failed), path.name


# The app's handler alone, in a fresh interpreter: no harness handler, no pytest capture.
ONLY_THE_APPS_HANDLER = """
import logging, sys
from src.logging_setup import configure_logging, secrets_registry
configure_logging("INFO", sys.argv[1])
assert len(logging.getLogger().handlers) == 1, logging.getLogger().handlers
secret = sys.argv[2]
secrets_registry.remember([secret])
log = logging.getLogger("src.anything")
log.info("in the message %s", secret)
log.warning("in an extra field", extra={"user": secret})
try:
    raise ValueError(f"in an exception {secret}")
except ValueError:
    log.exception("failed")
log.info("a pattern the registry does not know: password=hunter2hunter2")
"""


def test_the_apps_own_handler_redacts_without_the_harness(tmp_path: Path) -> None:
    log_file = tmp_path / "app.log"
    secret = "only-the-app-knows-this-9f3c2a"
    done = subprocess.run(
        [sys.executable, "-c", ONLY_THE_APPS_HANDLER, str(log_file), secret],
        cwd=BACKEND,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(BACKEND)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = log_file.read_text().splitlines()
    assert len(lines) == 4, lines
    text = "\n".join(lines)
    assert secret not in text and "hunter2" not in text
    assert json.loads(lines[1])["user"] == "[REDACTED]"
    assert "[REDACTED]" in json.loads(lines[2])["exception"]


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


def test_the_session_end_check_fails_on_a_logged_secret(tmp_path: Path) -> None:
    """The end-of-session scan can fail: a secret in any file under the directory."""
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "server.log").write_text('{"msg": "ok"}\n{"msg": "s3cret-value-42"}\n')
    with pytest.raises(pytest.fail.Exception, match=r"server.log: line 2"):
        check_no_secret_in_logs(tmp_path, {"s3cret-value-42"})
    check_no_secret_in_logs(tmp_path, {"another-secret-value"})
