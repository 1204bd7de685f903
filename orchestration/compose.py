"""The Compose command lines: which files go with which flags, one place for all of them.

Two stacks with two lifecycles: the Vault stack (docker-compose.vault.yaml, or the three-node
docker-compose.vault-ha.yaml for --ha) and the app stack (docker-compose.yaml); --tls layers
each one's -tls overlay after it. The project names come from -p NAME (NAME and NAME-vault)
or the defaults flask-vault-app and vault; the files carry no top-level `name:`, which
docker-compose 1.29 rejects.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from orchestration.layout import docker_vault_addr

VAULT_FILE = "docker-compose.vault.yaml"
VAULT_HA_FILE = "docker-compose.vault-ha.yaml"
APP_FILE = "docker-compose.yaml"
# base file -> the overlay --tls puts after it
TLS_OVERLAYS = {
    VAULT_FILE: "docker-compose.vault-tls.yaml",
    VAULT_HA_FILE: "docker-compose.vault-ha-tls.yaml",
    APP_FILE: "docker-compose.tls.yaml",
}
DEFAULT_APP_PROJECT = "flask-vault-app"
DEFAULT_VAULT_PROJECT = "vault"


def stack_files(stack: str, ha: bool, tls: bool) -> list[str]:
    """The -f files of the "vault" or "app" stack, in the order Compose merges them."""
    base = (VAULT_HA_FILE if ha else VAULT_FILE) if stack == "vault" else APP_FILE
    return [base, TLS_OVERLAYS[base]] if tls else [base]


def compose_command() -> list[str]:
    """Compose v2 (`docker compose`) or v1.29 (`docker-compose`); [] when neither works."""
    if shutil.which("docker"):
        done = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if done.returncode == 0:
            return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else []


def engine_works() -> bool:
    """`docker info` answers and some Compose is installed."""
    if not shutil.which("docker"):
        return False
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        return False
    return bool(compose_command())


@dataclass(frozen=True)
class Compose:
    """How to call Compose on either stack of this checkout with this run's flags."""

    root: Path
    command: tuple[str, ...]
    project_name: str
    ha: bool
    tls: bool
    vault_port: int
    https_port: int

    @property
    def app_project(self) -> str:
        return self.project_name or DEFAULT_APP_PROJECT

    @property
    def vault_project(self) -> str:
        return f"{self.project_name}-vault" if self.project_name else DEFAULT_VAULT_PROJECT

    def argv(self, stack: str, *args: str) -> list[str]:
        project = self.vault_project if stack == "vault" else self.app_project
        files = [arg for name in stack_files(stack, self.ha, self.tls)
                 for arg in ("-f", str(self.root / name))]  # fmt: skip
        return [*self.command, "--project-directory", str(self.root), "-p", project, *files, *args]

    def env(self, **extra: str) -> dict[str, str]:
        """What the files substitute: node ports, the backend's Vault address(es), the
        Vault stack's project (the app stack names its external networks after it)."""
        scheme = "https" if self.tls else "http"
        return {
            "VAULT_PORT": str(self.vault_port),
            "VAULT_PORT_1": str(self.vault_port),
            "VAULT_PORT_2": str(self.vault_port + 2),
            "VAULT_PORT_3": str(self.vault_port + 4),
            "BACKEND_VAULT_ADDR": docker_vault_addr(self.ha, scheme),
            "HTTPS_PORT": str(self.https_port),
            "VAULT_STACK": self.vault_project,
            **extra,
        }

    def vault_files_label(self) -> str:
        """The Vault stack's files as the user reads them: `a.yaml + a-tls.yaml`."""
        return " + ".join(stack_files("vault", self.ha, self.tls))
