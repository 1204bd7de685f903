"""The CI entry point turns on CI mode itself, so a missing server can never skip quietly."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def test_ci_run_exports_ci_true_to_the_test_command(tmp_path: Path) -> None:
    """Run .ci/run with its tools stubbed and no CI in the caller's environment."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    seen = tmp_path / "ci-seen"
    stub(bin_dir, "dpkg", "exit 0")  # every apt package "installed"
    stub(bin_dir, "redis-cli", "exit 0")  # Redis "running"
    stub(bin_dir, "make", f'printf "%s" "${{CI-unset}}" > "{seen}"')
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    result = subprocess.run(
        [str(ROOT / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert seen.read_text() == "true"
