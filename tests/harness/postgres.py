"""Fixtures for a private PostgreSQL cluster with scram-sha-256 password auth.

The machine's own server on 5432 trusts every local connection, which cannot prove that wrong
or expired credentials fail; this cluster is started per test session instead, on a free
loopback port, and refuses any connection without the right password.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import URL

from tests.harness.servers import free_port, missing_server

SUPERUSER = "postgres"


def find_pg_bin() -> Path | None:
    """Debian keeps server binaries out of PATH, under /usr/lib/postgresql/<version>/bin."""
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


def _as_cluster_owner(argv: list[str]) -> list[str]:
    """initdb and pg_ctl refuse root: run them as the unprivileged postgres OS user."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


@dataclass
class PostgresCluster:
    """A running private cluster; the superuser authenticates with a password like any user."""

    bindir: Path
    root: Path
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    superuser: str = SUPERUSER
    superuser_password: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    def start(self) -> None:
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.superuser_password)
        self._chown(self.root, pwfile)
        self._run(
            "initdb",
            "-D",
            str(self.datadir),
            "-U",
            self.superuser,
            "--pwfile",
            str(pwfile),
            "--auth",
            "scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        )
        pwfile.unlink()
        self.pg_ctl_start()

    def pg_ctl_start(self) -> None:
        options = f"-p {self.port} -c listen_addresses={self.host} -k {self.root} -c fsync=off"
        self._run(
            "pg_ctl",
            "-D",
            str(self.datadir),
            "-l",
            str(self.root / "server.log"),
            "-o",
            options,
            "-w",
            "start",
        )

    def stop(self) -> None:
        if self.datadir.exists():
            self._run(
                "pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop", check=False
            )

    def dsn(self, user: str, password: str, database: str = "postgres") -> str:
        return psycopg.conninfo.make_conninfo(
            host=self.host, port=self.port, user=user, password=password, dbname=database
        )

    def url(self, user: str, password: str, database: str) -> str:
        return URL.create(
            "postgresql+psycopg",
            username=user,
            password=password,
            host=self.host,
            port=self.port,
            database=database,
        ).render_as_string(hide_password=False)

    def admin_connect(self, database: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(
            self.dsn(self.superuser, self.superuser_password, database), autocommit=True
        )

    def create_role(self, name: str, password: str) -> None:
        with self.admin_connect() as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(name), sql.Literal(password)
                )
            )

    def create_database(self, name: str, owner: str | None = None) -> str:
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if owner:
            query += sql.SQL(" OWNER {}").format(sql.Identifier(owner))
        with self.admin_connect() as conn:
            conn.execute(query)
        return name

    def create_app_database(self, prefix: str = "app") -> tuple[str, str, str]:
        """A fresh role and database it owns: (database, username, password)."""
        suffix = secrets.token_hex(4)
        user, database, password = (
            f"{prefix}_{suffix}",
            f"{prefix}db_{suffix}",
            secrets.token_urlsafe(24),
        )
        self.create_role(user, password)
        self.create_database(database, owner=user)
        return database, user, password

    def _run(self, tool: str, *args: str, check: bool = True) -> None:
        subprocess.run(
            _as_cluster_owner([str(self.bindir / tool), *args]),
            check=check,
            capture_output=True,
            timeout=60,
        )

    def _chown(self, *paths: Path) -> None:
        if os.geteuid() == 0:
            for path in paths:
                shutil.chown(path, user="postgres", group="postgres")


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresCluster]:
    """A private PostgreSQL cluster with password auth, stopped and removed on exit."""
    bindir = find_pg_bin()
    if bindir is None:
        missing_server("PostgreSQL server binaries (initdb, pg_ctl) not found")
        return
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        missing_server("running as root without runuser: cannot start PostgreSQL unprivileged")
        return
    root = Path(tempfile.mkdtemp(prefix="pgtest-"))
    cluster = PostgresCluster(bindir=bindir, root=root)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """The session's cluster (tests that need cluster-wide roles of their own start one)."""
    with running_postgres() as cluster:
        yield cluster
