"""What a data dir remembers between runs: one versioned JSON file.

Earlier versions of setup.sh kept seven loose files instead; `load` reads them once, writes
state.json and removes them, so --status, --stop and a bare re-run see the same shape.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from orchestration.console import SetupError
from orchestration.vault_scripts import atomic_write

VERSION = 1
FILE_NAME = "state.json"
# The loose files of setup.sh before state.json (paths relative to the data dir).
LEGACY_FILES = (
    "mode",
    "topology",
    "tls-mode",
    "replicas",
    "compose-project",
    "vault/configured",
    "run/front-url",
)


@dataclass
class State:
    """Each field is what the last run used; empty or None: never chosen."""

    mode: str = ""
    ha: bool = False
    auto_unseal: bool = False
    tls: str = ""
    replicas: int | None = None
    project_name: str = ""
    # sha256 of what init-vault.sh configures from (policies, scripts): changed means re-run it.
    vault_config_digest: str = ""
    front_url: str = ""
    version: int = VERSION


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError):
        return ""


def from_legacy(data_dir: Path) -> State | None:
    """The state the loose files describe, or None when there are none."""
    if not any((data_dir / name).exists() for name in LEGACY_FILES):
        return None
    topology = _read(data_dir / "topology").split()
    replicas = _read(data_dir / "replicas")
    return State(
        mode=_read(data_dir / "mode"),
        ha="ha" in topology,
        auto_unseal="auto-unseal" in topology,
        tls=_read(data_dir / "tls-mode"),
        replicas=int(replicas) if replicas.isdigit() else None,
        project_name=_read(data_dir / "compose-project"),
        vault_config_digest=_read(data_dir / "vault" / "configured"),
        front_url=_read(data_dir / "run" / "front-url"),
    )


def from_json(text: str, path: Path) -> State:
    try:
        data = json.loads(text)
    except ValueError:
        raise SetupError(f"{path} is not valid JSON: fix or delete it") from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise SetupError(f"{path}: unknown state version (this setup.sh reads {VERSION})")
    known = {field.name for field in fields(State)}
    return State(**{key: value for key, value in data.items() if key in known})


def save(data_dir: Path, state: State) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(asdict(state), indent=2, sort_keys=True) + "\n"
    atomic_write(data_dir / FILE_NAME, text, 0o600)


def load(data_dir: Path) -> State:
    """The data dir's state (migrated from the loose files once); a fresh one if none."""
    path = data_dir / FILE_NAME
    if path.exists():
        return from_json(path.read_text(encoding="utf-8"), path)
    legacy = from_legacy(data_dir)
    if legacy is None:
        return State()
    save(data_dir, legacy)
    for name in LEGACY_FILES:
        with contextlib.suppress(FileNotFoundError):
            (data_dir / name).unlink()
    return legacy
