"""Cost of a cached secret read vs a direct hvac KV read, against a local `bao server -dev`.

Prints per-read times and how many requests 10,000 reads through the client send to Vault.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path

import hvac

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "be_flask"), str(ROOT)]

from tests.harness.servers import free_port, wait_for_port  # noqa: E402

from src.vault_client import VaultClient, VaultSettings  # noqa: E402

POLICY = 'path "secret/data/bench/*" { capabilities = ["read"] }'


def start_dev_server(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A throwaway in-memory OpenBao with root token "root"."""
    bao = shutil.which("bao") or str(ROOT / ".venv" / "bin" / "bao")
    port = free_port()
    proc = subprocess.Popen(
        [bao, "server", "-dev", "-dev-root-token-id=root", f"-dev-listen-address=127.0.0.1:{port}"],
        stdout=(workdir / "server.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    wait_for_port(port, timeout=20)
    return proc, f"http://127.0.0.1:{port}"


def set_up(addr: str) -> tuple[str, str]:
    """KV secret, policy and AppRole role; returns (role_id, secret_id)."""
    root = hvac.Client(url=addr, token="root")
    deadline = time.monotonic() + 10
    while not root.sys.is_initialized() and time.monotonic() < deadline:
        time.sleep(0.1)
    root.secrets.kv.v2.create_or_update_secret("bench/app", {"jwt_secret": "x" * 64, "n": "1"})
    root.sys.create_or_update_policy("bench", POLICY)
    root.sys.enable_auth_method("approle")
    root.auth.approle.create_or_update_approle("bench", token_policies=["bench"])
    role_id = root.auth.approle.read_role_id("bench")["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id("bench")["data"]["secret_id"]
    return role_id, secret_id


def per_read(func: Callable[[], object], number: int) -> float:
    """Best-of-5 seconds per call."""
    return min(timeit.repeat(func, number=number, repeat=5)) / number


def main() -> None:
    """Measure and print."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-vault-"))
    proc, addr = start_dev_server(workdir)
    try:
        role_id, secret_id = set_up(addr)
        settings = VaultSettings(
            addresses=(addr,), role_id=role_id, secret_id=secret_id, role_name="bench"
        )
        client = VaultClient(settings)
        client.read_secret("bench/app")
        hit = per_read(lambda: client.read_secret("bench/app"), 200_000)
        entries, now = client._entries, time.monotonic
        bare = per_read(lambda: entries["bench/app"].fresh_until > now(), 200_000)

        direct = hvac.Client(url=addr, token="root")
        kwargs = {"path": "bench/app", "mount_point": "secret", "raise_on_deleted_version": True}
        miss = per_read(lambda: direct.secrets.kv.v2.read_secret_version(**kwargs), 200)

        counted = VaultClient(settings)
        for _ in range(10_000):
            counted.read_secret("bench/app")
        sent = counted.adapter.requests_sent
        print(f"cache hit (VaultClient.read_secret):  {hit * 1e9:8.0f} ns/read")
        print(f"  of which dict get + clock compare:  {bare * 1e9:8.0f} ns")
        print(f"direct hvac KV v2 read (HTTP):        {miss * 1e6:8.0f} us/read")
        print(f"speed-up:                             {miss / hit:8.0f}x")
        print(f"Vault requests for 10,000 reads:      {sent:8d} (expected 2: 1 login + 1 KV read)")
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
