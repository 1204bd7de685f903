"""The few Vault HTTP calls orchestration makes itself (status, leader, voters, a token's
validity, one KV read), with the run's TLS trust. Everything that configures Vault is done by
vault/scripts/*.sh."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from orchestration.console import SetupError

TIMEOUT = 3


class VaultUnreachable(SetupError):
    """Nothing answered, or not with JSON (uncaught, it is one clear error line)."""


@dataclass(frozen=True)
class Vault:
    """One Vault (OpenBao) node's API, with a token or none."""

    addr: str
    context: ssl.SSLContext | None = None
    token: str = ""

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """The JSON answer (an error status's too); VaultUnreachable when there is none."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.addr}/v1/{path}", data=data, method=method)
        if self.token:
            request.add_header("X-Vault-Token", self.token)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT, context=self.context) as answer:
                return dict(json.load(answer))
        except urllib.error.HTTPError as error:
            try:
                return {"status": error.code, **json.load(error)}
            except ValueError:
                return {"status": error.code}
        except (OSError, ValueError) as error:
            raise VaultUnreachable(f"Vault at {self.addr} did not answer ({error})") from None

    def ok(self, method: str, path: str, body: dict[str, Any] | None = None) -> bool:
        try:
            return "status" not in self.call(method, path, body)
        except VaultUnreachable:
            return False

    def seal_status(self) -> dict[str, Any]:
        """sys/seal-status ({} when nothing answers): initialized, sealed, type."""
        try:
            return self.call("GET", "sys/seal-status")
        except VaultUnreachable:
            return {}

    def is_leader(self) -> bool | None:
        try:
            return bool(self.call("GET", "sys/leader").get("is_self"))
        except VaultUnreachable:
            return None

    def voters(self) -> int | None:
        """How many Raft peers vote (None when Vault does not say)."""
        try:
            return count_voters(self.call("GET", "sys/storage/raft/configuration"))
        except VaultUnreachable:
            return None

    def kv_get(self, path: str) -> dict[str, Any]:
        answer = self.call("GET", f"secret/data/{path}")
        return dict((answer.get("data") or {}).get("data") or {})


def count_voters(answer: dict[str, Any]) -> int | None:
    """Voters in a raft configuration answer (the API's or `operator raft list-peers`')."""
    try:
        return sum(bool(server.get("voter")) for server in answer["data"]["config"]["servers"])
    except (KeyError, TypeError):
        return None


def role_line(seal: dict[str, Any], leader: bool | None) -> str:
    """`seal shamir, unsealed, leader` as --status prints each node."""
    if not seal:
        return "unreachable"
    if seal.get("sealed"):
        return f"seal {seal.get('type')}, sealed"
    role = {True: ", leader", False: ", standby", None: ", role unknown"}[leader]
    return f"seal {seal.get('type')}, unsealed{role}"


def node_role(vault: Vault) -> str:
    seal = vault.seal_status()
    leader = vault.is_leader() if seal and not seal.get("sealed") else None
    return role_line(seal, leader)


def find_leader(nodes: Sequence[Vault], timeout: float = 30.0) -> int | None:
    """The index of the node Raft elected, waiting up to timeout seconds for an election."""
    deadline = time.monotonic() + timeout
    while True:
        for index, node in enumerate(nodes):
            if node.is_leader():
                return index
        if time.monotonic() > deadline:
            return None
        time.sleep(0.5)
