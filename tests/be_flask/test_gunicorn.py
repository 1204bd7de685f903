"""The backend under gunicorn: workers starting together, limits and refresh across processes."""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from tests.harness.app import (
    BACKEND,
    Gunicorn,
    gunicorn_env,
    put_secret,
    read_secret,
    remember_secrets,
)
from tests.harness.openbao import running_openbao

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


class Site:
    """An OpenBao of its own whose secret/database/postgres names an empty database."""

    def __init__(self, server: Any, dsn: str) -> None:
        self.server = server
        self.dsn = dsn
        self.passwords = read_secret(server, "app/flask")


@pytest.fixture(scope="module")
def site(postgres: Any) -> Iterator[Site]:
    with running_openbao() as server:
        database, username, password = postgres.create_app_database("gunicorn")
        location = {"host": postgres.host, "port": str(postgres.port), "database": database}
        put_secret(
            server, "database/postgres", {**location, "username": username, "password": password}
        )
        yield Site(server, postgres.dsn(username, password, database))


@pytest.fixture(scope="module")
def four_workers(site: Site, start_gunicorn: Callable[..., Gunicorn]) -> Gunicorn:
    """Four workers started at once on the empty database."""
    # Limits off: these tests send more failed logins than one worker's budget.
    env = gunicorn_env(site.server, RATELIMIT_ENABLED="false")
    return start_gunicorn(env, workers=4, name="four-workers")


def json_lines(log: Path) -> list[dict[str, Any]]:
    """The app's JSON log lines (a last line still being written is left out)."""
    entries = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                entries.append(json.loads(line))
    return entries


def prepared_workers(log: Path) -> set[int]:
    return {e["pid"] for e in json_lines(log) if e["message"] == "preparing database: ok"}


def session_for(server: Gunicorn, username: str, password: str) -> requests.Session:
    session = requests.Session()
    response = session.post(
        f"{server.url}/api/auth/login",
        json={"username": username, "password": password},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return session


def test_four_workers_on_an_empty_database(four_workers: Gunicorn, site: Site) -> None:
    # Wait (bounded) for every worker to finish booting, not only the first one to answer.
    deadline = time.monotonic() + 60
    while len(prepared_workers(four_workers.log)) < 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(prepared_workers(four_workers.log)) == 4
    entries = json_lines(four_workers.log)
    upgrades = [e for e in entries if e["message"].startswith("Running upgrade")]
    assert len({e["pid"] for e in upgrades}) == 1, "more than one worker ran the migrations"
    migrations = BACKEND / "migrations" / "versions"
    assert len(upgrades) == len(list(migrations.glob("0*.py")))  # each one once
    assert not [e for e in entries if e["level"] in ("ERROR", "CRITICAL")]
    assert "Traceback" not in four_workers.log.read_text(errors="replace")
    assert "[ERROR]" not in four_workers.log.read_text(errors="replace")
    with psycopg.connect(site.dsn) as connection:
        users = connection.execute("SELECT username, role FROM users ORDER BY id").fetchall()
        versions = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    assert sorted(users) == [("admin", "admin"), ("user", "user")]
    newest = max(path.name[:4] for path in migrations.glob("0*.py"))
    assert versions == [(newest,)]
    session_for(four_workers, "admin", site.passwords["admin_password"])


def worker_generations(server: Gunicorn, admin: requests.Session) -> dict[int, int | None]:
    """Ask /api/admin/vault/status on new connections until all four workers answered."""
    seen: dict[int, int | None] = {}
    for _ in range(200):
        status = requests.get(
            f"{server.url}/api/admin/vault/status", cookies=admin.cookies, timeout=10
        ).json()
        seen[status["pid"]] = status["cache_generation"]
        if len(seen) == 4:
            break
    return seen


def test_refresh_reaches_every_worker(four_workers: Gunicorn, site: Site) -> None:
    admin = session_for(four_workers, "admin", site.passwords["admin_password"])
    user = session_for(four_workers, "user", site.passwords["user_password"])
    assert requests.get(f"{four_workers.url}/api/auth/me", cookies=user.cookies, timeout=10).ok
    # Every worker must hold the current key in its cache before it changes in Vault.
    assert len(worker_generations(four_workers, admin)) == 4
    original = read_secret(site.server, "app/flask")
    put_secret(site.server, "app/flask", {**original, "jwt_secret": secrets.token_urlsafe(40)})
    try:
        csrf = {"X-CSRF-TOKEN": admin.cookies["csrf_access_token"]}
        refreshed = admin.post(
            f"{four_workers.url}/api/admin/vault/refresh", headers=csrf, timeout=10
        )
        assert refreshed.status_code == 200
        generation = refreshed.json()["generation"]
        time.sleep(1.5)  # each worker compares the generation at most once a second
        # Sessions survive the rotation: the previous version still verifies on every worker.
        answers = {
            requests.get(
                f"{four_workers.url}/api/auth/me", cookies=user.cookies, timeout=10
            ).status_code
            for _ in range(24)
        }
        assert answers == {200}
        fresh = session_for(four_workers, "admin", site.passwords["admin_password"])
        seen = worker_generations(four_workers, fresh)
        assert len(seen) == 4
        assert set(seen.values()) == {generation}
    finally:
        put_secret(site.server, "app/flask", original)


def test_metrics_count_every_worker(four_workers: Gunicorn, site: Site) -> None:
    """Failed logins spread over the workers all show in /metrics, whichever worker answers."""

    def failed_logins() -> float:
        text = requests.get(f"{four_workers.url}/metrics", timeout=10).text
        lines = [line for line in text.splitlines() if line.startswith("logins_total{")]
        return sum(float(line.split()[-1]) for line in lines if 'result="failed"' in line)

    before = failed_logins()
    for i in range(8):
        body = {"username": f"nobody-{i}", "password": "wrong password"}
        requests.post(f"{four_workers.url}/api/auth/login", json=body, timeout=10)
    counts = {failed_logins() - before for _ in range(6)}
    assert counts == {8.0}


def test_rate_limit_holds_across_worker_processes(
    site: Site, start_gunicorn: Callable[..., Gunicorn]
) -> None:
    """Two one-worker servers sharing Redis: attempts alternate between the two processes."""
    env = gunicorn_env(
        site.server,
        REDIS_URL="redis://127.0.0.1:6379/0",
        REDIS_AUTH="none",  # the system Redis has no password
        RATELIMIT_KEY_PREFIX=f"gunicorn-{secrets.token_hex(4)}",
    )
    first = start_gunicorn(env, workers=1, name="limit-a")
    second = start_gunicorn(env, workers=1, name="limit-b")
    body = {"username": "admin", "password": "not the password"}
    statuses = [
        requests.post(f"{server.url}/api/auth/login", json=body, timeout=10).status_code
        for server in (first, second, first, second, first, second)
    ]
    assert statuses == [401] * 5 + [429]
    right = {"username": "admin", "password": site.passwords["admin_password"]}
    response = requests.post(f"{first.url}/api/auth/login", json=right, timeout=10)
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    assert response.json()["status"] == 429


def test_production_refuses_insecure_cookies(site: Site, app_log_dir: Path) -> None:
    """APP_ENV=production with JWT_COOKIE_SECURE=false: the workers refuse to boot, loudly."""
    env = gunicorn_env(site.server, APP_ENV="production", GUNICORN_BIND="127.0.0.1:0")
    argv = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "src.be:create_app()"]
    result = subprocess.run(argv, cwd=BACKEND, env=env, capture_output=True, text=True, timeout=60)
    (app_log_dir / "production-insecure.log").write_text(result.stdout + result.stderr)
    assert result.returncode != 0
    assert "JWT_COOKIE_SECURE=false is refused when APP_ENV=production" in result.stderr


