"""Backend fixtures: app (real OpenBao + PostgreSQL), client, logged_in_client, admin_client.

Every app writes its JSON log lines into one session directory (`app_log_dir`); when the
session ends, its teardown fails the run if any line there carries a secret value a test saw
(SECRETS_SEEN): no secret value from Vault was ever logged, whatever order the tests ran in.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from tests.harness.openbao import running_openbao
from tests.harness.servers import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]
BACKEND = REPO / "be_flask"


@dataclass
class AppDatabase:
    """The app's own role and database, as written to secret/database/postgres."""

    host: str
    port: int
    database: str
    username: str
    password: str
    url: str


@dataclass
class Gunicorn:
    """A gunicorn serving the backend on a loopback port; its output is in `log`."""

    port: int
    log: Path
    proc: subprocess.Popen[bytes]
    env: dict[str, str] = field(repr=False, default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


# Every secret value the tests saw or wrote: none of them may ever appear in a log.
SECRETS_SEEN: set[str] = set()


def remember_secrets(*values: Any) -> None:
    SECRETS_SEEN.update(str(v) for v in values if v and len(str(v)) >= 8)


def secret_lines(logs: dict[Path, str], secrets: set[str]) -> list[str]:
    """`file: line N` for each log line that carries one of the secret values."""
    return [
        f"{path.name}: line {number}"
        for path, text in logs.items()
        for number, line in enumerate(text.splitlines(), 1)
        if any(secret in line for secret in secrets)
    ]


def check_no_secret_in_logs(directory: Path, secrets: set[str]) -> None:
    """Fail when any file under directory has a line with a secret value."""
    logs = {
        path: path.read_text(encoding="utf-8", errors="replace")
        for path in directory.rglob("*")
        if path.is_file()
    }
    leaked = secret_lines(logs, secrets)
    if leaked:
        pytest.fail(
            f"a secret value is in the backend logs: {', '.join(leaked[:20])}", pytrace=False
        )


def put_secret(openbao: Any, path: str, data: dict[str, Any]) -> None:
    """Write a KV v2 secret with the root token (what an operator does)."""
    remember_secrets(data.get("password"), data.get("jwt_secret"))
    remember_secrets(data.get("admin_password"), data.get("user_password"))
    openbao.client(openbao.root_token).secrets.kv.v2.create_or_update_secret(
        path=path, secret=data, mount_point="secret"
    )


def publish_database(openbao: Any, postgres: Any, name: str) -> tuple[str, str, str]:
    """A fresh database and login role on `postgres`, published at secret/database/postgres."""
    database, username, password = postgres.create_app_database(name)
    put_secret(
        openbao,
        "database/postgres",
        {
            "host": postgres.host,
            "port": str(postgres.port),
            "database": database,
            "username": username,
            "password": password,
        },
    )
    return database, username, password


def read_secret(openbao: Any, path: str) -> dict[str, Any]:
    response = openbao.client(openbao.root_token).secrets.kv.v2.read_secret_version(
        path=path, mount_point="secret", raise_on_deleted_version=True
    )
    data = dict(response["data"]["data"])
    remember_secrets(
        *(v for k, v in data.items() if k not in ("host", "port", "database", "username"))
    )
    remember_secrets(openbao.root_token, openbao.operator_token, openbao.secret_id)
    return data


class _RedactedCopyHandler(logging.FileHandler):
    """Redacts a copy of each record: the filter rewrites records in place, and a harness
    handler that ran first would hide from the app's own handler (and from caplog) whether
    the app redacts at all."""

    def handle(self, record: logging.LogRecord) -> bool:
        return bool(super().handle(copy.copy(record)))


@pytest.fixture(scope="session")
def app_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where every backend log of this session goes (in-process apps and gunicorn).

    Besides each app's own LOG_FILE, one session-long handler copies every in-process record
    (whichever app installed the last handler) into all-in-process.log, as the app would.
    """
    from src.logging_setup import JsonFormatter, RedactingFilter

    directory = tmp_path_factory.mktemp("backend-logs")
    handler = _RedactedCopyHandler(directory / "all-in-process.log")
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)
    yield directory
    logging.getLogger().removeHandler(handler)
    handler.close()
    # The end of the session: every app and gunicorn of it has written and closed its log.
    check_no_secret_in_logs(directory, SECRETS_SEEN)


@pytest.fixture(scope="session")
def backend_openbao() -> Iterator[Any]:
    """The backend's own OpenBao, set up by init-vault.sh like the shared one.

    Not the shared `openbao`: the backend publishes its test database at
    secret/database/postgres and rotates jwt_secret, which the Vault script tests must not see.
    """
    with running_openbao() as server:
        yield server


@pytest.fixture(scope="session")
def app_database(backend_openbao: Any, postgres: Any) -> AppDatabase:
    """A fresh database and role, published in Vault at secret/database/postgres."""
    database, username, password = publish_database(backend_openbao, postgres, "flask")
    remember_secrets(postgres.superuser_password)
    url = postgres.url(username, password, database)
    return AppDatabase(postgres.host, postgres.port, database, username, password, url)


@pytest.fixture(scope="session")
def vault_secrets(backend_openbao: Any) -> dict[str, Any]:
    """secret/app/flask as init-vault.sh wrote it (jwt_secret, admin_password, user_password)."""
    secrets = read_secret(backend_openbao, "app/flask")
    remember_secrets(*secrets.values())
    return secrets


def vault_client_for(openbao: Any, cache_ttl: float = 300.0) -> Any:
    """A real Vault client logging in with the server's AppRole credentials."""
    from src.vault_client import VaultClient, VaultSettings

    settings = VaultSettings(
        addresses=(openbao.addr,),
        role_id=openbao.role_id,
        secret_id=openbao.secret_id,
        cache_ttl=cache_ttl,
        backoff_initial=0.2,
        backoff_max=1.0,
    )
    return VaultClient(settings)


@pytest.fixture(scope="session")
def make_app(
    backend_openbao: Any, app_database: AppDatabase, app_log_dir: Path
) -> Iterator[Callable[..., Flask]]:
    """Build apps on the session's OpenBao and PostgreSQL; settings override the test defaults."""
    from src.be import create_app
    from src.extensions import db

    apps: list[Flask] = []

    def build(vault: Any = None, cache_ttl: float = 300.0, **settings: Any) -> Flask:
        defaults: dict[str, Any] = {
            "VAULT_CLIENT": vault or vault_client_for(backend_openbao, cache_ttl),
            "LOG_FILE": str(app_log_dir / "in-process.log"),
            "RATELIMIT_ENABLED": False,
            "REDIS_URL": "",
            "TESTING": True,
        }
        app = create_app({**defaults, **settings})
        apps.append(app)
        return app

    yield build
    for app in apps:
        db.dispose(app)


@pytest.fixture(scope="session")
def app(make_app: Callable[..., Flask]) -> Flask:
    """The shared app: real Vault client, real PostgreSQL, rate limits off."""
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def login(client: FlaskClient, username: str, password: str) -> Any:
    """POST /api/auth/login and return the response."""
    return client.post("/api/auth/login", json={"username": username, "password": password})


def csrf_headers(client: FlaskClient, refresh: bool = False) -> dict[str, str]:
    """The double-submit header: the CSRF cookie's value echoed back."""
    cookie = client.get_cookie("csrf_refresh_token" if refresh else "csrf_access_token")
    assert cookie is not None, "not logged in: no CSRF cookie"
    return {"X-CSRF-TOKEN": cookie.value}


@pytest.fixture
def logged_in_client(app: Flask, vault_secrets: dict[str, Any]) -> FlaskClient:
    """A client with a session of the default user `user` (role user)."""
    client = app.test_client()
    assert login(client, "user", vault_secrets["user_password"]).status_code == 200
    return client


@pytest.fixture
def admin_client(app: Flask, vault_secrets: dict[str, Any]) -> FlaskClient:
    """A client with a session of the default user `admin` (role admin)."""
    client = app.test_client()
    assert login(client, "admin", vault_secrets["admin_password"]).status_code == 200
    return client


def gunicorn_env(openbao: Any, database_url: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a backend process: how to reach Vault, never a secret value."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "DATABASE_"))}
    env.update(
        VAULT_ADDR=openbao.addr,
        VAULT_ROLE_ID=openbao.role_id,
        VAULT_SECRET_ID=openbao.secret_id,
        # As setup.sh --local runs it: production rules for secrets, plain-HTTP cookies.
        APP_ENV="local",
        JWT_COOKIE_SECURE="false",
        PYTHONPATH=str(BACKEND),
    )
    if database_url:
        env["DATABASE_URL"] = database_url
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def start_gunicorn(app_log_dir: Path) -> Iterator[Callable[..., Gunicorn]]:
    """Start gunicorn with the production config; every one started is stopped at session end."""
    started: list[Gunicorn] = []

    def start(env: dict[str, str], workers: int = 2, name: str = "gunicorn") -> Gunicorn:
        server = launch_gunicorn(env, app_log_dir, name, workers)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def launch_gunicorn(
    env: dict[str, str],
    logdir: Path,
    name: str,
    workers: int = 2,
    target: str = "src.be:create_app()",
) -> Gunicorn:
    """gunicorn with be_flask/gunicorn.conf.py on a free loopback port, returned once ready."""
    port = free_port()
    log = logdir / f"{name}-{port}.log"
    env = {**env, "GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": str(workers)}
    argv = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", target]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=BACKEND, env=env, stdout=out, stderr=out)
    server = Gunicorn(port, log, proc, env)
    try:
        wait_for_port(port, timeout=30)
        wait_until_ready(server)
    except BaseException:
        server.stop()  # a server that never got ready is nobody's to stop later
        raise
    return server


def wait_until_ready(server: Gunicorn, timeout: float = 30.0) -> None:
    """Poll /api/ready until 200 (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.proc.poll() is None, server.log.read_text(errors="replace")[-3000:]
        try:
            if requests.get(f"{server.url}/api/ready", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"backend on {server.url} not ready after {timeout}s")


def random_name(prefix: str = "u") -> str:
    return f"{prefix}{secrets.token_hex(4)}"


def user_table(app: Flask) -> list[dict[str, Any]]:
    """Every row of the users table, every column, by id: to prove a refused request wrote
    nothing (read on a connection of its own, not through a session that may cache). The
    password hash is shown by a digest of it, so that a failure message does not print it."""
    from sqlalchemy import select

    from src.extensions import db
    from src.models import User

    with db.engine(app).connect() as connection:
        rows = connection.execute(select(User).order_by(User.id)).mappings()
        return [
            {**row, "password_hash": hashlib.sha256(row["password_hash"].encode()).hexdigest()[:16]}
            for row in rows
        ]
