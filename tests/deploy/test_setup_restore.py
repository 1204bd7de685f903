"""`./setup.sh --restore DIR` on a real `setup.sh --local` stack: a backup round-trips users,
secrets and sessions; bad directories and other keys are refused with one line, changing
nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.deploy.test_setup_local import LocalStack, csrf, local_stack, login, new_local_stack

# Two whole stacks and a restore: minutes, so with the topology tests (make test-topology,
# which .ci/run runs), keeping make test within its 15 minutes.
pytestmark = pytest.mark.topology

__all__ = ["local_stack"]  # the fixture: a setup.sh --local stack in a temp DATA_DIR

PASSWORD = "keeper-correct-horse-42"


def user_names(session: requests.Session, url: str) -> set[str]:
    response = session.get(f"{url}/api/users", timeout=10)
    assert response.status_code == 200, response.text
    return {user["username"] for user in response.json()["users"]}


def create_user(session: requests.Session, url: str, name: str) -> int:
    user = {"username": name, "password": PASSWORD, "role": "user"}
    created = session.post(f"{url}/api/users", json=user, headers=csrf(session), timeout=10)
    assert created.status_code == 201, created.text
    return int(created.json()["user"]["id"])


def app_secret(stack: LocalStack) -> tuple[int, dict[str, Any]]:
    read = stack.vault().secrets.kv.v2.read_secret_version(
        path="app/flask", mount_point="secret", raise_on_deleted_version=True
    )
    return int(read["data"]["metadata"]["version"]), dict(read["data"]["data"])


def backup(stack: LocalStack, directory: Path) -> Path:
    done = stack.run("--backup", str(directory), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    (written,) = directory.iterdir()
    return written


def restore(stack: LocalStack, *args: str) -> tuple[int, str, str]:
    done = stack.run("--restore", *args, timeout=240)
    return done.returncode, done.stdout, done.stderr


def test_restore_round_trips_users_secrets_and_ends_later_sessions(
    local_stack: LocalStack,
) -> None:
    stack, url = local_stack, local_stack.url
    stack.up()
    admin = login(url, "admin", stack.admin_password())
    keeper_id = create_user(admin, url, "keeper")
    users_then, secret_then = user_names(admin, url), app_secret(stack)
    backups = stack.data_dir.parent / "backups"
    taken = backup(stack, backups)
    assert (taken / "manifest.json").stat().st_mode & 0o777 == 0o600

    # After the backup: a session, a user created, one deleted, a new secret version.
    later = login(url, "admin", stack.admin_password())
    create_user(later, url, "newcomer")
    newcomer = login(url, "newcomer", PASSWORD)
    deleted = later.delete(f"{url}/api/users/{keeper_id}", headers=csrf(later), timeout=10)
    assert deleted.status_code == 204, deleted.text
    stack.vault().secrets.kv.v2.create_or_update_secret(
        path="app/flask",
        mount_point="secret",
        secret={**app_secret(stack)[1], "note": "written after the backup"},
    )
    assert app_secret(stack)[0] == secret_then[0] + 1
    assert user_names(later, url) == users_then - {"keeper"} | {"newcomer"}

    # Nobody at a terminal and no --yes: asked, refused, nothing changed.
    code, out, err = restore(stack, str(backups))
    assert code == 1 and err.endswith("Add --yes to confirm (nobody at a terminal to ask)\n"), err
    assert "keeper" not in user_names(later, url)

    code, out, err = restore(stack, str(backups), "--yes")
    assert code == 0, out[-3000:] + err[-3000:]
    assert f"restored {taken}" in out and f"Ready: {url}" in out
    # The state before the restore was backed up first, into the data dir's backups.
    (safety,) = (stack.data_dir / "backups").iterdir()
    assert (safety / "manifest.json").exists()

    assert app_secret(stack) == secret_then
    for session in (later, newcomer, admin):  # after the backup, and before it too
        me = session.get(f"{url}/api/auth/me", timeout=10)
        assert me.status_code == 401, me.text
    fresh = login(url, "admin", stack.admin_password())
    assert user_names(fresh, url) == users_then
    assert fresh.get(f"{url}/api/auth/me", timeout=10).json()["user"]["username"] == "admin"
    login(url, "keeper", PASSWORD)
    gone = requests.post(f"{url}/api/auth/login", timeout=10,
                         json={"username": "newcomer", "password": PASSWORD})  # fmt: skip
    assert gone.status_code == 401, gone.text
    assert requests.get(f"{url}/api/ready", timeout=10).json()["status"] == "ready"


def test_restore_refuses_bad_directories_and_other_keys(local_stack: LocalStack) -> None:
    stack, url = local_stack, local_stack.url
    stack.up()
    admin = login(url, "admin", stack.admin_password())
    backups = stack.data_dir.parent / "backups"
    taken = backup(stack, backups)
    create_user(admin, url, "after")
    users_now, secret_now = user_names(admin, url), app_secret(stack)

    missing = stack.data_dir.parent / "nowhere"
    manifest = json.loads((taken / "manifest.json").read_text())
    refusals = {
        "": "setup.sh: error: restore needs DIR: a directory --backup wrote (see --help)\n",
        str(missing): f"setup.sh: error: backup directory {missing} does not exist\n",
    }
    for argument, error in refusals.items():
        code, _out, err = restore(stack, *([argument] if argument else []), "--yes")
        assert (code, err) == (1, error)

    # Another cluster's backup (a second stack, its own keys): refused by the fingerprint.
    with new_local_stack() as other:  # its directory goes when the block ends
        other.up()
        theirs = backup(other, other.data_dir.parent / "backups")
        code, _out, err = restore(stack, str(theirs), "--yes")
        assert code == 1 and err.count("\n") == 1, err
        assert f"backup {theirs} comes from a Vault with other unseal keys than" in err
        their_fingerprint = json.loads((theirs / "manifest.json").read_text())["keys_fingerprint"]
    assert their_fingerprint != manifest["keys_fingerprint"]

    vault_snap = (taken / "vault.snap").read_bytes()
    (taken / "vault.snap").unlink()
    code, _out, err = restore(stack, str(backups), "--yes")
    assert (code, err) == (1, f"setup.sh: error: incomplete backup {taken}: vault.snap is "
                              "missing\n")  # fmt: skip

    # Nothing changed: same users, same secret, the session still good, no safety backup.
    assert user_names(admin, url) == users_now and app_secret(stack) == secret_now
    assert not (stack.data_dir / "backups").exists()

    # A stopped stack cannot be backed up first nor restored into: said, not attempted.
    (taken / "vault.snap").write_bytes(vault_snap)
    assert stack.run("--stop").returncode == 0
    code, _out, err = restore(stack, str(taken), "--yes")
    assert (code, err) == (1, "setup.sh: error: PostgreSQL is not running: run ./setup.sh "
                              "first; nothing changed\n")  # fmt: skip
