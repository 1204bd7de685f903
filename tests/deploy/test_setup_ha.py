"""`./setup.sh --local --ha`: three OpenBao nodes on loopback, as a user runs them (issue 13).

With --tls and --auto-unseal: the app over Apache HTTPS, --status with each node's role and
seal, the leader killed while the app serves, a re-run bringing it back. With a Shamir seal:
every node stopped and the operator token dead, a re-run unseals all three and generates its
root token on the active node."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from collections.abc import Callable

import hvac
import pytest
import requests

from tests.deploy.test_setup_local import (  # noqa: F401  (local_stack is a fixture)
    LocalStack,
    local_stack,
    login,
)
from tests.deploy.test_setup_tls import https_login, tls_files
from tests.harness.servers import free_port
from tests.harness.tls_scan import mozilla_intermediate_issues

pytestmark = pytest.mark.topology

# setup.sh's layout: node N on VAULT_PORT + 2(N-1), its cluster port one above, the unsealer
# on VAULT_PORT + 10 and + 11.
PORT_OFFSETS = (0, 1, 2, 3, 4, 5, 10, 11)
NODE_LINE = re.compile(r"^  vault-(\d):\s+(.*)$", re.M)


def free_port_block() -> int:
    """A VAULT_PORT whose every port of the HA layout is free."""
    while True:
        base = free_port()
        if base + max(PORT_OFFSETS) > 65535:
            continue
        try:
            for offset in PORT_OFFSETS:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        return base


def use_ha_ports(stack: LocalStack) -> None:
    base = free_port_block()
    stack.env.update(VAULT_PORT=str(base), VAULT_CLUSTER_PORT=str(base + 1))


def node_states(stack: LocalStack) -> dict[int, str]:
    """`./setup.sh --status`'s line for each node, by node number."""
    done = stack.run("--status", timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return {int(n): line for n, line in NODE_LINE.findall(done.stdout)}


def leader_of(states: dict[int, str]) -> int | None:
    leaders = [n for n, line in states.items() if line.endswith(", leader")]
    assert len(leaders) <= 1, states
    return leaders[0] if leaders else None


def assert_whole_cluster(states: dict[int, str], seal: str) -> int:
    """Three nodes running and unsealed with `seal`, one leader and two standbys."""
    assert sorted(states) == [1, 2, 3], states
    for line in states.values():
        assert line.startswith("running (pid "), states
        assert f", seal {seal}, unsealed, " in line, states
    assert sorted(line.rsplit(", ", 1)[1] for line in states.values()) == [
        "leader",
        "standby",
        "standby",
    ], states
    leader = leader_of(states)
    assert leader is not None
    return leader


def wait_for_states(
    stack: LocalStack, done: Callable[[dict[int, str]], bool], timeout: float
) -> dict[int, str]:
    deadline = time.monotonic() + timeout
    states = node_states(stack)
    while not done(states):
        assert time.monotonic() < deadline, f"after {timeout} s: {states}"
        time.sleep(1)
        states = node_states(stack)
    return states


def node_pid(stack: LocalStack, node: int) -> int:
    name = "vault.pid" if node == 1 else f"vault-{node}.pid"
    return int((stack.data_dir / "run" / name).read_text())


def node_addresses(stack: LocalStack, scheme: str) -> list[str]:
    base = int(stack.env["VAULT_PORT"])
    return [f"{scheme}://127.0.0.1:{base + 2 * n}" for n in range(3)]


def admin_password_over_tls(stack: LocalStack) -> str:
    client = hvac.Client(
        url=node_addresses(stack, "https")[0],
        token=stack.operator_token(),
        verify=str(tls_files(stack) / "ca.pem"),
    )
    secret = client.secrets.kv.v2.read_secret_version(
        path="app/flask", mount_point="secret", raise_on_deleted_version=True
    )
    return str(secret["data"]["data"]["admin_password"])


def assert_app_serves(admin: requests.Session, url: str, rounds: int) -> None:
    """A bounded number of requests, each answered 200 (the app reads Vault or its cache)."""
    for _ in range(rounds):
        for path in ("/api/ready", "/api/auth/me", "/api/users", "/api/admin/vault/status"):
            response = admin.get(url + path, timeout=10)
            assert response.status_code == 200, (path, response.status_code, response.text)


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_setup_ha_tls_auto_unseal_survives_a_killed_leader(local_stack: LocalStack) -> None:  # noqa: F811
    stack = local_stack
    use_ha_ports(stack)
    stack.env["HTTPS_PORT"] = str(free_port())
    options = ("--ha", "--tls", "--auto-unseal")
    output = stack.up(*options)
    url = f"https://127.0.0.1:{stack.env['HTTPS_PORT']}"
    ca = str(tls_files(stack) / "ca.pem")
    assert f"Ready: {url}" in output
    # With auto-unseal vault-keys.json holds recovery keys, and the summary says so.
    keys = stack.data_dir / "vault-keys.json"
    assert (
        f"Recovery keys (auto-unseal: they generate a root token, they do not unseal): {keys}"
        in output
    )
    assert "Unseal keys:" not in output
    # setup.sh waits until autopilot lets the joined nodes vote: only then can the two
    # survivors of a lost leader elect a new one.
    assert "\nRaft: 3 voters\n" in output
    assert "  raft:     3 of 3 nodes vote" in stack.run("--status").stdout

    env_file = (stack.data_dir / ".env").read_text()
    assert f"VAULT_ADDR={','.join(node_addresses(stack, 'https'))}\n" in env_file
    leader = assert_whole_cluster(node_states(stack), "transit")
    # Each node's listener and the front, scanned as `sslyze --mozilla_config=intermediate`.
    for port in [int(a.rsplit(":", 1)[1]) for a in node_addresses(stack, "https")] + [
        int(stack.env["HTTPS_PORT"])
    ]:
        assert mozilla_intermediate_issues(port, tls_files(stack) / "ca.pem") == {}, port

    admin = https_login(url, ca, "admin", admin_password_over_tls(stack))
    assert admin.get(f"{url}/api/admin/vault/status", timeout=10).json()["source"] == "vault"

    # The leader's bao dies (no graceful step-down): the app keeps answering, another node leads.
    os.kill(node_pid(stack, leader), signal.SIGKILL)
    assert_app_serves(admin, url, rounds=3)
    states = wait_for_states(stack, lambda s: leader_of(s) not in (None, leader), timeout=60)
    assert states[leader].startswith("stopped"), states
    assert_app_serves(admin, url, rounds=2)
    # A backup while a node (often node 1, the first leader) is down: from the new leader.
    backup = stack.run("--backup", str(stack.data_dir.parent / "backups"), timeout=120)
    assert backup.returncode == 0, backup.stdout + backup.stderr
    assert f"Vault cluster: vault-{leader_of(states)} is the active node" in backup.stdout
    assert "Vault: Raft snapshot in " in backup.stdout

    # A re-run (no terminal, no keys typed) starts the dead node; it rejoins as a standby.
    rerun = stack.up(*options)
    assert f"Vault cluster: vault-{leader_of(states)} is the active node" in rerun
    states = wait_for_states(stack, lambda s: s[leader].endswith(", standby"), timeout=30)
    assert_whole_cluster(states, "transit")
    https_login(url, ca, "admin", admin_password_over_tls(stack))


@pytest.mark.slow
@pytest.mark.timeout(420)
@pytest.mark.needs(apache=False, postgres=False)
def test_setup_ha_rerun_after_every_node_stopped_and_the_operator_token_dead(
    local_stack: LocalStack,  # noqa: F811
) -> None:
    """Shamir seal: after `--stop vault` a re-run must unseal all three nodes before it asks
    the cluster anything (node 1 alone has no quorum: generate-root answered HTTP 500 "active
    cluster node not found"), then make its root token on the active node's private socket."""
    stack = local_stack
    use_ha_ports(stack)
    output = stack.up("--ha", "--no-apache", "--sqlite")
    assert f"Unseal keys: {stack.data_dir / 'vault-keys.json'}" in output
    assert "\nRaft: 3 voters\n" in output
    assert_whole_cluster(node_states(stack), "shamir")

    done = stack.run("--stop", "vault")
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(line.startswith("stopped") for line in node_states(stack).values())
    # A token Vault no longer accepts, as after its TTL.
    token_file = stack.data_dir / "vault-operator-token"
    old_token = stack.operator_token()
    token_file.write_text(old_token[:-4] + ("aaaa" if not old_token.endswith("aaaa") else "bbbb"))

    again = stack.up("--no-apache")  # not remembered: without it the Apache front would start
    assert "root token for this run: generated from the unseal keys" in again, again
    assert re.search(r"^Vault cluster: vault-\d is the active node$", again, re.M), again
    assert_whole_cluster(node_states(stack), "shamir")
    assert stack.operator_token() != old_token
    assert "operator token: valid" in stack.run("--status").stdout
    password = hvac.Client(url=node_addresses(stack, "http")[1], token=stack.operator_token())
    admin_password = password.secrets.kv.v2.read_secret_version(
        path="app/flask", mount_point="secret", raise_on_deleted_version=True
    )["data"]["data"]["admin_password"]
    login(stack.url, "admin", str(admin_password))
