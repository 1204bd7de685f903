"""One validated set of options for a run, and the environment settings it reads."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from orchestration.console import SetupError

ROOT = Path(__file__).resolve().parents[1]
VERBS = ("up", "stop", "status", "restart-app", "backup", "restore", "reset")
MODES = ("local", "docker")
TLS_CHOICES = ("tls", "mtls", "off")
MAX_REPLICAS = 16
PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def parse_replicas(text: str) -> int:
    """A whole number from 1 to 16, written without sign or leading zero."""
    if not re.fullmatch(r"[1-9][0-9]*", text) or int(text) > MAX_REPLICAS:
        raise SetupError(f"--replicas takes a whole number from 1 to {MAX_REPLICAS}, not '{text}'")
    return int(text)


def check_project_name(name: str) -> str:
    if not PROJECT_NAME.match(name):
        raise SetupError(
            f"project name '{name}': lowercase letters, digits, '-' and '_' only, "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class Options:
    """What this run was asked to do; None means: what the data dir remembers."""

    verb: str = "up"
    mode: str | None = None
    replicas: int | None = None
    ha: bool = False
    auto_unseal: bool = False
    tls: str | None = None
    modsecurity: bool = False
    no_apache: bool = False
    sqlite: bool = False
    yes: bool = False
    stop_vault_only: bool = False
    backup_dir: str | None = None
    restore_dir: str | None = None
    project_name: str = ""

    def __post_init__(self) -> None:
        if self.verb not in VERBS:
            raise SetupError(f"unknown command '{self.verb}' (see --help)")
        if self.mode not in (None, *MODES):
            raise SetupError(f"unknown mode '{self.mode}'")
        if self.tls not in (None, *TLS_CHOICES):
            raise SetupError(f"unknown TLS choice '{self.tls}'")
        if self.replicas is not None:
            parse_replicas(str(self.replicas))

    def refuse_local_only_options(self) -> None:
        """Docker mode has no transit unsealer and no client certificates for Vault."""
        if self.auto_unseal:
            raise SetupError(
                "--auto-unseal is a local-mode option; for the Compose stacks see "
                "VAULT_INTEGRATION.md, Production topology"
            )
        if self.tls == "mtls":
            raise SetupError(
                "--mtls is a local-mode option; with Docker use --tls (the backend trusts the "
                "project's CA)"
            )


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name) or str(default)
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise SetupError(f"{name} must be a TCP port number, got '{text}'")
    return int(text)


def _number(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name) or str(default)
    if not text.isdigit():
        raise SetupError(f"{name} must be a whole number, got '{text}'")
    return int(text)


@dataclass(frozen=True)
class Settings:
    """Where things live and listen: the environment's overrides of the defaults."""

    root: Path
    data_dir: Path
    venv: Path
    vault_port: int
    vault_cluster_port: int
    unsealer_port: int
    pg_port: int
    http_port: int
    https_port: int
    system_redis_port: int
    redis_port: int
    redis_server: str
    ready_timeout: int

    @classmethod
    def from_environ(cls, env: Mapping[str, str] = os.environ, root: Path = ROOT) -> Settings:
        vault_port = _port(env, "VAULT_PORT", 8200)
        return cls(
            root=root,
            data_dir=Path(env.get("DATA_DIR") or root / ".data"),
            venv=Path(env.get("VENV") or root / ".venv"),
            vault_port=vault_port,
            vault_cluster_port=_port(env, "VAULT_CLUSTER_PORT", vault_port + 1),
            unsealer_port=_port(env, "UNSEALER_PORT", vault_port + 10),
            pg_port=_port(env, "PG_PORT", 5433),
            http_port=_port(env, "HTTP_PORT", 8080),
            https_port=_port(env, "HTTPS_PORT", 8443),
            system_redis_port=_port(env, "SYSTEM_REDIS_PORT", 6379),
            redis_port=_port(env, "REDIS_PORT", 6380),
            redis_server=env.get("REDIS_SERVER") or "redis-server",
            ready_timeout=_number(env, "READY_TIMEOUT", 90),
        )
