"""The Compose stacks run for real: setup.sh --docker, the manual start, the promises they make.

Marked `docker`: excluded from `make test`, run by `make test-docker` (and .ci/run).
"""

from __future__ import annotations

import json
import stat
import time

import hvac
import pytest
import requests

from tests.docker.conftest import Project

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1200)]

APP = "flask-vault-app"


def login(url: str, username: str, password: str) -> requests.Session:
    session = requests.Session()
    response = session.post(
        f"{url}/api/auth/login", json={"username": username, "password": password}, timeout=20
    )
    assert response.status_code == 200, response.text
    # Production cookies are Secure; a browser sends them to http://localhost (a secure
    # context), requests does not: let it, as the browser would.
    for cookie in session.cookies:
        cookie.secure = False
    return session


def csrf(session: requests.Session) -> dict[str, str]:
    return {"X-CSRF-TOKEN": session.cookies["csrf_access_token"]}


def vault(stack: Project) -> hvac.Client:
    token = (stack.root / "vault-operator-token").read_text().strip()
    return hvac.Client(url=f"http://127.0.0.1:{stack.env['VAULT_PORT']}", token=token)


def kv(stack: Project, path: str) -> dict[str, str]:
    secret = vault(stack).secrets.kv.v2.read_secret_version(
        path=path, mount_point="secret", raise_on_deleted_version=True
    )
    return dict(secret["data"]["data"])


def containers(stack: Project, project: str) -> dict[str, dict]:  # type: ignore[type-arg]
    ids = stack.compose(project, "ps", "-q").split()
    inspected = json.loads(stack.sh("docker", "inspect", *ids))
    return {c["Config"]["Labels"]["com.docker.compose.service"]: c for c in inspected}


def wait_healthy(stack: Project, project: str, services: set[str], limit: float = 150) -> None:
    deadline = time.monotonic() + limit
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        states = {
            name: c["State"].get("Health", {}).get("Status", "none")
            for name, c in containers(stack, project).items()
        }
        if all(states.get(name) == "healthy" for name in services):
            return
        time.sleep(3)
    raise AssertionError(f"not healthy within {limit}s: {states}")


def wait_login(url: str, password: str, limit: float = 120) -> requests.Session:
    deadline = time.monotonic() + limit
    while True:
        try:
            return login(url, "admin", password)
        except (AssertionError, requests.RequestException):
            if time.monotonic() > deadline:
                raise
            time.sleep(3)


