"""Transit auto-unseal: restarted nodes unseal themselves; without the unsealer they cannot."""

from __future__ import annotations

import stat
import subprocess
import time
from collections.abc import Iterator

import hvac
import pytest
import requests

from tests.harness.openbao import REPO, OpenBao
from tests.harness.openbao_cluster import Cluster, running_cluster, seal_token

# Production topology (issues 13, 14): run by `make test-topology`, which CI runs too,
# so that `make test` stays within its time budget.
pytestmark = pytest.mark.topology

SEAL_FAILURE_LIMIT = 90.0  # seconds OpenBao keeps retrying an unreachable seal before it exits


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """One auto-unsealed cluster for both tests (the second one leaves it whole again)."""
    with running_cluster(auto_unseal=True) as cluster:
        yield cluster


def test_recovery_keys_and_a_seal_token_that_only_encrypts_and_decrypts(cluster: Cluster) -> None:
    keys_file = cluster.nodes[0].workdir / "vault-keys.json"
    keys = cluster.nodes[0].keys()
    # Where the unseal keys went: recovery keys now (generate-root takes them, unsealing not).
    assert "unseal_keys_b64" not in keys and len(keys["recovery_keys_b64"]) == 1
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    # A re-run makes its root token from them, and says which keys it used.
    rerun = cluster.nodes[0].run_script("init-vault.sh")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "root token for this run: generated from the recovery keys" in rerun.stdout
    unsealer = cluster.unsealer
    assert unsealer is not None
    for name in ("vault-unsealer-keys.json", "vault-unsealer-token"):
        assert stat.S_IMODE((unsealer.workdir / name).stat().st_mode) == 0o600, name
    assert "root_token" not in (unsealer.workdir / "vault-unsealer-keys.json").read_text()

    token = unsealer.client(seal_token(unsealer))
    assert token.lookup_token()["data"]["policies"] == ["autounseal-policy"]
    ciphertext = token.secrets.transit.encrypt_data("autounseal", "aGVsbG8=")["data"]["ciphertext"]
    assert token.secrets.transit.decrypt_data("autounseal", ciphertext)["data"]["plaintext"]
    with pytest.raises(hvac.exceptions.Forbidden):
        token.secrets.transit.read_key("autounseal")
    with pytest.raises(hvac.exceptions.Forbidden):
        token.secrets.transit.rotate_key("autounseal")
    with pytest.raises(hvac.exceptions.Forbidden):
        token.sys.list_mounted_secrets_engines()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_restarted_nodes_unseal_themselves_but_not_without_the_unsealer(cluster: Cluster) -> None:
    unsealer = cluster.unsealer
    assert unsealer is not None
    before = (
        cluster.nodes[0]
        .client(cluster.root_token)
        .secrets.kv.v2.read_secret_version(
            path="app/flask", mount_point="secret", raise_on_deleted_version=True
        )["data"]["data"]
    )

    # Every main node restarted at once: unsealed without a key from anyone.
    for node in cluster.nodes:
        node.stop()
    for node in cluster.nodes:
        node.start()
    for node in cluster.nodes:
        cluster.wait_unsealed(node)
    leader = cluster.wait_for_leader(15)
    after = leader.client(cluster.root_token).secrets.kv.v2.read_secret_version(
        path="app/flask", mount_point="secret", raise_on_deleted_version=True
    )["data"]["data"]
    assert after == before

    # Lost unsealer: a restarted node cannot decrypt its root key. It never serves unsealed,
    # and its log says which seal failed and where it tried.
    unsealer.stop()
    node = cluster.nodes[2]
    node.stop()
    node.spawn()
    assert node.proc is not None
    started = time.monotonic()
    while node.proc.poll() is None:
        assert time.monotonic() - started < SEAL_FAILURE_LIMIT, "still retrying the seal"
        assert not _serves_unsealed(node), "unsealed without its unsealer"
        time.sleep(0.5)
    assert node.proc.returncode != 0
    log = node.server_log.read_text(errors="replace")
    assert 'Error configuring seal "transit"' in log and unsealer.addr in log

    # The unsealer back (its own keys unseal it; the seal token is kept): the node starts.
    unsealer.start()
    rerun = unsealer.run_script("init-unsealer.sh")
    assert rerun.returncode == 0, rerun.stderr
    assert "seal token in" in rerun.stdout and "kept" in rerun.stdout
    node.start()
    cluster.wait_unsealed(node)


def _serves_unsealed(node: OpenBao) -> bool:
    try:
        return not node.client().sys.read_seal_status()["sealed"]
    except requests.RequestException:  # not listening (yet) is the expected answer
        return False


@pytest.mark.parametrize("name", ["vault-unsealer-keys.json", "vault-unsealer-token"])
def test_unsealer_credential_files_are_git_ignored(name: str) -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", name], cwd=REPO, capture_output=True, check=False
    )
    assert ignored.returncode == 0, f"{name} would be committed"
