"""`./setup.sh --restore DIR` with the Compose stacks: a backup round-trips users, secrets and
sessions, and a backup of other keys is refused before anything changes.

Marked `docker`: excluded from `make test`, run by `make test-docker` (and .ci/run).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.deploy.test_setup_restore import PASSWORD, create_user, user_names
from tests.docker.conftest import Project
from tests.docker.test_compose_stacks import csrf, kv, login, vault

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1500)]


def app_secret_version(stack: Project) -> int:
    read = vault(stack).secrets.kv.v2.read_secret_version(
        path="app/flask", mount_point="secret", raise_on_deleted_version=True
    )
    return int(read["data"]["metadata"]["version"])


def test_setup_docker_restore_round_trip(project: Project) -> None:
    stack, url = project, project.url
    stack.sh("./setup.sh", "--docker", timeout=900)
    admin = login(url, "admin", kv(stack, "app/flask")["admin_password"])
    keeper_id = create_user(admin, url, "keeper")
    users_then, secret_then = user_names(admin, url), kv(stack, "app/flask")
    version_then = app_secret_version(stack)
    backups = stack.root.parent / "backups"
    stack.sh("./setup.sh", "--backup", str(backups), timeout=300)
    (taken,) = backups.iterdir()

    later = login(url, "admin", secret_then["admin_password"])
    create_user(later, url, "newcomer")
    deleted = later.delete(f"{url}/api/users/{keeper_id}", headers=csrf(later), timeout=20)
    assert deleted.status_code == 204, deleted.text
    vault(stack).secrets.kv.v2.create_or_update_secret(
        path="app/flask",
        mount_point="secret",
        secret={**kv(stack, "app/flask"), "note": "written after the backup"},
    )

    # Another cluster's keys (its manifest's fingerprint): refused, nothing changed.
    manifest = json.loads((taken / "manifest.json").read_text())
    (taken / "manifest.json").write_text(json.dumps({**manifest, "keys_fingerprint": "sha256:0"}))
    refused = stack.sh("./setup.sh", "--restore", str(taken), "--yes", check=False)
    assert "comes from a Vault with other unseal keys" in refused
    assert app_secret_version(stack) == version_then + 1
    (taken / "manifest.json").write_text(json.dumps(manifest))

    output = stack.sh("./setup.sh", "--restore", str(backups), "--yes", timeout=900)
    assert f"restored {taken}" in output
    assert any(Path(stack.root / "backups").iterdir())  # the state before, backed up first
    assert app_secret_version(stack) == version_then
    assert kv(stack, "app/flask") == secret_then
    me = later.get(f"{url}/api/auth/me", timeout=20)
    assert me.status_code == 401, me.text
    fresh = login(url, "admin", secret_then["admin_password"])
    assert user_names(fresh, url) == users_then
    login(url, "keeper", PASSWORD)