def check_promises(stack: Project) -> None:
    """What the Compose files declare, as the running containers show it."""
    app = containers(stack, APP)
    for name, c in app.items():
        assert c["Config"]["User"] not in ("", "0", "root", "0:0"), name
        assert c["HostConfig"]["CapDrop"] == ["ALL"] and not c["HostConfig"]["CapAdd"], name
        assert "no-new-privileges:true" in c["HostConfig"]["SecurityOpt"], name
        published = [b for b in (c["HostConfig"]["PortBindings"] or {}).values() if b]
        assert bool(published) == (name == "frontend"), f"{name} publishes {published}"
    for name in ("backend", "redis", "frontend"):
        assert app[name]["HostConfig"]["ReadonlyRootfs"], name
    for name in ("backend", "redis", "frontend", "db"):
        uid = stack.sh("docker", "exec", app[name]["Id"], "id", "-u").strip()
        assert uid != "0", name
    # The database password is the Docker secret and equals Vault's; the file on the host is
    # readable by the container's postgres user through a group, never by everyone.
    db_password = kv(stack, "database/postgres")["password"]
    in_db = stack.sh("docker", "exec", app["db"]["Id"], "cat", "/run/secrets/db_password")
    assert in_db.strip() == db_password
    mode = (stack.root / "secrets" / "db_password.txt").stat().st_mode
    assert not mode & stat.S_IROTH and mode & stat.S_IRGRP
    # Redis requires Vault's redis_password, which its Docker secret holds: a client without it
    # is refused, redis-server's command line does not carry it, and the backend's login
    # counters are there (it authenticated with the password it read from Vault).
    redis_id, redis_password = app["redis"]["Id"], kv(stack, "app/flask")["redis_password"]
    in_redis = stack.sh("docker", "exec", redis_id, "cat", "/run/secrets/redis_password")
    assert in_redis.strip() == redis_password
    assert "NOAUTH" in stack.sh("docker", "exec", redis_id, "redis-cli", "ping", check=False)
    assert redis_password not in stack.sh("docker", "exec", redis_id, "cat", "/proc/1/cmdline")
    counters = stack.sh(
        "docker", "exec", redis_id, "sh", "-c",
        'REDISCLI_AUTH="$(cat /run/secrets/redis_password)" redis-cli --no-auth-warning'
        " --scan --pattern '*login*'",
    )  # fmt: skip
    assert counters.strip(), "no login counter in the stack's Redis"
    # No secret value in `docker inspect` or in any container's environment.
    secrets = [db_password, *kv(stack, "app/flask").values()]
    ids = [c["Id"] for c in app.values()] + [c["Id"] for c in containers(stack, "vault").values()]
    dumped = stack.sh("docker", "inspect", *ids)
    for cid in ids:
        dumped += stack.sh("docker", "exec", cid, "env", check=False)
    leaked = [s for s in secrets if len(str(s)) >= 8 and str(s) in dumped]
    assert not leaked, "a secret value is in docker inspect or a container's environment"
    # The front reaches the backend; the backend reaches Vault and PostgreSQL.
    backend = app["backend"]["Id"]
    probe = (
        "import socket,sys; s=socket.socket(); s.settimeout(3);"
        "sys.exit(s.connect_ex((sys.argv[1], int(sys.argv[2]))))"
    )
    for host, port in (("vault", "8200"), ("db", "5432"), ("redis", "6379")):
        stack.sh("docker", "exec", backend, "python", "-c", probe, host, port)
    stack.sh(
        "docker", "exec", app["frontend"]["Id"], "curl", "-fsS", "http://backend:8000/api/health"
    )
    # PostgreSQL and Redis are unreachable from the front and from the Vault stack.
    front_id, vault_id = app["frontend"]["Id"], containers(stack, "vault")["vault"]["Id"]
    for cid, host in ((front_id, "db"), (front_id, "redis"), (vault_id, "db")):
        out = stack.sh("docker", "exec", cid, "sh", "-c", f"getent hosts {host}; echo rc=$?")
        assert out.strip().endswith("rc=2"), f"{cid[:12]} resolves {host}: {out}"


def seed_commands(stack: Project) -> None:
    """The seed's verification commands, as the docs give them, in the backend container."""
    out = stack.compose(
        APP, "exec", "-T", "backend", "python3", "-c",
        "from src.vault_client import get_vault_client; "
        "print(sorted(get_vault_client().get_app_secrets()))",
    )  # fmt: skip
    assert "jwt_secret" in out or "secret_key" in out, out
    out = stack.compose(
        APP, "exec", "-T", "backend", "python3", "-c",
        "from src.config import get_config; c = get_config(); print(type(c).__name__)",
    )  # fmt: skip
    assert "Config" in out, out


