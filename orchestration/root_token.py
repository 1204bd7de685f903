"""A root token for one operation that the operator token may not do (a Raft snapshot
restore replaces all of Vault: admin-policy only reads snapshots), made from the unseal (or
recovery) keys with `operator generate-root`, as init-vault.sh does for its bootstrap. It lives
in memory only and is revoked after use; a restore voids it anyway (the snapshot's token
store does not know it)."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

from orchestration.cluster import read_token
from orchestration.console import SetupError
from orchestration.context import Run
from orchestration.restore import key_shares, restore_snapshot
from orchestration.scripts import child_env


def decode_root(otp: str, encoded: str) -> str:
    """generate-root's last encoded_token XOR the attempt's one-time pad."""
    raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
    if not encoded or len(raw) != len(otp):
        raise SetupError("generate-root did not give a root token: not enough unseal keys?")
    return bytes(a ^ b for a, b in zip(raw, otp.encode(), strict=True)).decode()


def _cli(run: Run, addr: str, token: str, *args: str, stdin: str = "") -> dict[str, Any]:
    env = child_env({"VAULT_ADDR": addr, "VAULT_TOKEN": token})
    done = subprocess.run([run.require_bao(), "operator", "generate-root", "-format=json", *args],
                          env=env, input=stdin, capture_output=True, text=True,
                          check=False)  # fmt: skip
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["no message"]
        raise SetupError(f"generate-root refused: {lines[0]}")
    return dict(json.loads(done.stdout or "{}"))


def generate_root(run: Run, addr: str, operator_token: str, keys_file: Path) -> str:
    """The operator token starts the attempt (OpenBao's authenticated variant); the keys,
    each through stdin (never argv), finish it."""
    threshold = int(run.vault(addr).seal_status().get("t") or 0)
    keys = key_shares(keys_file)
    if not 0 < threshold <= len(keys):
        raise SetupError(f"{keys_file} holds {len(keys)} keys; Vault needs {threshold}")
    subprocess.run([run.require_bao(), "operator", "generate-root", "-cancel"],
                   env=child_env({"VAULT_ADDR": addr, "VAULT_TOKEN": operator_token}),
                   capture_output=True, check=False)  # fmt: skip
    attempt = _cli(run, addr, operator_token, "-init")
    step: dict[str, Any] = {}
    for key in keys[:threshold]:
        step = _cli(run, addr, operator_token, f"-nonce={attempt['nonce']}", "-", stdin=key)
    return decode_root(str(attempt.get("otp", "")), str(step.get("encoded_token") or ""))


def revoke(run: Run, addr: str, token: str) -> None:
    """Best effort: after a restore the token no longer exists, which is as good."""
    run.vault(addr, token).ok("POST", "auth/token/revoke-self")


def restore_snapshot_as_root(run: Run, addr: str, snapshot: Path, env: dict[str, str],
                             token_file: Path, keys_file: Path) -> None:  # fmt: skip
    """snapshot.sh restore with a root token made for it and revoked after."""
    root = generate_root(run, addr, read_token(token_file), keys_file)
    try:
        restore_snapshot(run, snapshot, env, root)
    finally:
        revoke(run, addr, root)
