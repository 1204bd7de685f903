"""VAULT_DB_MODE=dynamic set up as a user would: roles SQL by psql, then init-vault.sh."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from orchestration.database import ADMIN_ROLE, roles_script
from tests.harness.app import remember_secrets
from tests.harness.openbao import OpenBao, running_openbao
from tests.harness.postgres import PostgresCluster, find_pg_bin


@dataclass
class DynamicSite:
    """An OpenBao whose database engine hands out logins to a fresh database."""

    server: OpenBao
    postgres: PostgresCluster
    database: str

    def env(self) -> dict[str, str]:
        """Backend environment for dynamic mode (no database password anywhere)."""
        return {"VAULT_DB_MODE": "dynamic"}

    def login_roles(self) -> list[tuple[str, Any]]:
        """(name, valid until) of every login role Vault created (names start with v-)."""
        with self.postgres.admin_connect() as connection:
            rows = connection.execute(
                "SELECT rolname, rolvaliduntil FROM pg_roles WHERE rolname LIKE 'v-%'"
            ).fetchall()
        return [(str(name), until) for name, until in rows]


def apply_roles_sql(postgres: PostgresCluster, database: str, admin_password: str) -> None:
    """vault/config/postgres-dynamic-roles.sql through psql, wrapped as setup.sh runs it
    (orchestration.database.roles_script: the admin password on stdin, never argv)."""
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
        input=roles_script(admin_password).encode(),
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
        yield DynamicSite(server, postgres, database)


@pytest.fixture(scope="session")
def dynamic(postgres: PostgresCluster) -> Iterator[DynamicSite]:
    """The session's one dynamic-mode site (the group and owner roles are cluster-wide)."""
    with dynamic_site(postgres) as site:
        yield site
