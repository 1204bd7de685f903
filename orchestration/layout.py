"""Where each piece lives and listens: data dir paths, Vault nodes and their ports.

Node 1 is the single-node layout (vault/, vault.pid, VAULT_PORT), so a data dir grows from
one node to three without moving anything; nodes 2 and 3 sit beside it on VAULT_PORT+2 and
+4, each with its cluster port one above.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HA_NODES = 3


@dataclass(frozen=True)
class Layout:
    """The files of one local-mode data dir."""

    data_dir: Path

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def vault_dir(self) -> Path:
        return self.data_dir / "vault"

    @property
    def pg_data(self) -> Path:
        return self.data_dir / "postgres"

    @property
    def pg_socket_dir(self) -> Path:
        return self.run_dir / "postgres"

    @property
    def keys_file(self) -> Path:
        return self.data_dir / "vault-keys.json"

    @property
    def operator_token_file(self) -> Path:
        return self.data_dir / "vault-operator-token"

    @property
    def env_file(self) -> Path:
        return self.data_dir / ".env"

    @property
    def secrets_dir(self) -> Path:
        return self.data_dir / "secrets"

    @property
    def redis_dir(self) -> Path:
        return self.data_dir / "redis"

    @property
    def unsealer_dir(self) -> Path:
        return self.data_dir / "unsealer"

    @property
    def audit_log(self) -> Path:
        # One audit file for every node: Raft replicates the audit table, paths must match.
        return self.vault_dir / "logs" / "audit.log"

    @property
    def sqlite_db(self) -> Path:
        return self.data_dir / "app.db"


@dataclass(frozen=True)
class Node:
    """One Vault server of the local topology."""

    number: int
    port: int
    cluster_port: int
    addr: str
    dir: Path
    pid_file: Path
    log: Path
    socket_dir: Path

    @property
    def name(self) -> str:
        return f"vault-{self.number}"

    @property
    def socket(self) -> Path:
        return self.socket_dir / "vault.sock"


def node(layout: Layout, number: int, vault_port: int, cluster_port: int, scheme: str) -> Node:
    """Node `number` (1-based): node 1 is where the single-node server always lived."""
    port = vault_port + 2 * (number - 1)
    addr = f"{scheme}://127.0.0.1:{port}"
    if number == 1:
        return Node(1, port, cluster_port, addr, layout.vault_dir, layout.run_dir / "vault.pid",
                    layout.log_dir / "vault.log", layout.run_dir / "vault")  # fmt: skip
    return Node(
        number,
        port,
        port + 1,
        addr,
        layout.data_dir / f"vault-{number}",
        layout.run_dir / f"vault-{number}.pid",
        layout.log_dir / f"vault-{number}.log",
        layout.run_dir / f"vault-{number}",
    )


def nodes(layout: Layout, ha: bool, vault_port: int, cluster_port: int, scheme: str) -> list[Node]:
    return [
        node(layout, number, vault_port, cluster_port, scheme)
        for number in range(1, (HA_NODES if ha else 1) + 1)
    ]


def docker_vault_addr(ha: bool, scheme: str) -> str:
    """The backend's VAULT_ADDR in Compose: the containers' names on vault_net."""
    if ha:
        return ",".join(f"{scheme}://vault-{n}:8200" for n in range(1, HA_NODES + 1))
    return f"{scheme}://vault:8200"


def published_node_addrs(ha: bool, vault_port: int, scheme: str) -> list[str]:
    """Where the host reaches each Compose node: VAULT_PORT, +2, +4 on loopback."""
    count = HA_NODES if ha else 1
    return [f"{scheme}://127.0.0.1:{vault_port + 2 * n}" for n in range(count)]
