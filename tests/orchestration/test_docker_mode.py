"""Docker mode's Compose calls for each flag set, with Compose itself stubbed: the argv and
substitutions setup.sh has always given (the engine tests in tests/docker run the real thing)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from orchestration import docker_mode
from orchestration.compose import Compose
from orchestration.context import new_run
from orchestration.database import CONVERGE_SQL
from orchestration.docker_mode import DockerMode
from orchestration.options import Options, Settings

ROOT = Path("/repo")
Calls = list[tuple[list[str], dict[str, str], str | None]]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    """Every subprocess.run of docker_mode, recorded instead of run (all succeed)."""
    seen: Calls = []

    def fake_run(argv: list[str], env: dict[str, str], input: str | None = None, **_: Any) -> Any:
        seen.append((argv, env, input))
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(docker_mode.subprocess, "run", fake_run)
    return seen


def mode(tmp_path: Path, **options: Any) -> DockerMode:
    settings = Settings.from_environ({"DATA_DIR": str(tmp_path), "HTTP_PORT": "8080"}, root=ROOT)
    run = new_run(Options(mode="docker", **options), settings, tls_dir=tmp_path / "tls")
    compose = Compose(ROOT, ("docker", "compose"), options.get("project_name", ""),
                      run.ha, run.tls.on, 8200, 8443)  # fmt: skip
    return DockerMode(run, compose)


def tails(calls: Calls) -> list[list[str]]:
    """Each call's arguments after `-p PROJECT -f FILE...`, with the project in front."""
    result = []
    for argv, _env, _input in calls:
        rest = argv[argv.index("-p") + 1 :]
        files = [rest[i + 1].rsplit("/", 1)[1] for i, a in enumerate(rest) if a == "-f"]
        args = [a for i, a in enumerate(rest[1:], 1) if a != "-f" and rest[i - 1] != "-f"]
        result.append([rest[0], *files, *args])
    return result


def test_stop_brings_both_stacks_down_app_first(tmp_path: Path, calls: Calls) -> None:
    mode(tmp_path).stop()
    assert tails(calls) == [
        ["flask-vault-app", "docker-compose.yaml", "down"],
        ["vault", "docker-compose.vault.yaml", "down"],
    ]


def test_stop_vault_stops_only_the_vault_stack(tmp_path: Path, calls: Calls) -> None:
    mode(tmp_path, stop_vault_only=True, ha=True, project_name="two").stop()
    assert tails(calls) == [["two-vault", "docker-compose.vault-ha.yaml", "stop"]]


def test_vault_stack_up_with_ha_and_tls(
    tmp_path: Path, calls: Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(docker_mode, "make_certs", lambda *_: None)
    monkeypatch.setattr(docker_mode.process, "wait_for_port", lambda *_: None)
    monkeypatch.setattr(DockerMode, "wait_for_vault_api", lambda _self: None)
    mode(tmp_path, ha=True, tls="tls").start_vault_stack()
    assert tails(calls) == [
        ["vault", "docker-compose.vault-ha.yaml", "docker-compose.vault-ha-tls.yaml", "up", "-d"]
    ]
    env = calls[0][1]
    assert env["BACKEND_VAULT_ADDR"] == (
        "https://vault-1:8200,https://vault-2:8200,https://vault-3:8200"
    )
    assert (tmp_path / "tls" / "compose" / "vault-ha.hcl").exists()  # what the overlay mounts


def test_app_stack_up_scales_the_backend_then_recreates_the_front(
    tmp_path: Path, calls: Calls
) -> None:
    mode(tmp_path, replicas=3, modsecurity=True).start_app_stack()
    assert tails(calls) == [
        ["flask-vault-app", "docker-compose.yaml", "up", "-d", "--build", "--scale", "backend=3"],
        ["flask-vault-app", "docker-compose.yaml", "up", "-d", "--no-deps", "--force-recreate",
         "frontend"],
    ]  # fmt: skip
    for _argv, env, _input in calls:
        assert env["FE_MODSECURITY"] == "MODSECURITY" and env["BACKEND_REPLICAS"] == "3"
        assert env["HTTP_PORT"] == "8080" and env["BACKEND_VAULT_ADDR"] == "http://vault:8200"


def test_restart_app_recreates_the_backends(
    tmp_path: Path, calls: Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(DockerMode, "wait_ready", lambda _self: None)
    mode(tmp_path, replicas=2).restart_app()
    assert tails(calls)[0] == ["flask-vault-app", "docker-compose.yaml", "up", "-d",
                               "--force-recreate", "--scale", "backend=2", "backend"]  # fmt: skip
    assert tails(calls)[1][-1] == "frontend"


def test_dynamic_roles_go_in_on_stdin_never_argv(
    tmp_path: Path, calls: Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripts: list[dict[str, str]] = []
    monkeypatch.setattr(
        docker_mode, "run_vault_script", lambda _r, _s, env, *a: scripts.append(env)
    )
    monkeypatch.setattr(DockerMode, "wait_for_db", lambda _self: None)
    stack = mode(tmp_path)
    monkeypatch.setattr(stack.run, "require_bao", lambda: "bao")
    monkeypatch.setattr("orchestration.vault_api.Vault.ok", lambda *_: False)
    stack.dynamic_credentials()
    assert [t[2:5] for t in tails(calls)] == [["up", "-d", "db"], ["exec", "-T", "db"]]
    argv, _env, stdin = calls[1]
    password = scripts[0]["DB_ADMIN_PASSWORD"]
    assert stdin is not None and f"\\set admin_password '{password}'" in stdin
    assert "CREATE ROLE" in stdin and "ALTER TABLE public.%I OWNER TO flask_owner" in stdin
    assert not any(password in arg for arg in argv)
    assert tails(calls)[1][5:] == ["sh", "-c", docker_mode.DB_SHELL]


def test_configured_engine_converges_the_roles_in_the_db_container(
    tmp_path: Path, calls: Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database configured before issue 23 gets the converge SQL, and Vault is left as is."""
    scripts: list[str] = []
    monkeypatch.setattr(docker_mode, "run_vault_script", lambda _r, s, *_: scripts.append(s))
    monkeypatch.setattr(DockerMode, "wait_for_db", lambda _self: None)
    monkeypatch.setattr("orchestration.vault_api.Vault.ok", lambda *_: True)
    mode(tmp_path).dynamic_credentials()
    assert [t[2:] for t in tails(calls)] == [
        ["up", "-d", "db"],
        ["exec", "-T", "db", "sh", "-c", docker_mode.DB_SHELL],
    ]
    assert calls[1][2] == CONVERGE_SQL.read_text(encoding="utf-8")
    assert "REVOKE flask_owner FROM flask_app" in (calls[1][2] or "")
    assert scripts == []


def test_up_is_its_steps_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    done: list[str] = []
    steps = ["remember", "start_vault_stack", "init_vault", "dynamic_credentials", "migrations",
             "start_app_stack", "wait_ready", "print_summary"]  # fmt: skip
    for name in steps:
        monkeypatch.setattr(DockerMode, name, lambda _self, name=name: done.append(name))
    mode(tmp_path).up()
    assert done == steps
