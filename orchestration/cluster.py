"""Unsealing, joining and electing in either mode: a node's unseal, the HA join, the leader,
the voters (the Compose nodes are reached on their published loopback ports)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from orchestration.console import say
from orchestration.context import Run
from orchestration.scripts import run_vault_script
from orchestration.vault_api import Vault, find_leader


@dataclass(frozen=True)
class Cluster:
    """The node addresses of a run (node 1 first) and the files the scripts use."""

    run: Run
    addrs: list[str]
    keys_file: Path
    project_dir: Path

    def vaults(self, token: str = "") -> list[Vault]:
        return [self.run.vault(addr, token) for addr in self.addrs]

    def unseal_node(self, addr: str) -> None:
        """unseal-vault.sh for one node. With auto-unseal it only waits: a joining node
        retries its join every few seconds before it can unseal itself."""
        env = {
            "VAULT_BIN": self.run.require_bao(),
            "PROJECT_DIR": str(self.project_dir),
            "VAULT_ADDR": addr,
            "VAULT_KEYS_FILE": str(self.keys_file),
            "AUTO_UNSEAL_WAIT": "120",
        }
        run_vault_script(str(self.run.root), "unseal-vault.sh", env)

    def join(self) -> None:
        """Nodes 2 and 3 join node 1 through retry_join once it is initialized."""
        if not self.run.ha:
            return
        for number, vault in enumerate(self.vaults()[1:], start=2):
            for _ in range(60):
                if vault.seal_status().get("initialized"):
                    break
                time.sleep(0.5)
            say(
                f"vault-{number}: joining the cluster and unsealing (vault/scripts/unseal-vault.sh)"
            )
            self.unseal_node(vault.addr)

    def unseal_all(self) -> None:
        """A re-run of a cluster that was set up: every node unsealed before anything talks
        to it (node 1 alone unsealed is one vote of three: no leader, no write)."""
        self.run.active_node = 1
        if not self.run.ha or not non_empty(self.keys_file):
            return
        for number, vault in enumerate(self.vaults(), start=1):
            seal = vault.seal_status()
            if seal.get("sealed") and seal.get("initialized"):
                say(f"vault-{number}: unsealing (vault/scripts/unseal-vault.sh)")
                self.unseal_node(vault.addr)
        self.wait_for_leader()

    def wait_for_leader(self) -> None:
        leader = find_leader(self.vaults())
        if leader is None:
            say("!!! no Vault node became active within 30 s (./setup.sh --status shows each node)")
            return
        self.run.active_node = leader + 1
        say(f"Vault cluster: vault-{leader + 1} is the active node")

    def wait_for_voters(self, token: str) -> None:
        """Autopilot makes a joined node a voter once it has been healthy a while; until then
        losing the leader leaves no quorum. Said, not fatal."""
        if not self.run.ha:
            return
        voters = None
        for _ in range(120):
            voters = self.run.vault(self.addrs[0], token).voters()
            if voters == len(self.addrs):
                say(f"Raft: {voters} voters")
                return
            time.sleep(0.5)
        say(f"!!! Raft: {voters if voters is not None else '?'} of {len(self.addrs)} nodes vote "
            "after 60 s: the cluster cannot lose its leader yet (./setup.sh --status)")  # fmt: skip


def non_empty(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def read_token(path: Path) -> str:
    """The first line of a token file, or "" when there is none."""
    try:
        return path.read_text(encoding="utf-8").splitlines()[0].strip()
    except (OSError, IndexError):
        return ""
