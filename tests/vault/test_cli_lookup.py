"""With no Vault CLI on PATH the scripts use the project's .venv/bin/bao, or say how to get one."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "vault" / "scripts"
BAO = ROOT / ".venv" / "bin" / "bao"
BARE_PATH = "/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"  # no .venv/bin, no vault


def unseal(project: Path) -> subprocess.CompletedProcess[str]:
    """The project's own copy of the scripts, as a user runs them, against a closed port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    env.update(PATH=BARE_PATH, VAULT_ADDR=f"http://127.0.0.1:{free_port()}")
    env.pop("PROJECT_DIR", None)
    return subprocess.run(
        [str(project / "vault" / "scripts" / "unseal-vault.sh")],
        env=env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


@pytest.fixture
def project(tmp_path: Path) -> Path:
    if shutil.which("vault", path=BARE_PATH) or shutil.which("bao", path=BARE_PATH):
        pytest.fail("a vault/bao CLI is on the system PATH: this test needs a machine without")
    shutil.copytree(SCRIPTS, tmp_path / "vault" / "scripts")
    return tmp_path


def test_scripts_find_the_projects_venv_bao(project: Path) -> None:
    (project / ".venv" / "bin").mkdir(parents=True)
    (project / ".venv" / "bin" / "bao").symlink_to(BAO)
    done = unseal(project)
    assert done.returncode != 0
    assert "cannot reach Vault" in done.stderr  # the CLI ran: it is the server that is missing


def test_scripts_say_how_to_get_a_cli(project: Path) -> None:
    done = unseal(project)
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1 and "make install" in done.stderr, done.stderr
