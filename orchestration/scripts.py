"""Running vault/scripts/*.sh (and other tools) with their output indented under ours."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from orchestration.console import SetupError

RESUME_HINT = "fix the cause and re-run ./setup.sh: it resumes where it stopped"


def child_env(extra: Mapping[str, str], drop: Sequence[str] = ()) -> dict[str, str]:
    """Our environment plus `extra`, without the names in `drop`."""
    env = {key: value for key, value in os.environ.items() if key not in drop}
    env.update(extra)
    return env


def run_indented(
    argv: Sequence[str],
    extra_env: Mapping[str, str],
    failure: str,
    drop: Sequence[str] = (),
    stdin: str | None = None,
    cwd: Path | None = None,
) -> None:
    """Run argv, each line of its stdout indented by two spaces as it comes; stderr as is.
    `stdin`: what it reads (secrets go this way, never in argv)."""
    proc = subprocess.Popen(
        list(argv),
        env=child_env(extra_env, drop),
        stdin=None if stdin is None else subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )
    assert proc.stdout is not None
    if proc.stdin is not None:
        with contextlib.suppress(BrokenPipeError), proc.stdin:
            proc.stdin.write(stdin or "")
    with proc.stdout:
        for line in proc.stdout:
            sys.stdout.write(f"  {line}")
            sys.stdout.flush()
    if proc.wait() != 0:
        raise SetupError(failure)


def run_vault_script(root: str, script: str, env: Mapping[str, str], *args: str) -> None:
    """vault/scripts/SCRIPT against our own server: its keys file holds the token, whatever
    VAULT_TOKEN the shell has."""
    run_indented(
        [f"{root}/vault/scripts/{script}", *args],
        env,
        f"{script} failed (its message is above); {RESUME_HINT}",
        drop=("VAULT_TOKEN",),
    )
