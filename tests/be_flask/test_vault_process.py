"""The process-wide client: fork safety, and the operator CLI run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.openbao import OpenBao
from tests.harness.servers import free_port

BACKEND = Path(__file__).resolve().parents[2] / "be_flask"

FORK_SCRIPT = """
import json, os
from src.vault_client import get_vault_client
parent = get_vault_client()
parent.get_app_secrets()
read_end, write_end = os.pipe()
pid = os.fork()
if pid == 0:
    old_session = parent.adapter.session
    parent.invalidate_cache()
    parent.get_app_secrets()  # an app that kept the parent's object (app.extensions)
    inherited = {"session_renewed": parent.adapter.session is not old_session,
                 "inherited_logins": parent.status()["logins"]}
    child = get_vault_client()
    child.invalidate_cache()
    child.get_app_secrets()
    report = {"same_object": child is parent, "logins": child.status()["logins"],
              "session_shared": child.adapter.session is parent.adapter.session,
              "accessor": child.status()["token"]["accessor"], **inherited}
    os.write(write_end, json.dumps(report).encode())
    os._exit(0)
os.waitpid(pid, 0)
child = json.loads(os.read(read_end, 65536))
child["parent_accessor"] = parent.status()["token"]["accessor"]
print(json.dumps(child))
"""


def backend_env(server: OpenBao, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    env.update(
        VAULT_ADDR=server.addr, VAULT_ROLE_ID=server.role_id, VAULT_SECRET_ID=server.secret_id
    )
    env.update(extra)
    return env


def run_backend(code_or_args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *code_or_args],
        cwd=BACKEND,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_forked_child_gets_its_own_client_session_and_token(openbao: OpenBao) -> None:
    result = run_backend(["-c", FORK_SCRIPT], backend_env(openbao))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert not report["same_object"] and not report["session_shared"]
    assert report["logins"] == 1 and report["accessor"] != report["parent_accessor"]
    assert report["session_renewed"] and report["inherited_logins"] == 1


def test_design_one_liners_work_from_be_flask(openbao: OpenBao) -> None:
    stored = openbao.client(openbao.root_token).secrets.kv.v2.read_secret_version(
        path="database/postgres", mount_point="secret", raise_on_deleted_version=True
    )["data"]["data"]
    code = (
        "from src.config import get_config; "
        "print(get_config().vault_client.get_database_config()['host'])"
    )
    result = run_backend(["-c", code], backend_env(openbao))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == stored["host"]
    code = "from src.vault_client import get_vault_client; print(get_vault_client().is_available())"
    assert run_backend(["-c", code], backend_env(openbao)).stdout.strip() == "True"


def test_cli_status_prints_json_and_fails_when_vault_is_unreachable(openbao: OpenBao) -> None:
    result = run_backend(["-m", "src.vault_client", "status"], backend_env(openbao))
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["available"] and status["source"] == "vault"
    assert openbao.secret_id not in result.stdout and "jwt_secret" not in result.stdout

    # Development (explicitly) is the one mode that may serve the public defaults.
    down = backend_env(openbao, VAULT_ADDR=f"http://127.0.0.1:{free_port()}", APP_ENV="development")
    result = run_backend(["-m", "src.vault_client", "status"], down)
    assert result.returncode == 1
    status = json.loads(result.stdout)
    assert not status["available"] and status["source"] == "fallback"
    assert "connection refused" in status["last_error"]

    no_approle = {
        k: v
        for k, v in backend_env(openbao, APP_ENV="development").items()
        if k != "VAULT_SECRET_ID"
    }
    result = run_backend(["-m", "src.vault_client", "status"], no_approle)
    assert result.returncode == 1
    status = json.loads(result.stdout)
    assert status["source"] == "fallback" and status["logins"] == 0
    assert status["last_error"] == "AppRole credentials not configured"


@pytest.mark.parametrize("app_env", ["production", "local", ""])
def test_cli_in_production_without_vault_or_env_says_what_is_missing(
    openbao: OpenBao, app_env: str
) -> None:
    down = backend_env(openbao, VAULT_ADDR=f"http://127.0.0.1:{free_port()}", APP_ENV=app_env)
    for name in ("SECRET_KEY", "ADMIN_PASSWORD", "USER_PASSWORD", "DATABASE_URL"):
        down.pop(name, None)
    result = run_backend(["-m", "src.vault_client", "status"], down)
    assert result.returncode == 1
    assert "SECRET_KEY" in json.loads(result.stdout)["last_error"]
