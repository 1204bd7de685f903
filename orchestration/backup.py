"""`backup [DIR]`: the app database and a Raft snapshot of Vault in DIR/<UTC time>/, 0600."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from pathlib import Path

from orchestration import database, local_vault
from orchestration.console import SetupError, say
from orchestration.context import Run
from orchestration.database import Postgres, db_settings
from orchestration.restore import write_manifest
from orchestration.scripts import run_indented


def backup_target(directory: Path) -> Path:
    """A new private directory for this backup (absolute)."""
    old = os.umask(0o077)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        target = directory.resolve() / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        if target.exists():
            raise SetupError(f"{target} exists already: wait a second and retry")
        target.mkdir()
    except OSError:
        raise SetupError(f"cannot create backup directory {directory}") from None
    finally:
        os.umask(old)
    return target


def snapshot(run: Run, target: Path, env: dict[str, str]) -> None:
    env = {"VAULT_BIN": run.require_bao(), **env}
    run_indented([str(run.root / "vault" / "scripts" / "snapshot.sh"), "save",
                  str(target / "vault.snap")], env,
                 "snapshot.sh save failed (its message is above)",
                 drop=("VAULT_TOKEN",))  # fmt: skip


def backup_postgres(run: Run, postgres: Postgres, file: Path) -> None:
    """pg_dump runs as the cluster owner while we write the file (0600)."""
    name = db_settings(run).get("database", "")
    temporary = file.with_name(file.name + ".tmp")
    argv = postgres.tool("pg_dump", "-Fc", "-h", str(postgres.sockets), "-p", str(postgres.port),
                          "-d", name)  # fmt: skip
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out, postgres.log.open("ab") as log:
        done = subprocess.run(argv, stdout=out, stderr=log, check=False)
    if done.returncode != 0:
        temporary.unlink(missing_ok=True)
        raise SetupError(f"pg_dump failed (see {postgres.log})")
    temporary.rename(file)
    restore = (f"{postgres.bin}/pg_restore --clean --if-exists --single-transaction "
               f"-h {postgres.sockets} -p {postgres.port} -d {name}")  # fmt: skip
    if os.geteuid() == 0:
        restore = f"runuser -u postgres -- {restore}"
    say(
        f"database {name}: pg_dump (custom format) in {file} "
        f"({file.stat().st_size} bytes, mode 0600)"
    )
    say(f"  restore: {restore} < {file}")


def local_backup(run: Run) -> None:
    run.require_bao()
    addr = run.nodes[0].addr
    if run.ha:
        local_vault.cluster(run).wait_for_leader()  # node 1 may be the one that is down
        addr = run.nodes[run.active_node - 1].addr
    if run.vault(addr).seal_status().get("sealed") is not False:
        raise SetupError(f"Vault at {addr} is not running and unsealed: run ./setup.sh first")
    layout = run.layout
    target = backup_target(Path(run.options.backup_dir or layout.data_dir / "backups"))
    bin_dir = database.find_postgres()
    if bin_dir is not None and Postgres(run, bin_dir).running():
        backup_postgres(run, Postgres(run, bin_dir), target / "app-db.dump")
    elif layout.sqlite_db.exists() and not (layout.pg_data / "PG_VERSION").exists():
        with (
            sqlite3.connect(layout.sqlite_db) as source,
            sqlite3.connect(target / "app.db") as copy,
        ):
            source.backup(copy)
        (target / "app.db").chmod(0o600)
        say(f"database: SQLite copy in {target / 'app.db'} (restore: stop, copy it back to "
            f"{layout.sqlite_db})")  # fmt: skip
    else:
        raise SetupError("PostgreSQL is not running: run ./setup.sh first")
    env = {"PROJECT_DIR": str(run.data_dir), "VAULT_ADDR": addr,
           "VAULT_KEYS_FILE": str(layout.keys_file),
           "VAULT_OPERATOR_TOKEN_FILE": str(layout.operator_token_file)}  # fmt: skip
    snapshot(run, target, env)
    write_manifest(target, layout.keys_file)
    vault_env = f"PROJECT_DIR={run.data_dir} VAULT_ADDR={addr}"
    if run.tls.mode == "mtls":
        vault_env += (
            f" VAULT_CLIENT_CERT={run.tls.client_cert} VAULT_CLIENT_KEY={run.tls.client_key}"
        )
    say(f"Vault: Raft snapshot in {target / 'vault.snap'}")
    say(f"  restore: {vault_env} vault/scripts/snapshot.sh restore {target / 'vault.snap'}")
    say(f"  then:    {vault_env} vault/scripts/unseal-vault.sh")
    if run.auto_unseal:
        say("  it opens only with this cluster's seal, the unsealer's transit key: snapshot the "
            'unsealer too (VAULT_INTEGRATION.md, runbook "A lost unsealer")')  # fmt: skip
    else:
        say(f"  it opens only with the unseal keys of {layout.keys_file}: keep a copy of them "
            "apart from the backups")  # fmt: skip
    say(f"backup written to {target}")
