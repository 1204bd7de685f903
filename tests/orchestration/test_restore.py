"""`restore DIR` without servers: the flag forms, the checks of a backup directory, the keys'
fingerprint, the confirmation, and Docker mode's Compose calls with Compose stubbed (the
round trip against real servers is tests/deploy/test_setup_restore.py)."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from orchestration import docker_restore
from orchestration.cli import parse, to_verb_form
from orchestration.console import SetupError
from orchestration.docker_mode import DB_SHELL, DockerMode
from orchestration.options import Options
from orchestration.restore import (
    END_SESSIONS_SQL,
    check_database_kind,
    check_keys,
    confirm,
    keys_fingerprint,
    read_backup,
    write_manifest,
)
from orchestration.root_token import decode_root
from tests.orchestration.test_docker_mode import Calls, calls, mode, tails

__all__ = ["calls"]  # the fixture, shared with test_docker_mode

KEYS = {"unseal_keys_b64": ["a2V5IG9uZQ==", "a2V5IHR3bw==", "a2V5IHRocmVl"], "root_token": ""}


def keys_file(directory: Path, keys: dict[str, Any] = KEYS) -> Path:
    path = directory / "vault-keys.json"
    path.write_text(json.dumps(keys))
    return path


def make_backup(
    parent: Path, name: str = "20261208T030000Z", database: str = "app-db.dump"
) -> Path:
    """A backup as --backup writes it: the two files, then the manifest."""
    target = parent / name
    target.mkdir(parents=True)
    (target / database).write_bytes(b"PGDMP dump bytes")
    (target / "vault.snap").write_bytes(b"snapshot bytes")
    write_manifest(target, keys_file(parent))
    return target


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--restore", "/b/x", "--yes"], ["restore", "/b/x", "--yes"]),
        (["--local", "--restore", "/b/x"], ["restore", "/b/x", "--local"]),
        (["--restore", "--yes"], ["restore", "--yes"]),
        (["restore", "/b/x", "--docker"], ["restore", "/b/x", "--docker"]),
    ],
)
def test_restore_flag_becomes_a_command_word(argv: list[str], words: list[str]) -> None:
    assert to_verb_form(argv) == words


def test_restore_options() -> None:
    assert parse(["--restore", "D", "--yes"], {}) == Options(verb="restore", restore_dir="D",
                                                             yes=True)  # fmt: skip
    assert parse(["restore"], {}) == Options(verb="restore")


def test_manifest_records_digests_and_fingerprint_never_a_key(tmp_path: Path) -> None:
    target = make_backup(tmp_path)
    manifest_text = (target / "manifest.json").read_text()
    manifest = json.loads(manifest_text)
    assert set(manifest["files"]) == {"app-db.dump", "vault.snap"}
    assert manifest["keys_fingerprint"] == keys_fingerprint(tmp_path / "vault-keys.json")
    assert not any(key in manifest_text for key in KEYS["unseal_keys_b64"])
    assert (target / "manifest.json").stat().st_mode & 0o777 == 0o600
    backup = read_backup(target)
    assert (backup.path, backup.database, backup.created) == (target, "app-db.dump", target.name)


def test_fingerprint_names_the_keys_not_their_order(tmp_path: Path) -> None:
    shuffled = {"unseal_keys_b64": list(reversed(KEYS["unseal_keys_b64"]))}
    other = {"recovery_keys_b64": ["b3RoZXI="]}
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir(), (tmp_path / "c").mkdir()
    assert keys_fingerprint(keys_file(tmp_path / "a")) == keys_fingerprint(
        keys_file(tmp_path / "b", shuffled)
    )
    assert keys_fingerprint(keys_file(tmp_path / "c", other)) != keys_fingerprint(
        tmp_path / "a" / "vault-keys.json"
    )


def test_the_newest_backup_of_a_parent_directory(tmp_path: Path) -> None:
    make_backup(tmp_path, "20261208T010000Z")
    newest = make_backup(tmp_path, "20261208T020000Z")
    (tmp_path / "notes").mkdir()
    assert read_backup(tmp_path).path == newest


def break_newest(parent: Path, how: str) -> None:
    target = make_backup(parent)
    if how == "no manifest":
        (target / "manifest.json").unlink()
    elif how == "no snapshot":
        (target / "vault.snap").unlink()
    elif how == "cut dump":
        (target / "app-db.dump").write_bytes(b"PGDMP")
    elif how == "bad json":
        (target / "manifest.json").write_text("{")
    elif how == "no database listed":
        manifest = json.loads((target / "manifest.json").read_text())
        del manifest["files"]["app-db.dump"]
        (target / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("how", "error"),
    [
        ("no manifest", "incomplete backup {dir}: no manifest.json (the backup did not finish"),
        ("no snapshot", "incomplete backup {dir}: vault.snap is missing"),
        ("cut dump", "backup {dir}: app-db.dump is not the file the backup wrote"),
        ("bad json", "backup {dir}: manifest.json is unreadable or not JSON"),
        ("no database listed", "incomplete backup {dir}: it needs vault.snap and one of"),
    ],
)
def test_incomplete_backups_are_refused_by_name(tmp_path: Path, how: str, error: str) -> None:
    # An older complete backup beside it: the newest one's defect is never skipped silently.
    make_backup(tmp_path, "20261207T000000Z")
    break_newest(tmp_path, how)
    with pytest.raises(SetupError) as refused:
        read_backup(tmp_path)
    assert str(refused.value).startswith(error.format(dir=tmp_path / "20261208T030000Z"))


def test_a_missing_or_empty_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match=r"^backup directory .*/nowhere does not exist$"):
        read_backup(tmp_path / "nowhere")
    with pytest.raises(SetupError, match="holds no backup"):
        read_backup(tmp_path)


def test_other_keys_are_refused(tmp_path: Path) -> None:
    backup = read_backup(make_backup(tmp_path))
    check_keys(backup, tmp_path / "vault-keys.json")
    (tmp_path / "mine").mkdir()
    theirs = keys_file(tmp_path / "mine", {"unseal_keys_b64": ["b3RoZXI="]})
    with pytest.raises(SetupError, match="comes from a Vault with other unseal keys"):
        check_keys(backup, theirs)
    with pytest.raises(SetupError, match="holds a PostgreSQL database but this stack runs SQLite"):
        check_database_kind(backup, "app.db")


def refuse(**kwargs: Any) -> str:
    with pytest.raises(SetupError) as refused:
        confirm("Restore X?", **kwargs)
    return str(refused.value)


def test_confirmation() -> None:
    asked: list[str] = []

    def answer(text: str) -> Any:
        return lambda prompt: asked.append(prompt) or text

    confirm("Restore X?", yes=True, interactive=False, ask=answer("no"))
    confirm("Restore X?", yes=False, interactive=True, ask=answer("restore\n"))
    assert asked == ["Restore X? Type 'restore' to go on: "]
    assert refuse(yes=False, interactive=False, ask=answer("restore")) == (
        "Restore X? Add --yes to confirm (nobody at a terminal to ask)"
    )
    for wrong in ("", "y", "yes", "RESTORE"):
        assert refuse(yes=False, interactive=True, ask=answer(wrong)) == (
            "not confirmed: nothing restored"
        )


def test_docker_restore_argv_with_compose_stubbed(
    tmp_path: Path, calls: Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checks, the current state backed up, the app stopped, the snapshot restored from the
    host, pg_restore and the session-ending SQL inside db, then `up`."""
    backup = make_backup(tmp_path / "backups")
    docker = mode(tmp_path, verb="restore", restore_dir=str(backup), yes=True)
    steps: list[str] = []
    monkeypatch.setattr(docker_restore, "read_token", lambda _path: "token")
    monkeypatch.setattr(docker_restore, "check_keys", lambda *_: steps.append("keys"))
    monkeypatch.setattr(docker_restore, "check_vault", lambda _mode: steps.append("vault"))
    monkeypatch.setattr(DockerMode, "wait_for_db", lambda _self: steps.append("db"))
    monkeypatch.setattr(DockerMode, "backup", lambda self: steps.append(
        f"backup {self.run.options.backup_dir}"))  # fmt: skip
    monkeypatch.setattr(DockerMode, "up", lambda _self: steps.append("up"))
    monkeypatch.setattr(docker_restore, "restore_snapshot_as_root",
                        lambda _run, addr, snap, env, token_file, keys_file: steps.append(
                            f"snapshot {addr} {snap} {env} {token_file} {keys_file}"))  # fmt: skip
    stdins: list[Any] = []

    def fake_run(argv: list[str], env: dict[str, str], input: str | None = None,
                 stdin: Any = None, **_: Any) -> Any:  # fmt: skip
        if stdin is not None:  # pg_restore reads the dump file
            stdins.append(stdin.read())
        calls.append((argv, env, input))
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(docker_restore.subprocess, "run", fake_run)
    docker.restore()
    assert steps == [
        "keys",
        "vault",
        "db",
        f"backup {Path('/repo/backups')}",
        f"snapshot http://127.0.0.1:8200 {backup / 'vault.snap'} "
        + str({"PROJECT_DIR": "/repo", "VAULT_ADDR": "http://127.0.0.1:8200"})
        + " /repo/vault-operator-token /repo/vault-keys.json",
        "up",
    ]
    assert tails(calls) == [
        ["flask-vault-app", "docker-compose.yaml", "stop", "frontend", "backend"],
        ["flask-vault-app", "docker-compose.yaml", "exec", "-T", "db", "sh", "-c",
         docker_restore.RESTORE_SHELL],
        ["flask-vault-app", "docker-compose.yaml", "exec", "-T", "db", "sh", "-c", DB_SHELL],
    ]  # fmt: skip
    assert stdins == [b"PGDMP dump bytes"]
    assert calls[2][2] == END_SESSIONS_SQL
    assert "pg_restore --clean --if-exists --single-transaction" in docker_restore.RESTORE_SHELL


def test_docker_restore_refuses_before_any_call(tmp_path: Path, calls: Calls) -> None:
    with pytest.raises(SetupError, match="restore needs DIR"):
        mode(tmp_path, verb="restore").restore()
    with pytest.raises(SetupError, match="does not exist"):
        mode(tmp_path, verb="restore", restore_dir=str(tmp_path / "none")).restore()
    backup = make_backup(tmp_path / "backups")
    with pytest.raises(
        SetupError, match=r"^cannot read the unseal keys in /repo/vault-keys\.json$"
    ):
        mode(tmp_path, verb="restore", restore_dir=str(backup)).restore()
    assert calls == []


def test_root_token_decoding() -> None:
    otp = "abcdefghijklmnopqrstuvwxyz0123"
    token = "s.not-a-real-root-token-xyz123"  # as long as the one-time password
    encoded = base64.b64encode(
        bytes(a ^ b for a, b in zip(token.encode(), otp.encode(), strict=True))
    ).decode()
    assert decode_root(otp, encoded.rstrip("=")) == token
    with pytest.raises(SetupError, match="not enough unseal keys"):
        decode_root(otp, "")
