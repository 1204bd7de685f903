"""Port derivation from the environment, and the status lines that need no server."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestration.backends import Replica, known_replicas
from orchestration.console import SetupError
from orchestration.context import new_run
from orchestration.local_status import operator_token_state, secret_id_state
from orchestration.options import Options, Settings
from orchestration.process import Supervised, alive, state_line, stop
from orchestration.summary import keys_kind
from orchestration.tls import Tls, cert_state


def test_ports_derive_from_vault_port() -> None:
    settings = Settings.from_environ({"VAULT_PORT": "9000"}, root=Path("/r"))
    assert (settings.vault_cluster_port, settings.unsealer_port) == (9001, 9010)
    assert (settings.pg_port, settings.http_port, settings.https_port) == (5433, 8080, 8443)
    assert settings.data_dir == Path("/r/.data") and settings.venv == Path("/r/.venv")
    explicit = Settings.from_environ({"VAULT_PORT": "9000", "VAULT_CLUSTER_PORT": "7000"})
    assert explicit.vault_cluster_port == 7000


@pytest.mark.parametrize("value", ["http", "0", "70000", "-1"])
def test_a_bad_port_is_one_clear_error(value: str) -> None:
    with pytest.raises(SetupError, match=f"VAULT_PORT must be a TCP port number, got '{value}'"):
        Settings.from_environ({"VAULT_PORT": value})


def test_status_lines_without_servers(tmp_path: Path) -> None:
    run = new_run(Options(), Settings.from_environ({"DATA_DIR": str(tmp_path)}))
    token_file = tmp_path / "vault-operator-token"
    assert operator_token_state(run, "sealed") == f"missing ({token_file})"
    token_file.write_text("s.token\n")
    assert operator_token_state(run, "sealed") == f"in {token_file} (Vault sealed: not checked)"
    secret_id = tmp_path / "secrets" / "approle" / "secret_id"
    assert secret_id_state(run, "unsealed") == f"missing ({secret_id})"
    secret_id.parent.mkdir(parents=True)
    secret_id.write_text("x")
    assert secret_id_state(run, "unreachable") == "not checked (Vault unreachable)"
    assert cert_state(Tls("off", tmp_path), "30", "") == "none (plain HTTP; ./setup.sh --tls)"
    assert cert_state(Tls("tls", tmp_path), "30", "") == f"missing ({tmp_path}/vault.pem)"
    assert keys_kind(True).startswith("Recovery keys") and keys_kind(False) == "Unseal keys"


def test_pid_files_name_only_what_we_started(tmp_path: Path) -> None:
    """A pid file whose process is not ours (a recycled pid after a reboot) is not alive."""
    pid_file = tmp_path / "x.pid"
    pid_file.write_text("1\n")  # init: alive, but not a "gunicorn" we started
    assert alive(pid_file, "gunicorn") is None
    assert state_line(pid_file, "gunicorn") == "stopped"
    stop(Supervised(pid_file, "gunicorn", "nothing"))  # never signals pid 1
    assert not pid_file.exists()


def test_replicas_are_found_by_their_pid_files(tmp_path: Path) -> None:
    run = new_run(Options(), Settings.from_environ({"DATA_DIR": str(tmp_path)}))
    run.layout.run_dir.mkdir(parents=True)
    for name in ("backend-2.pid", "backend-10.pid", "backend.pid", "vault.pid"):
        (run.layout.run_dir / name).write_text("1\n")
    assert known_replicas(run) == [2, 10]
    assert Replica(run, 2).status_line() == "backend-2:  stopped, no socket"
