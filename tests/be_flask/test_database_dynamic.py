"""VAULT_DB_MODE=dynamic: short-lived PostgreSQL logins from Vault, renewed and swapped."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from flask import Flask

from tests.harness.app import login, read_secret
from tests.harness.dynamic_db import ADMIN_ROLE, DynamicSite


def dynamic_app(site: DynamicSite, log_dir: Any, **settings: Any) -> Flask:
    from src.be import create_app
    from src.vault_client import VaultClient, VaultSettings

    client = VaultClient(
        VaultSettings(
            addresses=(site.server.addr,),
            role_id=site.server.role_id,
            secret_id=site.server.secret_id,
            backoff_initial=0.2,
            backoff_max=1.0,
            read_timeout=1.0,
            read_retries=0,
            db_mode="dynamic",
        )
    )
    defaults = {
        "VAULT_CLIENT": client,
        "LOG_FILE": str(log_dir / "in-process.log"),
        "RATELIMIT_ENABLED": False,
        "REDIS_URL": "",
        "TESTING": True,
    }
    return create_app({**defaults, **settings})


@pytest.fixture
def app_dynamic(dynamic: DynamicSite, app_log_dir: Any) -> Iterator[Flask]:
    from src.extensions import db

    app = dynamic_app(dynamic, app_log_dir)
    yield app
    db.dispose(app)


def test_admin_password_is_rotated_by_vault(dynamic: DynamicSite) -> None:
    """After rotate-root the password init-vault.sh was given logs in no more."""
    given = dynamic.server.init_result
    assert given is not None and "root password rotated" in given.stdout
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            dynamic.postgres.dsn(ADMIN_ROLE, "x", dynamic.database), connect_timeout=5
        ).close()


def test_the_app_runs_on_short_lived_logins(app_dynamic: Flask, dynamic: DynamicSite) -> None:
    client = app_dynamic.test_client()
    assert client.get("/api/ready").status_code == 200
    passwords = read_secret(dynamic.server, "app/flask")
    assert login(client, "user", passwords["user_password"]).status_code == 200
    assert client.get("/api/auth/me").status_code == 200
    lease = app_dynamic.extensions["vault"].database.lease
    assert lease.username.startswith("v-")
    with dynamic.postgres.admin_connect(dynamic.database) as connection:
        owners = connection.execute(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
        groups = connection.execute(
            "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
            "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s",
            (lease.username,),
        ).fetchall()
    assert owners == [("flask_owner",)]  # never a short-lived login
    assert groups == [("flask_app",)]


# 0: every request first reads the cache generation (src/cache_sync.py), which meets the
# refusal first; 60: only the first does, the route's own query meets it.
@pytest.mark.parametrize("check_seconds", [0.0, 60.0], ids=["cache-check-first", "route-first"])
def test_revoked_token_and_its_lease_recover_without_a_500(
    dynamic: DynamicSite, app_log_dir: Any, check_seconds: float
) -> None:
    """Revoking the app's token from outside revokes its database lease (a child lease):
    PostgreSQL then refuses the login role. Requests may answer 503 meanwhile, never 500,
    and the app logs in again, fetches new credentials and serves within seconds."""
    from src.extensions import db

    app = dynamic_app(dynamic, app_log_dir, CACHE_GENERATION_CHECK_SECONDS=check_seconds)
    password = read_secret(dynamic.server, "app/flask")["user_password"]
    credentials = app.extensions["vault"].database
    try:
        assert login(app.test_client(), "user", password).status_code == 200
        before = credentials.current()
        dynamic.server.client(dynamic.server.root_token).sys.revoke_prefix("auth/approle/login")
        # The revocation did take the login role away (else nothing below is tested).
        assert before.username not in [name for name, _ in dynamic.login_roles()]
        statuses: list[tuple[int, str]] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and [s for s, _ in statuses[-3:]] != [200] * 3:
            response = login(app.test_client(), "user", password)
            statuses.append((response.status_code, (response.get_json() or {}).get("error", "")))
            time.sleep(0.2)
        after = credentials.current()
        with dynamic.postgres.admin_connect() as admin:
            sessions = admin.execute(
                "SELECT usename, count(*) FROM pg_stat_activity WHERE datname = %s GROUP BY 1",
                (dynamic.database,),
            ).fetchall()
    finally:
        db.dispose(app)
    # Swapped: a new lease (new login role, next generation), and the pool logged in with it.
    assert after.username != before.username and after.generation > before.generation
    assert after.lease_id != before.lease_id
    assert before.username not in dict(sessions) and after.username in dict(sessions), sessions
    assert all(status != 500 for status, _ in statuses), statuses
    assert all(reason for status, reason in statuses if status == 503), statuses
    assert [s for s, _ in statuses[-3:]] == [200] * 3, statuses
