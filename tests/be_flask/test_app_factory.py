"""The app factory, health and readiness, and the JSON error contract of /api."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from src.settings import load_settings
from tests.harness.app import BACKEND


def test_import_talks_to_nothing() -> None:
    """Importing the factory with an unreachable Vault and database must not connect anywhere."""
    # Any connection attempt during the import fails the run, even one the code would swallow.
    code = (
        "import os, socket\n"
        "def refuse(*args, **kwargs):\n"
        "    print('connection attempted at import', flush=True)\n"
        "    os._exit(3)\n"
        "socket.socket.connect = socket.socket.connect_ex = refuse\n"
        "import src.be\n"
        "print('imported')"
    )
    # AppRole credentials too: without them the client would never try to connect at all.
    vault = {"VAULT_ADDR": "http://127.0.0.1:9", "VAULT_ROLE_ID": "r", "VAULT_SECRET_ID": "s"}
    env = {**vault, "DATABASE_URL": "postgresql://u:p@127.0.0.1:9/d", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=BACKEND,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "imported"


def test_health(client: FlaskClient) -> None:
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_ready_says_ready_and_not_where_secrets_come_from(client: FlaskClient) -> None:
    response = client.get("/api/ready")
    assert response.status_code == 200
    assert response.json == {"status": "ready", "database": True, "secrets": True}


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("get", "/api/nothing-here", {}, 404),
        ("delete", "/api/health", {}, 405),
        (
            "post",
            "/api/auth/login",
            {"data": "x" * 200_000, "content_type": "application/json"},
            413,
        ),
        ("post", "/api/auth/login", {"data": "username=a", "content_type": "text/plain"}, 415),
        ("post", "/api/auth/login", {"data": "{not json", "content_type": "application/json"}, 400),
    ],
)
def test_errors_are_json(
    client: FlaskClient, method: str, path: str, kwargs: dict[str, Any], status: int
) -> None:
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == status
    assert response.is_json
    assert response.json["status"] == status
    assert response.json["error"]
    assert "Traceback" not in response.get_data(as_text=True)


def test_unexpected_error_is_json_without_traceback(make_app: Any) -> None:
    app: Flask = make_app()

    @app.get("/api/boom")
    def boom() -> None:
        raise RuntimeError("internal detail that must not leak")

    response = app.test_client().get("/api/boom")
    assert response.status_code == 500
    assert response.json == {"error": "internal server error", "status": 500}


def test_insecure_cookies_refused_in_production() -> None:
    with pytest.raises(RuntimeError, match="production"):
        load_settings({"APP_ENV": "production", "JWT_COOKIE_SECURE": "false"})


def test_insecure_cookies_allowed_for_local_development(caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings({"APP_ENV": "development", "JWT_COOKIE_SECURE": "false"})
    assert settings["JWT_COOKIE_SECURE"] is False
    assert "local http development only" in caplog.text


def test_database_down_means_not_ready_but_alive(make_app: Any) -> None:
    """Nothing listens on port 1: health stays 200, ready and database routes answer 503 JSON."""
    app = make_app(DATABASE_URL="postgresql+psycopg://nobody:nothing@127.0.0.1:1/none")
    client = app.test_client()
    assert client.get("/api/health").status_code == 200
    ready = client.get("/api/ready")
    assert ready.status_code == 503
    assert ready.json["status"] == "not ready"
    assert ready.json["database"] is False
    assert ready.json["secrets"] is True
    login = client.post("/api/auth/login", json={"username": "admin", "password": "whatever"})
    assert login.status_code == 503
    assert login.json == {"error": "database unavailable, try again shortly", "status": 503}
    assert login.headers["Retry-After"] == "2"  # "shortly", said the way clients understand


def test_vault_refused_at_start_means_not_ready_but_alive(make_app: Any) -> None:
    """Production rules, Vault refusing connections, the database only known from Vault: the
    app starts (no crash in create_app) and says it is not ready, and why, until Vault is back."""
    from src.vault_client import VaultClient, VaultSettings

    settings = VaultSettings(
        addresses=("http://127.0.0.1:1",), role_id="r", secret_id="s", backoff_max=1.0
    )
    app = make_app(vault=VaultClient(settings), APP_ENV="production")
    client = app.test_client()
    assert client.get("/api/health").status_code == 200
    ready = client.get("/api/ready")
    # /api/ready's own checks ran and say why (not an error handler answering before them).
    assert ready.status_code == 503
    assert ready.json["status"] == "not ready"
    assert (ready.json["database"], ready.json["secrets"]) == (False, False)
    assert "secrets unavailable" in ready.json["reason"]


def test_alembic_cli_uses_the_app_engine(tmp_path: Any) -> None:
    """`alembic -c migrations/alembic.ini upgrade head` in be_flask/ migrates the app database."""
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "LOG_FILE": str(tmp_path / "cli.log"),
    }
    argv = [sys.executable, "-m", "alembic", "-c", "migrations/alembic.ini"]
    for command in (["upgrade", "head"], ["current"]):
        result = subprocess.run(
            [*argv, *command], cwd=BACKEND, env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
    newest = max(path.name[:4] for path in (BACKEND / "migrations" / "versions").glob("0*.py"))
    assert f"{newest} (head)" in result.stdout


def test_one_json_line_per_request_and_security_events(
    make_app: Any, vault_secrets: dict[str, Any], app_log_dir: Any
) -> None:
    app: Flask = make_app()  # (re)installs the JSON handler on the session's log file
    client = app.test_client()
    client.post(
        "/api/auth/login", json={"username": "user", "password": vault_secrets["user_password"]}
    )
    client.get("/api/auth/me")
    app.test_client().post("/api/auth/login", json={"username": "log-probe", "password": "wrong"})
    lines = (app_log_dir / "in-process.log").read_text(encoding="utf-8").splitlines()
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    me = [e for e in entries if e["logger"] == "requests" and e["path"] == "/api/auth/me"][-1]
    assert me["method"] == "GET" and me["status"] == 200 and me["user"] == "user"
    assert me["address"] == "127.0.0.1" and me["duration_ms"] >= 0
    failed = [e for e in entries if e.get("event") == "login failed"][-1]
    assert failed["user"] == "log-probe" and failed["address"] == "127.0.0.1"
    assert failed["logger"] == "security" and failed["level"] == "WARNING"
