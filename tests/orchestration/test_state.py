"""The data dir's state file, and the one-time migration of the old loose files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestration import state
from orchestration.console import SetupError


def test_loose_files_are_migrated_once(tmp_path: Path) -> None:
    (tmp_path / "vault").mkdir()
    (tmp_path / "run").mkdir()
    for name, text in {"mode": "docker", "topology": "ha auto-unseal", "tls-mode": "tls",
                       "replicas": "3", "compose-project": "two", "vault/configured": "abc",
                       "run/front-url": "https://127.0.0.1:8443"}.items():  # fmt: skip
        (tmp_path / name).write_text(text + "\n")
    loaded = state.load(tmp_path)
    assert loaded == state.State(mode="docker", ha=True, auto_unseal=True, tls="tls", replicas=3,
                                 project_name="two", vault_config_digest="abc",
                                 front_url="https://127.0.0.1:8443")  # fmt: skip
    assert not [name for name in state.LEGACY_FILES if (tmp_path / name).exists()]
    assert json.loads((tmp_path / "state.json").read_text())["version"] == state.VERSION
    assert (tmp_path / "state.json").stat().st_mode & 0o077 == 0
    assert state.load(tmp_path) == loaded


def test_a_fresh_data_dir_writes_nothing(tmp_path: Path) -> None:
    assert state.load(tmp_path / "none") == state.State()
    assert not (tmp_path / "none").exists()


def test_an_unknown_version_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text('{"version": 99}')
    with pytest.raises(SetupError, match="unknown state version"):
        state.load(tmp_path)