def test_blank_settings_in_env_file_mean_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """.env.example says a blank value means the default; gunicorn.conf.py must agree."""
    import runpy

    for name in ("GUNICORN_BIND", "GUNICORN_WORKERS", "GUNICORN_THREADS", "FORWARDED_ALLOW_IPS"):
        monkeypatch.setenv(name, "")
    conf = runpy.run_path(str(BACKEND / "gunicorn.conf.py"))
    assert (conf["bind"], conf["workers"], conf["threads"]) == ("0.0.0.0:8000", 2, 4)
    assert conf["forwarded_allow_ips"] == "127.0.0.1"


def test_a_wrapped_secret_id_is_unwrapped_once_for_every_worker(
    site: Site, start_gunicorn: Callable[..., Gunicorn], tmp_path: Path
) -> None:
    """A wrapping token is single-use: workers unwrapping it each would trip the tamper alert."""
    root = site.server.client(site.server.root_token)
    wrapped = root.write_data("auth/approle/role/flask-app/secret-id", wrap_ttl="120s")
    token = wrapped["wrap_info"]["token"]
    remember_secrets(token)
    secret_file = tmp_path / "secret_id"
    secret_file.write_text(token + "\n")
    env = gunicorn_env(site.server, VAULT_SECRET_ID_FILE=str(secret_file))
    env.pop("VAULT_SECRET_ID")
    server = start_gunicorn(env, workers=2, name="wrapped")
    deadline = time.monotonic() + 30
    while len(enabled_workers(server.log)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    log = server.log.read_text(errors="replace")
    assert "ALERT" not in log and "tampering" not in log
    assert len(enabled_workers(server.log)) == 2, "a worker could not log in"


def enabled_workers(log: Path) -> set[int]:
    """Pids of the workers that logged their first secret read from Vault."""
    return {
        int(entry["pid"])
        for entry in json_lines(log)
        if entry["message"].startswith("Vault integration enabled")
    }
