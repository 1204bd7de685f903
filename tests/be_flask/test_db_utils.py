"""Migrations and default users: idempotent, race-safe, never overwriting; PostgreSQL and SQLite."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
from flask import Flask
from sqlalchemy import func, select

from src.extensions import db
from src.migrate import prepare_database
from src.models import User
from tests.harness.app import login


def fresh_database_app(make_app: Callable[..., Flask], postgres: Any) -> tuple[Flask, str]:
    database, user, password = postgres.create_app_database("fresh")
    url = postgres.url(user, password, database)
    return make_app(DATABASE_URL=url, AUTO_MIGRATE=False), postgres.dsn(user, password, database)


def usernames(app: Flask) -> list[str]:
    with db.engine(app).connect() as connection:
        return sorted(connection.scalars(select(User.username)))


def test_default_users_come_from_vault(app: Flask, vault_secrets: dict[str, Any]) -> None:
    client = app.test_client()
    assert login(client, "admin", vault_secrets["admin_password"]).status_code == 200
    assert login(client, "user", vault_secrets["user_password"]).status_code == 200
    assert login(client, "user", vault_secrets["admin_password"]).status_code == 401


def test_concurrent_preparation_creates_each_user_once(
    make_app: Callable[..., Flask], postgres: Any
) -> None:
    app, _ = fresh_database_app(make_app, postgres)
    with ThreadPoolExecutor(max_workers=4) as pool:
        for future in [pool.submit(prepare_database, app) for _ in range(4)]:
            future.result(timeout=60)
    prepare_database(app)  # and once more, later: nothing changes
    assert usernames(app) == ["admin", "user"]
    with db.engine(app).connect() as connection:
        assert connection.scalar(select(func.count()).select_from(User)) == 2


def test_default_users_are_seeded_once_never_overwritten_nor_brought_back(
    make_app: Callable[..., Flask], postgres: Any, vault_secrets: dict[str, Any]
) -> None:
    app, dsn = fresh_database_app(make_app, postgres)
    prepare_database(app)
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("UPDATE users SET password_hash = 'kept' WHERE username = 'admin'")
        connection.execute("DELETE FROM users WHERE username = 'user'")
    # The next worker start (a new app on the same database): an admin deleted `user`.
    restarted = make_app(DATABASE_URL=app.config["DATABASE_URL"])
    prepare_database(restarted)
    with psycopg.connect(dsn) as connection:
        rows = dict(connection.execute("SELECT username, password_hash FROM users").fetchall())
    assert rows == {"admin": "kept"}
    assert login(restarted.test_client(), "user", vault_secrets["user_password"]).status_code == 401


def test_sqlite_works_with_the_same_code(
    make_app: Callable[..., Flask], tmp_path: Path, vault_secrets: dict[str, Any]
) -> None:
    app = make_app(DATABASE_URL=f"sqlite:///{tmp_path / 'app.db'}")
    client = app.test_client()
    assert login(client, "admin", vault_secrets["admin_password"]).status_code == 200
    assert client.get("/api/auth/me").json["user"]["username"] == "admin"
    assert client.get("/api/ready").status_code == 200
    prepare_database(app)
    assert usernames(app) == ["admin", "user"]


def test_argon2_parameters(app: Flask, postgres: Any, app_database: Any) -> None:
    """argon2id with at least 19 MiB, 2 passes, 1 lane (OWASP minimums)."""
    dsn = postgres.dsn(app_database.username, app_database.password, app_database.database)
    with psycopg.connect(dsn) as connection:
        row = connection.execute(
            "SELECT password_hash FROM users WHERE username='admin'"
        ).fetchone()
    assert row is not None
    assert row[0].startswith("$argon2id$v=19$m=19456,t=2,p=1$")


def test_hash_is_upgraded_at_login_when_parameters_change(
    make_app: Callable[..., Flask], postgres: Any, vault_secrets: dict[str, Any]
) -> None:
    app, dsn = fresh_database_app(make_app, postgres)
    prepare_database(app)
    stronger = make_app(DATABASE_URL=app.config["DATABASE_URL"], ARGON2_TIME_COST=3)
    assert (
        login(stronger.test_client(), "admin", vault_secrets["admin_password"]).status_code == 200
    )
    with psycopg.connect(dsn) as connection:
        row = connection.execute(
            "SELECT password_hash FROM users WHERE username='admin'"
        ).fetchone()
    assert row is not None and ",t=3," in row[0]


def test_database_that_appears_later_is_prepared_then(
    make_app: Callable[..., Flask], tmp_path: Path, vault_secrets: dict[str, Any]
) -> None:
    """Start while the database cannot be opened; once it can, the next request prepares it."""
    later = tmp_path / "not-yet"
    app = make_app(DATABASE_URL=f"sqlite:///{later / 'app.db'}", DATABASE_PREPARE_RETRY_SECONDS=0)
    client = app.test_client()
    assert client.get("/api/ready").status_code == 503
    later.mkdir()
    assert login(client, "admin", vault_secrets["admin_password"]).status_code == 200
    assert client.get("/api/ready").status_code == 200
