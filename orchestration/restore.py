"""`restore DIR`: put back what `backup` wrote, after checking that it can be put back.

A backup is trusted only through its manifest.json, written last by `backup`: the files it
lists with their SHA-256 (a missing or cut file is refused before anything changes) and a
fingerprint of the unseal (or recovery) keys of the cluster the snapshot came from. A Raft
snapshot restored into a server whose keys file holds other keys seals it for good, so the
fingerprint is compared with the data dir's keys file first. The fingerprint is a hash of
256-bit random keys, which no one can invert or guess; the keys themselves never leave the
keys file.

Restoring also ends every session: the logouts and revocations made after the backup are
gone with the database rows that recorded them, so no token issued before the restore is
trusted again (each user's token_version is bumped; the app checks it on every request).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestration.console import SetupError, say
from orchestration.context import Run
from orchestration.scripts import run_indented

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
SNAPSHOT = "vault.snap"
POSTGRES_DUMP = "app-db.dump"
SQLITE_COPY = "app.db"
BACKUP_NAME = re.compile(r"^[0-9]{8}T[0-9]{6}Z$")  # backup_target's DIR/<UTC time>
FINGERPRINT_CONTEXT = b"flask-vault-app backup keys fingerprint v1\n"
# Every session ends with a restore (see above); the column the app compares on each request.
END_SESSIONS_SQL = "UPDATE users SET token_version = token_version + 1;\n"
# A snapshot of this same cluster leaves the server unsealed; no need to wait 20 s for a seal.
SNAPSHOT_RESTORE_WAIT = "5"


@dataclass(frozen=True)
class Backup:
    """One checked backup directory: its files are there and match its manifest."""

    path: Path
    created: str
    database: str  # POSTGRES_DUMP or SQLITE_COPY
    keys_fingerprint: str

    @property
    def snapshot(self) -> Path:
        return self.path / SNAPSHOT

    @property
    def database_file(self) -> Path:
        return self.path / self.database


def key_shares(keys_file: Path) -> list[str]:
    """The unseal (or, with auto-unseal, recovery) keys of a keys file."""
    try:
        data = json.loads(keys_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise SetupError(f"cannot read the unseal keys in {keys_file}") from None
    keys = data.get("unseal_keys_b64") or data.get("recovery_keys_b64") if isinstance(
        data, dict) else None  # fmt: skip
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
        raise SetupError(f"{keys_file} holds no unseal_keys_b64 or recovery_keys_b64 list")
    return keys


def keys_fingerprint(keys_file: Path) -> str:
    """A hash naming the unseal/recovery keys of keys_file (order-independent)."""
    keys = key_shares(keys_file)
    digest = hashlib.sha256(FINGERPRINT_CONTEXT + "\n".join(sorted(keys)).encode())
    return "sha256:" + digest.hexdigest()


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(target: Path, keys_file: Path) -> None:
    """Last step of a backup: its files' digests and the keys' fingerprint (mode 0600)."""
    files = {path.name: file_digest(path) for path in sorted(target.iterdir())
             if path.name in (POSTGRES_DUMP, SQLITE_COPY, SNAPSHOT)}  # fmt: skip
    manifest = {"format": MANIFEST_FORMAT, "created": target.name, "files": files,
                "keys_fingerprint": keys_fingerprint(keys_file)}  # fmt: skip
    temporary = target / (MANIFEST + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        json.dump(manifest, out, indent=2)
    temporary.rename(target / MANIFEST)
    say(f"  restore all of it: ./setup.sh --restore {target}")


def newest_backup(directory: Path) -> Path:
    """DIR itself when it is one backup; else the newest DIR/<UTC time>/ (what `backup DIR`
    made), complete or not: an incomplete newest one is refused, never silently skipped."""
    if (directory / MANIFEST).exists() or (directory / SNAPSHOT).exists():
        return directory
    names = sorted(p.name for p in directory.iterdir() if p.is_dir() and BACKUP_NAME.match(p.name))
    if not names:
        raise SetupError(f"{directory} holds no backup (neither {MANIFEST} nor a <UTC time> "
                         "directory written by --backup)")  # fmt: skip
    return directory / names[-1]


def _manifest(path: Path) -> dict[str, Any]:
    file = path / MANIFEST
    if not file.is_file():
        raise SetupError(f"incomplete backup {path}: no {MANIFEST} (the backup did not finish, or "
                         "predates --restore: restore it by hand, README \"Back up and "
                         "restore\")")  # fmt: skip
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise SetupError(f"backup {path}: {MANIFEST} is unreadable or not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise SetupError(f"backup {path}: {MANIFEST} is not a format {MANIFEST_FORMAT} manifest")
    return manifest


def read_backup(directory: Path) -> Backup:
    """The backup in directory, checked file by file; a SetupError naming what is wrong."""
    if not directory.is_dir():
        raise SetupError(f"backup directory {directory} does not exist")
    path = newest_backup(directory.resolve())
    manifest = _manifest(path)
    files = manifest.get("files")
    fingerprint = manifest.get("keys_fingerprint")
    if not isinstance(files, dict) or not isinstance(fingerprint, str) or not fingerprint:
        raise SetupError(f"backup {path}: {MANIFEST} lacks its file list or keys fingerprint")
    databases = [name for name in (POSTGRES_DUMP, SQLITE_COPY) if name in files]
    if SNAPSHOT not in files or len(databases) != 1:
        raise SetupError(f"incomplete backup {path}: it needs {SNAPSHOT} and one of "
                         f"{POSTGRES_DUMP} or {SQLITE_COPY}")  # fmt: skip
    for name in (SNAPSHOT, databases[0]):
        file = path / name
        if not file.is_file():
            raise SetupError(f"incomplete backup {path}: {name} is missing")
        if file_digest(file) != files[name]:
            raise SetupError(f"backup {path}: {name} is not the file the backup wrote (its "
                             "SHA-256 differs: cut short or changed)")  # fmt: skip
    return Backup(path, str(manifest.get("created", path.name)), databases[0], fingerprint)


def check_keys(backup: Backup, keys_file: Path) -> None:
    """Refuse a snapshot that the keys of this data dir could not unseal."""
    if keys_fingerprint(keys_file) != backup.keys_fingerprint:
        raise SetupError(f"backup {backup.path} comes from a Vault with other unseal keys than "
                         f"{keys_file}: restoring it would leave Vault sealed for good; nothing "
                         "changed")  # fmt: skip


def check_database_kind(backup: Backup, running: str) -> None:
    """A PostgreSQL dump goes into PostgreSQL, a SQLite copy into SQLite."""
    if backup.database != running:
        kinds = {POSTGRES_DUMP: "PostgreSQL", SQLITE_COPY: "SQLite"}
        raise SetupError(f"backup {backup.path} holds a {kinds[backup.database]} database but "
                         f"this stack runs {kinds[running]}: nothing changed")  # fmt: skip


def confirm(question: str, yes: bool, interactive: bool, ask: Callable[[str], str]) -> None:
    """--yes, or 'restore' typed at a terminal; anything else refuses before any change."""
    if yes:
        return
    if not interactive:
        raise SetupError(f"{question} Add --yes to confirm (nobody at a terminal to ask)")
    if ask(f"{question} Type 'restore' to go on: ").strip() != "restore":
        raise SetupError("not confirmed: nothing restored")


def ask_to_restore(run: Run, backup: Backup, safety_dir: Path) -> None:
    """The question says what is lost: everything written since the backup."""
    question = (f"Restore {backup.path}: the app database and every Vault secret go back to "
                f"{backup.created}, and every session ends; what was written since is replaced "
                f"(the current state is backed up first to {safety_dir}/<UTC time>/).")  # fmt: skip
    confirm(question, run.options.yes, sys.stdin.isatty(), input)


def restore_snapshot(run: Run, snapshot: Path, env: dict[str, str], root_token: str) -> None:
    """vault/scripts/snapshot.sh restore (forced: the keys were checked above) with a root
    token of this run (root_token.py), passed in the environment."""
    env = {"VAULT_BIN": run.require_bao(), "SNAPSHOT_RESTORE_WAIT": SNAPSHOT_RESTORE_WAIT,
           **env, "VAULT_TOKEN": root_token}  # fmt: skip
    run_indented([str(run.root / "vault" / "scripts" / "snapshot.sh"), "restore", str(snapshot)],
                 env, "snapshot.sh restore failed (its message is above)")  # fmt: skip