def test_setup_docker_full_flow(project: Project) -> None:
    stack = project
    output = stack.sh("./setup.sh", "--docker", timeout=900)
    assert f"localhost:{stack.env['HTTP_PORT']}" in output
    admin_password = kv(stack, "app/flask")["admin_password"]
    assert admin_password not in output

    assert requests.get(stack.url + "/", timeout=20).status_code == 200
    admin = login(stack.url, "admin", admin_password)
    assert admin.get(f"{stack.url}/api/auth/me", timeout=20).json()["user"]["role"] == "admin"
    created = admin.post(
        f"{stack.url}/api/users",
        json={"username": "carol", "password": "carol-correct-horse-42", "role": "user"},
        headers=csrf(admin),
        timeout=20,
    )
    assert created.status_code == 201, created.text
    users = admin.get(f"{stack.url}/api/users", timeout=20).json()
    assert "carol" in json.dumps(users)
    panel = admin.get(f"{stack.url}/api/admin/vault/status", timeout=20)
    assert panel.status_code == 200, panel.text

    wait_healthy(stack, APP, {"backend", "db", "redis", "frontend"})
    wait_healthy(stack, "vault", {"vault"})
    check_promises(stack)
    seed_commands(stack)

    # Issue 10.1: rotate, then the documented plain restart (which does not re-read .env).
    old_env = (stack.root / ".env").read_text()
    stack.env["VAULT_ADDR"] = f"http://127.0.0.1:{stack.env['VAULT_PORT']}"
    stack.sh("vault/scripts/rotate-secret-id.sh")
    assert (stack.root / ".env").read_text() != old_env
    stack.compose(APP, "restart", "backend")
    wait_healthy(stack, APP, {"backend"})
    wait_login(stack.url, admin_password)
    stack.sh("./setup.sh", "--restart-app", timeout=300)
    wait_login(stack.url, admin_password)
    assert "mode: docker" in stack.sh("./setup.sh", "--status")

    # Vault restarted alone comes back sealed; the app keeps serving from its cache, and
    # unseal-vault.sh opens it again.
    admin = login(stack.url, "admin", admin_password)
    stack.compose("vault", "restart", "vault")
    status = None
    for _ in range(30):
        try:
            status = requests.get(f"{stack.env['VAULT_ADDR']}/v1/sys/seal-status", timeout=5)
            break
        except requests.RequestException:
            time.sleep(1)
    assert status is not None and status.json()["sealed"] is True
    assert requests.get(stack.url + "/api/health", timeout=20).status_code == 200
    # Sessions, readiness and new logins all keep working from the cached secrets.
    assert admin.get(f"{stack.url}/api/auth/me", timeout=20).status_code == 200
    assert requests.get(stack.url + "/api/ready", timeout=20).status_code == 200
    login(stack.url, "carol", "carol-correct-horse-42")
    stack.sh("vault/scripts/unseal-vault.sh")
    assert (
        requests.get(f"{stack.env['VAULT_ADDR']}/v1/sys/seal-status", timeout=20).json()["sealed"]
        is False
    )

    # Stop, start again: same data.
    stack.sh("./setup.sh", "--stop", timeout=300)
    stack.sh("./setup.sh", "--docker", timeout=600)
    login(stack.url, "carol", "carol-correct-horse-42")
    # The startup line the seed's document quotes (issue 10.3), as `logs backend | grep Vault`.
    logs = stack.compose(APP, "logs", "backend")
    assert "Vault integration enabled" in logs, "no 'Vault integration enabled' line at startup"


def test_manual_start_as_the_docs_give_it(project: Project) -> None:
    """Issue 10.2: vault stack up, init-vault.sh from the host, app stack up; no setup.sh and
    no CLI on PATH (the scripts find the project's .venv/bin/bao)."""
    stack = project
    stack.env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    stack.env["VAULT_ADDR"] = f"http://127.0.0.1:{stack.env['VAULT_PORT']}"
    stack.compose("vault", "up", "-d")
    for _ in range(30):
        try:
            requests.get(f"{stack.env['VAULT_ADDR']}/v1/sys/seal-status", timeout=3)
            break
        except requests.RequestException:
            time.sleep(1)
    out = stack.sh("vault/scripts/init-vault.sh")
    assert "ready for the Flask backend" in out
    for name in ("db_password.txt", "approle/secret_id"):
        mode = (stack.root / "secrets" / name).stat().st_mode
        assert not mode & stat.S_IROTH, name
    stack.compose(APP, "up", "-d", "--build")
    wait_healthy(stack, APP, {"backend", "db", "redis", "frontend"}, limit=240)
    admin = login(stack.url, "admin", kv(stack, "app/flask")["admin_password"])
    assert admin.get(f"{stack.url}/api/auth/me", timeout=20).status_code == 200
