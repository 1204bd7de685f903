"""VAULT_DB_MODE=dynamic set up as a user would: roles SQL by psql, then init-vault.sh."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

# CONVERGE_SQL: for the tests of a cluster set up before issue 23 (re-exported).
from orchestration.database import ADMIN_ROLE, ROLES_SQL, roles_script
from orchestration.database import CONVERGE_SQL as CONVERGE_SQL
from tests.harness.app import remember_secrets
from tests.harness.openbao import OpenBao, running_openbao
from tests.harness.postgres import PostgresCluster, find_pg_bin

REPO = Path(__file__).resolve().parents[2]


@dataclass
class DynamicSite:
    """An OpenBao whose database engine hands out logins to a fresh database."""

    server: OpenBao
    postgres: PostgresCluster
    database: str

    def env(self) -> dict[str, str]:
        """Backend environment for dynamic mode (no database password anywhere)."""
        return {"VAULT_DB_MODE": "dynamic"}

    def migrate(self) -> subprocess.CompletedProcess[str]:
        """What setup.sh does before starting the backend: `python -m src.migrate` with a
        flask-migrate login the operator token reads, revoked when it is done."""
        operator = self.server.client(self.server.operator_token)
        answer = operator.read("database/creds/flask-migrate")
        remember_secrets(answer["data"]["password"])
        try:
            return subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "src.migrate",
                    "--host",
                    self.postgres.host,
                    "--port",
                    str(self.postgres.port),
                    "--database",
                    self.database,
                ],
                input=json.dumps(answer),
                cwd=REPO / "be_flask",
                capture_output=True,
                text=True,
                check=True,
                timeout=120,
            )
        finally:
            operator.sys.revoke_lease(answer["lease_id"])

    def login_roles(self) -> list[tuple[str, Any]]:
        """(name, valid until) of every login role Vault created (names start with v-)."""
        with self.postgres.admin_connect() as connection:
            rows = connection.execute(
                "SELECT rolname, rolvaliduntil FROM pg_roles WHERE rolname LIKE 'v-%'"
            ).fetchall()
        return [(str(name), until) for name, until in rows]


def apply_roles_sql(
    postgres: PostgresCluster, database: str, admin_password: str, script: Path = ROLES_SQL
) -> None:
    """A roles script through psql as setup.sh runs it: postgres-dynamic-roles.sql wrapped by
    orchestration.database.roles_script (the admin password on stdin, never argv); any other
    (CONVERGE_SQL) as it is."""
    psql = find_pg_bin()
    binary = str(psql / "psql") if psql and (psql / "psql").exists() else "psql"
    env = {**os.environ, "PGPASSWORD": postgres.superuser_password}
    subprocess.run(
        [
            binary,
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            postgres.host,
            "-p",
            str(postgres.port),
            "-U",
            postgres.superuser,
            "-d",
            database,
            "-v",
            f"admin_role={ADMIN_ROLE}",
            "-v",
            f"database={database}",
        ],
        input=(
            roles_script(admin_password) if script == ROLES_SQL else script.read_text("utf-8")
        ).encode(),
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )


@contextlib.contextmanager
def dynamic_site(
    postgres: PostgresCluster, ttl: str = "10s", max_ttl: str = "30s"
) -> Iterator[DynamicSite]:
    """A fresh database with the roles, and an OpenBao configured for it by init-vault.sh."""
    database = postgres.create_database(f"dyn_{secrets.token_hex(4)}")
    admin_password = secrets.token_urlsafe(24)
    remember_secrets(admin_password, postgres.superuser_password)
    apply_roles_sql(postgres, database, admin_password)
    init_env = {
        "VAULT_DB_MODE": "dynamic",
        "DB_HOST": postgres.host,
        "DB_PORT": str(postgres.port),
        "DB_NAME": database,
        "DB_ADMIN_USER": ADMIN_ROLE,
        "DB_ADMIN_PASSWORD": admin_password,
        "DB_CREDS_TTL": ttl,
        "DB_CREDS_MAX_TTL": max_ttl,
        "DB_SSLMODE": "disable",
    }
    with running_openbao(init_env=init_env) as server:
        create_bootstrap_superuser(postgres, server)
        yield DynamicSite(server, postgres, database)


def create_bootstrap_superuser(postgres: PostgresCluster, server: OpenBao) -> None:
    """The Compose db container's bootstrap: POSTGRES_USER (DB_USER, `app`), a superuser,
    with the Docker secret's password (init-vault.sh's secrets/db_password.txt)."""
    password = (server.workdir / "secrets" / "db_password.txt").read_text().strip()
    remember_secrets(password)
    with postgres.admin_connect() as connection:
        exists = connection.execute("SELECT 1 FROM pg_roles WHERE rolname = 'app'").fetchone()
        verb = "ALTER" if exists else "CREATE"
        connection.execute(
            sql.SQL(verb + " ROLE app LOGIN SUPERUSER PASSWORD {}").format(sql.Literal(password))
        )


@pytest.fixture(scope="session")
def dynamic(postgres: PostgresCluster) -> Iterator[DynamicSite]:
    """The session's one dynamic-mode site (the group and owner roles are cluster-wide),
    migrated as setup.sh does before it starts the backend."""
    with dynamic_site(postgres) as site:
        site.migrate()
        yield site
