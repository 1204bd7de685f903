"""Rotation under load: dynamic database logins and JWT key rotation, zero failed requests."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from flask import Flask

from tests.be_flask.test_database_dynamic import dynamic_app
from tests.be_flask.test_gunicorn import session_for
from tests.be_flask.test_jwt_key_rotation import newest_version, rotate
from tests.harness.app import Gunicorn, gunicorn_env, read_secret
from tests.harness.dynamic_db import DynamicSite
from tests.harness.load import start_threads

THREADS = 4
SECONDS = 60


def refresh_everywhere(server: Gunicorn, admin: requests.Session) -> None:
    csrf = {"X-CSRF-TOKEN": admin.cookies["csrf_access_token"]}
    response = admin.post(f"{server.url}/api/admin/vault/refresh", headers=csrf, timeout=10)
    assert response.status_code == 200, response.text


@pytest.fixture
def backend(dynamic: DynamicSite, start_gunicorn: Any) -> Iterator[Gunicorn]:
    env = gunicorn_env(
        dynamic.server,
        VAULT_DB_MODE="dynamic",
        RATELIMIT_ENABLED="false",
        REDIS_URL="",
        VAULT_READ_TIMEOUT="2",
    )
    server = start_gunicorn(env, workers=2, name="rotation")
    yield server
    server.stop()  # its leases end with their TTL; the next tests share this Vault


def hammer(
    server: Gunicorn, password: str, stop: threading.Event, results: list[tuple[int, float]]
) -> None:
    """Authenticated requests back to back; refresh the session every 25th request."""
    session = session_for(server, "user", password)
    for number in range(100_000):
        if stop.is_set():
            return
        started = time.monotonic()
        try:
            if number % 25 == 24:
                csrf = {"X-CSRF-TOKEN": session.cookies["csrf_refresh_token"]}
                status = session.post(
                    f"{server.url}/api/auth/refresh", headers=csrf, timeout=10
                ).status_code
            else:
                status = session.get(f"{server.url}/api/auth/me", timeout=10).status_code
        except requests.RequestException:
            status = 0
        results.append((status, time.monotonic() - started))


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_zero_failed_requests_while_everything_rotates(
    backend: Gunicorn, dynamic: DynamicSite
) -> None:
    passwords = read_secret(dynamic.server, "app/flask")
    admin = session_for(backend, "admin", passwords["admin_password"])
    original = newest_version(dynamic.server)
    audit_start = len(dynamic.server.audit_entries())
    stop = threading.Event()
    results: list[tuple[int, float]] = []
    threads = start_threads(THREADS, hammer, backend, passwords["user_password"], stop, results)
    try:
        for step in (["rotate"], ["rotate"], ["--rollback", str(original)]):
            time.sleep(SECONDS / 4)
            rotate(dynamic.server, *([] if step == ["rotate"] else step))
            refresh_everywhere(backend, admin)
        time.sleep(SECONDS / 4)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    failed = [status for status, _ in results if status != 200]
    assert len(results) > 100 and failed == []
    assert newest_version(dynamic.server) == original + 3

    paths = [
        entry["request"]["path"]
        for entry in dynamic.server.audit_entries()[audit_start:]
        if entry["type"] == "response" and not entry.get("error")
    ]
    assert paths.count("database/creds/flask-app") >= 2  # leases created
    assert any(p.startswith("sys/leases/renew/database/creds/flask-app/") for p in paths)
    assert any(p.startswith("sys/leases/revoke/database/creds/flask-app/") for p in paths)
    time.sleep(2)  # Vault revokes an expired lease within moments of its end
    now = datetime.now(UTC)
    expired = [name for name, until in dynamic.login_roles() if until is not None and until < now]
    assert expired == []


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_vault_stopped_longer_than_a_lease(dynamic: DynamicSite, app_log_dir: Any) -> None:
    """Works on the lease while it lasts, then /api/ready 503 with why; recovers on SIGCONT."""
    from src.extensions import db

    app: Flask = dynamic_app(dynamic, app_log_dir)
    client = app.test_client()
    try:
        assert client.get("/api/ready").status_code == 200
        lease = app.extensions["vault"].database.current()
        dynamic.server.kill(signal.SIGSTOP)
        try:
            # The app fails closed 1 s before the lease's end, and a renewal attempt against
            # the frozen Vault costs its 1 s read timeout: so working until 3 s before the end.
            ends = lease.expires_at
            while time.monotonic() < ends - 3:
                assert client.get("/api/ready").status_code == 200
                time.sleep(0.2)
            deadline = time.monotonic() + 10
            while (response := client.get("/api/ready")).status_code == 200:
                assert time.monotonic() < deadline, "still ready long after the lease ended"
                time.sleep(0.2)
            assert response.status_code == 503
            assert "lease ended" in response.json["reason"]
        finally:
            dynamic.server.kill(signal.SIGCONT)
        deadline = time.monotonic() + 15
        while client.get("/api/ready").status_code != 200:
            assert time.monotonic() < deadline, "did not recover after Vault came back"
            time.sleep(0.3)
    finally:
        db.dispose(app)
