"""Local mode's `restore DIR`: check everything, back up the current state, stop the app,
restore Vault's snapshot and the database, end every session, then `up` as on any run."""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from orchestration import apache, backends, database, local_vault
from orchestration.backup import local_backup
from orchestration.console import SetupError, say
from orchestration.context import Run
from orchestration.database import Postgres, db_settings
from orchestration.restore import (
    END_SESSIONS_SQL,
    POSTGRES_DUMP,
    SQLITE_COPY,
    Backup,
    ask_to_restore,
    check_database_kind,
    check_keys,
    read_backup,
)
from orchestration.root_token import restore_snapshot_as_root


def restore_dir(run: Run) -> Path:
    if not run.options.restore_dir:
        raise SetupError("restore needs DIR: a directory --backup wrote (see --help)")
    return Path(run.options.restore_dir)


def unsealed_active_addr(run: Run) -> str:
    """The node that takes the snapshot: the elected one with --ha; it must be unsealed and
    accept the operator token (snapshot.sh uses it), or nothing is touched."""
    addr = run.nodes[0].addr
    if run.ha:
        local_vault.cluster(run).wait_for_leader()
        addr = run.nodes[run.active_node - 1].addr
    if run.vault(addr).seal_status().get("sealed") is not False:
        raise SetupError(f"Vault at {addr} is not running and unsealed: run ./setup.sh first; "
                         "nothing changed")  # fmt: skip
    if not local_vault.operator_token_valid(run):
        raise SetupError(f"Vault does not accept the token in {run.layout.operator_token_file}: "
                         "run ./setup.sh first (it renews it); nothing changed")  # fmt: skip
    return addr


def running_postgres(run: Run) -> Postgres | None:
    """The running cluster; None on SQLite; a SetupError when PostgreSQL is set up but down."""
    layout = run.layout
    if layout.sqlite_db.exists() and not (layout.pg_data / "PG_VERSION").exists():
        return None
    bin_dir = database.find_postgres()
    if bin_dir is None or not Postgres(run, bin_dir).running():
        raise SetupError("PostgreSQL is not running: run ./setup.sh first; nothing changed")
    return Postgres(run, bin_dir)


def restore_postgres(postgres: Postgres, name: str, dump: Path) -> None:
    """pg_restore in one transaction (all tables or none), then every session ends."""
    argv = postgres.tool("pg_restore", "--clean", "--if-exists", "--single-transaction",
                         "-h", str(postgres.sockets), "-p", str(postgres.port),
                         "-d", name)  # fmt: skip
    with dump.open("rb") as source, postgres.log.open("ab") as log:
        done = subprocess.run(argv, stdin=source, stdout=log, stderr=log, check=False)
    if done.returncode != 0:
        raise SetupError(f"pg_restore failed (see {postgres.log}); the database is as it was")
    if not postgres.logged(postgres.psql(name), END_SESSIONS_SQL):
        raise SetupError(f"ending the sessions failed (see {postgres.log})")
    say(f"database {name}: restored from {dump}; every session ended")


def restore_sqlite(run: Run, copy: Path) -> None:
    with (
        sqlite3.connect(f"file:{copy}?mode=ro", uri=True) as source,
        sqlite3.connect(run.layout.sqlite_db) as target,
    ):
        source.backup(target)
        target.execute(END_SESSIONS_SQL)
    say(f"database: SQLite restored from {copy}; every session ended")


def local_restore(run: Run, bring_back: Callable[[], None]) -> None:
    """Every check before the question, the question before any change."""
    backup: Backup = read_backup(restore_dir(run))
    check_keys(backup, run.layout.keys_file)
    postgres = running_postgres(run)
    check_database_kind(backup, SQLITE_COPY if postgres is None else POSTGRES_DUMP)
    addr = unsealed_active_addr(run)
    # Read before the snapshot: the operator token may be newer than the backup.
    name = "" if postgres is None else db_settings(run).get("database", "")
    safety_dir = run.data_dir / "backups"
    ask_to_restore(run, backup, safety_dir)
    say("backing up the current state first")
    local_backup(replace(run, options=replace(run.options, backup_dir=str(safety_dir))))
    backends.stop_all(run, apache.supervised(run))
    env = {"PROJECT_DIR": str(run.data_dir), "VAULT_ADDR": addr,
           "VAULT_KEYS_FILE": str(run.layout.keys_file),
           "VAULT_OPERATOR_TOKEN_FILE": str(run.layout.operator_token_file)}  # fmt: skip
    restore_snapshot_as_root(run, addr, backup.snapshot, env, run.layout.operator_token_file,
                             run.layout.keys_file)  # fmt: skip
    if postgres is None:
        restore_sqlite(run, backup.database_file)
    else:
        restore_postgres(postgres, name, backup.database_file)
    say(f"restored {backup.path}: unsealing Vault and starting the app")
    bring_back()
