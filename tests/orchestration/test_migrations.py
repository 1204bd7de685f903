"""Migrations by the operator (issue 23) and the choice between the roles SQL and the
converge SQL, with Vault, Compose and psql stubbed: what setup.sh runs, with which input. The
real runs: tests/deploy/test_setup_local.py, and tests/docker for the containers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestration import database, docker_mode, migrations
from orchestration.compose import Compose
from orchestration.console import SetupError
from orchestration.context import Run, new_run
from orchestration.database import CONVERGE_SQL, Postgres
from orchestration.docker_mode import DockerMode
from orchestration.options import Options, Settings
from orchestration.scripts import run_indented

ROOT = Path("/repo")
PASSWORD = "migrate-pass-0123"
LOGIN = {
    "lease_id": "database/creds/flask-migrate/L1",
    "data": {"username": "v-m", "password": PASSWORD},
}


class FakeVault:
    """The operator's Vault: a flask-migrate login (or an error), revocations recorded."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.revoked: list[str] = []

    def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        assert (method, path) == ("GET", "database/creds/flask-migrate")
        return self.answer

    def ok(self, method: str, path: str, body: dict[str, Any]) -> bool:
        assert (method, path) == ("PUT", "sys/leases/revoke")
        self.revoked.append(body["lease_id"])
        return True

    def kv_get(self, path: str) -> dict[str, Any]:
        assert path == "database/postgres"
        return {"host": "db", "port": "5432", "database": "appdb"}


Indented = list[dict[str, Any]]


@pytest.fixture
def indented(monkeypatch: pytest.MonkeyPatch) -> Indented:
    """Every run_indented of migrations, recorded (fails when the argv says "fail")."""
    seen: Indented = []

    def fake(argv: list[str], env: dict[str, str], failure: str, **kw: Any) -> None:
        seen.append({"argv": list(argv), "env": env, **kw})
        if "fail" in argv:
            raise SetupError(failure)

    monkeypatch.setattr(migrations, "run_indented", fake)
    return seen


def run_for(tmp_path: Path, mode: str = "local") -> Run:
    env = {"DATA_DIR": str(tmp_path), "HTTP_PORT": "8080", "PG_PORT": "5499", "VENV": "/v"}
    return new_run(Options(mode=mode), Settings.from_environ(env, root=ROOT), tmp_path / "tls")


def test_the_login_goes_on_stdin_and_its_lease_is_revoked(indented: Indented) -> None:
    vault = FakeVault(LOGIN)
    migrations.run_migrations(vault, ["python", "-m", "src.migrate"], {})  # type: ignore[arg-type]
    assert json.loads(indented[0]["stdin"]) == LOGIN
    assert not any(PASSWORD in arg for arg in indented[0]["argv"])
    assert vault.revoked == [LOGIN["lease_id"]]


def test_a_failed_migration_still_revokes_the_lease(indented: Indented) -> None:
    vault = FakeVault(LOGIN)
    with pytest.raises(SetupError, match="migrating the database failed"):
        migrations.run_migrations(vault, ["fail"], {})  # type: ignore[arg-type]
    assert vault.revoked == [LOGIN["lease_id"]]


def test_no_login_from_vault_is_one_clear_error(indented: Indented) -> None:
    vault = FakeVault({"status": 403, "errors": ["permission denied"]})
    with pytest.raises(SetupError, match=r"no migration login from Vault \(database/creds/"):
        migrations.run_migrations(vault, ["python"], {})  # type: ignore[arg-type]
    assert indented == [] and vault.revoked == []


