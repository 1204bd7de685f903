"""The Docker engine and images for tests marked `docker` (run by `make test-docker`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from orchestration.compose import APP_FILE, VAULT_FILE, Compose
from tests.docker import engine
from tests.harness.servers import free_port

ROOT = engine.ROOT


@pytest.fixture(scope="session")
def docker_images() -> Iterator[list[str]]:
    """Tools, a running engine, the stand-ins; stops dockerd afterwards if we started it."""
    if os.geteuid() != 0 and not engine.engine_answers():
        pytest.fail("the Docker tests need root (apt-get, dockerd) or a running Docker engine")
    started, report = engine.prepare()
    print("\n".join(report))
    try:
        yield report
    finally:
        if started:
            engine.stop_engine()


def compose_cmd() -> list[str]:
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"]


@dataclass
class Project:
    """A copy of the project (tracked files, the worktree's .venv linked) on free ports.

    `name` empty: the default Compose projects (flask-vault-app, vault; networks vault_net,
    vault_db_net), as the docs give them; else NAME and NAME-vault, as `setup.sh -p NAME`.
    """

    root: Path
    env: dict[str, str] = field(default_factory=dict)
    name: str = ""
    # Run with --tls: users reach the front at https://127.0.0.1:HTTPS_PORT (see `url`).
    https: bool = False

    @property
    def stacks(self) -> Compose:
        """setup.sh's naming of both stacks (the files are named per call below)."""
        return Compose(self.root, (), self.name, False, False, 0, 0)

    @property
    def app_project(self) -> str:
        return self.stacks.app_project

    @property
    def vault_project(self) -> str:
        return self.stacks.vault_project

    def sh(
        self, *args: str, timeout: float = 600, check: bool = True, stdin: str | None = None
    ) -> str:
        done = subprocess.run(
            list(args), cwd=self.root, env=self.env, capture_output=True, text=True,
            timeout=timeout, check=False, input=stdin,
        )  # fmt: skip
        output = done.stdout + done.stderr
        if check:
            assert done.returncode == 0, f"{' '.join(args)}:\n{output[-4000:]}"
        return output

    def compose(
        self, project: str, *args: str, check: bool = True, stdin: str | None = None
    ) -> str:
        """Compose on the Vault stack (`project` "vault") or the app stack (anything else)."""
        file = VAULT_FILE if project == "vault" else APP_FILE
        name = self.vault_project if project == "vault" else self.app_project
        self.env["VAULT_STACK"] = self.vault_project
        return self.sh(*compose_cmd(), "-p", name, "-f", file, *args, check=check, stdin=stdin)

    @property
    def url(self) -> str:
        if self.https:
            return f"https://127.0.0.1:{self.env['HTTPS_PORT']}"
        return f"http://127.0.0.1:{self.env['HTTP_PORT']}"

    def down(self) -> None:
        self.compose("app", "down", "-v", "--remove-orphans", check=False)
        self.compose("vault", "down", "-v", "--remove-orphans", check=False)


def copy_project(name: str = "") -> Project:
    """The tracked files copied to a temp dir; `name`: the Compose project name (see Project)."""
    base = Path(tempfile.mkdtemp(prefix="docker-test-"))
    base.chmod(0o755)
    root = base / "project"
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for tracked in filter(None, (f.decode() for f in files)):
        if (ROOT / tracked).is_file():
            (root / tracked).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / tracked, root / tracked)
    (root / ".venv").symlink_to(ROOT / ".venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "COMPOSE_"))}
    env.update(
        VAULT_PORT=str(free_port()), HTTP_PORT=str(free_port()), HTTPS_PORT=str(free_port()),
        READY_TIMEOUT="180",
    )  # fmt: skip
    stack = Project(root=root, env=env, name=name)
    stack.down()  # a run killed half-way may have left the same-name projects behind
    return stack


def remove_project(stack: Project) -> None:
    stack.down()
    shutil.rmtree(stack.root.parent, ignore_errors=True)


@pytest.fixture
def project(docker_images: list[str]) -> Iterator[Project]:
    """A checkout with the default project names."""
    stack = copy_project()
    try:
        yield stack
    finally:
        remove_project(stack)


@pytest.fixture
def named_project(docker_images: list[str]) -> Iterator[Project]:
    """A checkout run as `setup.sh -p fvtest` (projects fvtest and fvtest-vault)."""
    stack = copy_project("fvtest")
    try:
        yield stack
    finally:
        remove_project(stack)
