"""Docker mode's `restore DIR`: the same checks and order as local mode, with pg_restore and
psql run inside the db container (its own secret file's password) and the Raft snapshot
restored from the host on the published port, as `backup` took it."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from orchestration.cluster import read_token
from orchestration.console import SetupError, say
from orchestration.restore import (
    END_SESSIONS_SQL,
    POSTGRES_DUMP,
    ask_to_restore,
    check_database_kind,
    check_keys,
    read_backup,
)
from orchestration.root_token import restore_snapshot_as_root
from orchestration.scripts import child_env

if TYPE_CHECKING:
    from orchestration.docker_mode import DockerMode

# Inside the db container, as its superuser with the Docker secret's password (read there):
# all tables or none (--single-transaction).
RESTORE_SHELL = ('PGPASSWORD="$(cat /run/secrets/db_password)" exec pg_restore --clean '
                 '--if-exists --single-transaction -h 127.0.0.1 -U "$POSTGRES_USER" '
                 '-d "$POSTGRES_DB"')  # fmt: skip


def check_vault(mode: DockerMode) -> None:
    run = mode.run
    if run.vault(mode.addrs[0]).seal_status().get("sealed") is not False:
        raise SetupError(f"Vault at {mode.addrs[0]} is not running and unsealed: run ./setup.sh "
                         "first; nothing changed")  # fmt: skip
    token = read_token(run.root / "vault-operator-token")
    if not token or not run.vault(mode.addrs[0], token).ok("GET", "auth/token/lookup-self"):
        raise SetupError("Vault does not accept the token in vault-operator-token: run "
                         "./setup.sh first (it renews it); nothing changed")  # fmt: skip


def pg_restore(mode: DockerMode, dump: Path) -> None:
    argv = mode.compose.argv("app", "exec", "-T", "db", "sh", "-c", RESTORE_SHELL)
    with dump.open("rb") as source:
        done = subprocess.run(argv, env=child_env(mode.compose.env()), stdin=source, check=False)
    if done.returncode != 0:
        raise SetupError("pg_restore in the db container failed (output above); the database "
                         "is as it was")  # fmt: skip


def docker_restore(mode: DockerMode, db_shell: str) -> None:
    """Every check before the question, the question before any change; db_shell: psql as
    the db container's superuser (docker_mode.DB_SHELL)."""
    run = mode.run
    if not run.options.restore_dir:
        raise SetupError("restore needs DIR: a directory --backup wrote (see --help)")
    backup = read_backup(Path(run.options.restore_dir))
    check_keys(backup, run.root / "vault-keys.json")
    check_database_kind(backup, POSTGRES_DUMP)
    check_vault(mode)
    mode.wait_for_db()
    safety_dir = run.root / "backups"
    ask_to_restore(run, backup, safety_dir)
    say("backing up the current state first")
    type(mode)(replace(run, options=replace(run.options, backup_dir=str(safety_dir))),
               mode.compose).backup()  # fmt: skip
    mode.call("app", "stop", "frontend", "backend")
    env = {"PROJECT_DIR": str(run.root), "VAULT_ADDR": mode.addrs[0]}
    token_file, keys_file = run.root / "vault-operator-token", run.root / "vault-keys.json"
    restore_snapshot_as_root(run, mode.addrs[0], backup.snapshot, env, token_file, keys_file)
    pg_restore(mode, backup.database_file)
    mode.call("app", "exec", "-T", "db", "sh", "-c", db_shell, stdin=END_SESSIONS_SQL)
    say(f"restored {backup.path}: every session ended; unsealing Vault and starting the app")
    mode.up()