def test_local_migrations_use_the_venv_python_from_be_flask(
    tmp_path: Path, indented: Indented, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = run_for(tmp_path)
    vault = FakeVault(LOGIN)
    monkeypatch.setattr(Run, "vault", lambda *_a, **_k: vault)
    monkeypatch.setattr(migrations, "db_settings", lambda _run: {"database": "appdb"})
    migrations.local_migrations(run)
    assert indented[0]["argv"] == ["/v/bin/python", "-m", "src.migrate", "--host", "127.0.0.1",
                                   "--port", "5499", "--database", "appdb"]  # fmt: skip
    assert indented[0]["cwd"] == ROOT / "be_flask"
    assert indented[0]["env"]["PATH"].startswith("/v/bin:")


def test_docker_migrations_build_then_run_a_one_off_backend(
    tmp_path: Path, indented: Indented, monkeypatch: pytest.MonkeyPatch
) -> None:
    composed: list[tuple[list[str], Any]] = []

    def fake_run(argv: list[str], stdout: Any = None, **_: Any) -> Any:
        composed.append((argv, stdout))
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(docker_mode.subprocess, "run", fake_run)
    vault = FakeVault(LOGIN)
    monkeypatch.setattr(Run, "vault", lambda *_a, **_k: vault)
    compose = Compose(ROOT, ("docker", "compose"), "", False, False, 8200, 8443)
    DockerMode(run_for(tmp_path, "docker"), compose).migrations()
    assert composed == [(compose.argv("app", "build", "backend"), subprocess.DEVNULL)]
    assert indented[0]["argv"] == compose.argv(
        "app", "run", "--rm", "-T", "--no-deps", "backend",
        "python", "-m", "src.migrate", "--host", "db", "--port", "5432", "--database", "appdb",
    )  # fmt: skip
    assert json.loads(indented[0]["stdin"]) == LOGIN and vault.revoked == [LOGIN["lease_id"]]


def test_db_psql_runs_in_the_db_container_with_output_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, Any]] = []

    def fake_run(argv: list[str], **kw: Any) -> Any:
        seen.append({"argv": argv, **kw})
        return subprocess.CompletedProcess(argv, 1 if "FAIL" in kw["input"] else 0)

    monkeypatch.setattr(docker_mode.subprocess, "run", fake_run)
    compose = Compose(ROOT, ("docker", "compose"), "", False, True, 8200, 8443)
    stack = DockerMode(run_for(tmp_path, "docker"), compose)
    stack.db_psql("SELECT 1;", "never")
    assert seen[0]["argv"] == compose.argv(
        "app", "exec", "-T", "db", "sh", "-c", docker_mode.DB_SHELL
    )
    assert seen[0]["input"] == "SELECT 1;" and seen[0]["stdout"] == subprocess.DEVNULL
    with pytest.raises(SetupError, match=r"^updating failed$"):
        stack.db_psql("FAIL", "updating failed")


Logged = list[tuple[list[str], str | None]]


@pytest.fixture
def local_roles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Postgres, Logged, list[str]]:
    """ensure_dynamic_credentials' surroundings stubbed: psql runs and init-vault.sh recorded."""
    logged: Logged = []
    scripts: list[str] = []
    monkeypatch.setattr(
        Postgres, "logged", lambda _s, argv, stdin=None: logged.append((argv, stdin)) or True
    )
    monkeypatch.setattr(database, "read_token", lambda _p: "t")
    monkeypatch.setattr(database, "db_settings", lambda _r: {"database": "appdb", "username": "x"})
    monkeypatch.setattr(database, "bootstrap_user", lambda _r: "app")
    monkeypatch.setattr(database, "script_env", lambda _r: {})
    monkeypatch.setattr(database, "run_vault_script", lambda _r, s, *_: scripts.append(s))
    return Postgres(run_for(tmp_path), Path("/pg/bin")), logged, scripts


def ensure_roles(
    local_roles: tuple[Postgres, Logged, list[str]], configured: bool
) -> tuple[list[str], str, list[str]]:
    """ensure_dynamic_credentials with Vault's engine configured or not: the one psql run's
    argv and input, and the vault scripts run."""
    postgres, logged, scripts = local_roles
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("orchestration.vault_api.Vault.ok", lambda *_: configured)
        database.ensure_dynamic_credentials(postgres.run, postgres)
    [(argv, stdin)] = logged
    return argv, stdin or "", scripts


def test_a_configured_engine_gets_the_converge_sql(
    local_roles: tuple[Postgres, Logged, list[str]],
) -> None:
    argv, stdin, scripts = ensure_roles(local_roles, configured=True)
    assert stdin == CONVERGE_SQL.read_text(encoding="utf-8")
    assert argv[-4:] == ["-d", "appdb", "-v", "admin_role=vault_db_admin"]
    assert scripts == []


def test_a_fresh_engine_gets_the_roles_and_the_bootstrap_tables(
    local_roles: tuple[Postgres, Logged, list[str]],
) -> None:
    argv, stdin, scripts = ensure_roles(local_roles, configured=False)
    assert argv[-6:] == ["-d", "appdb", "-v", "admin_role=vault_db_admin", "-v", "database=appdb"]
    assert "CREATE ROLE flask_owner" in stdin
    assert stdin.rstrip().endswith("REASSIGN OWNED BY app TO flask_owner;")
    assert "REVOKE flask_owner FROM flask_app" not in stdin
    assert scripts == ["init-vault.sh"]


def test_run_indented_feeds_stdin_and_indents_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [sys.executable, "-c", "import sys; print(sys.stdin.read().upper())"]
    run_indented(argv, {}, "never", stdin="secret on stdin")
    assert capsys.readouterr().out == "  SECRET ON STDIN\n"
