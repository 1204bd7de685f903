"""vault/scripts/lib.py, the scripts' own helpers, imported rather than copied.

The scripts stay bash that operators run by hand; the file writes, .env edits and status
lines they share with setup.sh live once, in lib.py, loaded here by path (vault/scripts is
not a package). Its Fail becomes our SetupError.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from orchestration.console import SetupError

LIB = Path(__file__).resolve().parents[1] / "vault" / "scripts" / "lib.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vault_scripts_lib", LIB)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


lib = _load()


def _call(function: Callable[..., Any], *args: Any) -> Any:
    try:
        return function(*args)
    except lib.Fail as failure:
        raise SetupError(str(failure)) from None


def atomic_write(dest: Path, text: str, mode: int = 0o600) -> None:
    """Write text to dest with `mode` via a temp file and a rename."""
    _call(lib.atomic_write, dest, text, mode)


def env_upsert(path: Path, updates: dict[str, str]) -> None:
    """Set KEY=VALUE lines in a .env file, keeping every other line."""
    _call(lib.upsert_env, path, updates)


def secret_id_expiry(answer: dict[str, Any], warn_days: float) -> str:
    """The status line of a secret-id/lookup answer."""
    return str(lib.secret_id_expiry(answer, warn_days))
