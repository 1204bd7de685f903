"""The Compose stacks run for real: setup.sh --docker, the manual start, the promises they make.

Marked `docker`: excluded from `make test`, run by `make test-docker` (and .ci/run).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import stat
import subprocess
import time

import hvac
import pytest
import requests

from tests.docker.conftest import ROOT, Project, copy_project, remove_project

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1200)]

APP = "app"  # Project.compose: the app stack, whatever its project name


def login(url: str, username: str, password: str, verify: str | bool = True) -> requests.Session:
    """A logged-in session; `verify`: the CA file an https front is checked against."""
    session = requests.Session()
    session.verify = verify
    # Else REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE from the environment would replace `verify`.
    session.trust_env = verify is True
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
    db_password = kv(stack, "database/bootstrap")["password"]
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
    # No secret value in `docker inspect` or in any container's environment: the AppRole
    # secret ID (in .env for the scripts, in the file the backend re-reads) included.
    secret_id = (stack.root / "secrets" / "approle" / "secret_id").read_text().strip()
    secrets = [db_password, secret_id, *kv(stack, "app/flask").values()]
    env_file = (stack.root / ".env").read_text()
    secrets += re.findall(r"^VAULT_SECRET_ID=(\S+)$", env_file, re.M)
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
    # PostgreSQL and Redis are unreachable from the front; of the data, the Vault stack reaches
    # PostgreSQL alone, over vault_db_net, which holds Vault and PostgreSQL alone (dynamic
    # credentials). (Vault and the backend share vault_net.)
    front_id, vault_id = app["frontend"]["Id"], containers(stack, "vault")["vault"]["Id"]
    for cid, host in (
        (front_id, "db"), (front_id, "redis"), (vault_id, "redis"), (vault_id, "frontend"),
    ):  # fmt: skip
        out = stack.sh("docker", "exec", cid, "sh", "-c", f"getent hosts {host}; echo rc=$?")
        assert out.strip().endswith("rc=2"), f"{cid[:12]} resolves {host}: {out}"
    net = json.loads(stack.sh("docker", "network", "inspect", f"{stack.vault_project}_db_net"))
    assert net[0]["Internal"] is True
    assert set(net[0]["Containers"]) == {vault_id, app["db"]["Id"]}
    # The backend has no route out: each of its networks is internal (vault_net too); Vault
    # publishes its port from vault_pub_net, which holds nothing of the app stack.
    for name in app["backend"]["NetworkSettings"]["Networks"]:
        net = json.loads(stack.sh("docker", "network", "inspect", name))
        assert net[0]["Internal"] is True, name
    pub = json.loads(stack.sh("docker", "network", "inspect", f"{stack.vault_project}_pub_net"))
    assert set(pub[0]["Containers"]) == {vault_id}
    # The plain-HTTP front is published on loopback only (HTTP_BIND unset).
    bindings = app["frontend"]["HostConfig"]["PortBindings"]["8080/tcp"]
    assert {b["HostIp"] for b in bindings} == {"127.0.0.1"}, bindings


def bao(stack: Project, token: str, *args: str, stdin: str = "") -> str:
    """The project's bao CLI against the stack's Vault (secrets go in on stdin, never argv)."""
    env = {**stack.env, "VAULT_ADDR": f"http://127.0.0.1:{stack.env['VAULT_PORT']}"}
    env["VAULT_TOKEN"] = token
    done = subprocess.run(
        [str(stack.root / ".venv" / "bin" / "bao"), *args],
        input=stdin, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"bao {args[:3]}: {done.stderr[-1000:]}"
    return done.stdout


def root_token(stack: Project) -> str:
    """A root token from the unseal keys, as init-vault.sh makes one (the caller revokes it)."""
    keys = json.loads((stack.root / "vault-keys.json").read_text())
    operator = (stack.root / "vault-operator-token").read_text().strip()
    attempt = json.loads(bao(stack, operator, "operator", "generate-root", "-init", "-format=json"))
    step: dict[str, str] = {}
    nonce = f"-nonce={attempt['nonce']}"
    for key in keys["unseal_keys_b64"][: attempt["required"]]:
        out = bao(
            stack, operator, "operator", "generate-root", "-format=json", nonce, "-", stdin=key
        )
        step = json.loads(out)
    encoded = step["encoded_token"]
    raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
    return bytes(a ^ b for a, b in zip(raw, attempt["otp"].encode(), strict=True)).decode()


def approle_logins(stack: Project, secret_id_hash: str) -> int:
    """Successful AppRole logins in Vault's audit log made with the secret ID of that HMAC."""
    vault_id = containers(stack, "vault")["vault"]["Id"]
    count = 0
    for line in stack.sh("docker", "exec", vault_id, "cat", "/vault/logs/audit.log").splitlines():
        entry = json.loads(line)
        request = entry.get("request") or {}
        if (
            entry.get("type") == "response"
            and request.get("path") == "auth/approle/login"
            and (request.get("data") or {}).get("secret_id") == secret_id_hash
            and not entry.get("error")
            and (entry.get("auth") or {}).get("client_token")
        ):
            count += 1
    return count


def secret_id_rotation_reaches_running_backend(stack: Project, admin_password: str) -> None:
    """Issue 9: rotate-secret-id.sh, then the backend's token revoked: the running backend
    (no restart) logs in again with the new secret ID from its file and keeps serving."""
    backend_before = containers(stack, APP)["backend"]["State"]
    admin = login(stack.url, "admin", admin_password)
    stack.sh("vault/scripts/rotate-secret-id.sh")
    new_secret_id = (stack.root / "secrets" / "approle" / "secret_id").read_text().strip()
    root = root_token(stack)
    try:
        client = hvac.Client(url=stack.env["VAULT_ADDR"], token=root)
        hashed = client.sys.calculate_hash(path="file", input_to_hash=new_secret_id)
        hashed = hashed["data"]["hash"]
        assert approle_logins(stack, hashed) == 0, "the backend logged in before it had to"
        # Every token AppRole issued (each worker's): the next Vault call is refused.
        client.sys.revoke_prefix("auth/approle/login")
        deadline = time.monotonic() + 60
        while approle_logins(stack, hashed) == 0:
            assert time.monotonic() < deadline, "the backend never logged in with the new ID"
            refresh = admin.post(
                f"{stack.url}/api/admin/vault/refresh", headers=csrf(admin), timeout=20
            )
            assert refresh.status_code == 200, refresh.text
            time.sleep(2)
    finally:
        bao(stack, root, "token", "revoke", "-self")
    # Still the same container, serving sessions, new logins (the database too: revoking the
    # tokens revoked their database leases) and the live Vault panel.
    backend_after = containers(stack, APP)["backend"]["State"]
    assert backend_after["StartedAt"] == backend_before["StartedAt"], "the backend restarted"
    assert admin.get(f"{stack.url}/api/auth/me", timeout=20).status_code == 200
    assert requests.get(stack.url + "/api/ready", timeout=20).status_code == 200
    fresh = wait_login(stack.url, admin_password, limit=60)
    panel = fresh.get(f"{stack.url}/api/admin/vault/status", timeout=20).json()
    assert panel["authenticated"] is True, panel


def dynamic_database_credentials(stack: Project) -> None:
    """Issue 11 in Docker: the backend's PostgreSQL logins are Vault's short-lived roles."""
    app = containers(stack, APP)
    env = dict(item.split("=", 1) for item in app["backend"]["Config"]["Env"])
    assert env.get("VAULT_DB_MODE") == "dynamic", "setup.sh runs the backend in dynamic mode"
    # The Docker secret is the db container's alone: the backend has no such file.
    absent = stack.sh("docker", "exec", app["backend"]["Id"], "ls", "/run/secrets", check=False)
    assert "db_password" not in absent
    # The backend's sessions: those from its address on data_net (Vault's own, as
    # vault_db_admin, come over vault_db_net).
    networks = app["backend"]["NetworkSettings"]["Networks"]
    address = next(n["IPAddress"] for name, n in networks.items() if name.endswith("_data_net"))
    query = (
        "SELECT DISTINCT a.usename, r.rolsuper, r.rolvaliduntil IS NOT NULL,"
        " pg_has_role(a.usename, 'flask_app', 'MEMBER')"
        " FROM pg_stat_activity a JOIN pg_roles r ON r.rolname = a.usename"
        " WHERE a.datname = current_database() AND a.client_addr = :'address'"
    )
    rows = stack.sh(
        "docker", "exec", app["db"]["Id"], "sh", "-c",
        # On stdin, so that psql interpolates :'address' (it does not in -c).
        'echo "$0" | PGPASSWORD="$(cat /run/secrets/db_password)" psql -X -qtA -F, -h 127.0.0.1 '
        '-U "$POSTGRES_USER" -d "$POSTGRES_DB" -v address="$1"', query, address,
    ).split()  # fmt: skip
    assert rows, "the backend holds no database connection"
    for row in rows:
        user, superuser, expires, member = row.split(",")
        assert user.startswith("v-") and user != "app", f"backend connected as {user}"
        assert (superuser, expires, member) == ("f", "t", "t"), row


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


def test_setup_docker_full_flow(named_project: Project) -> None:
    """Under its own project name (setup.sh -p), as a second checkout on the engine would."""
    stack = named_project
    output = stack.sh("./setup.sh", "--docker", "-p", stack.name, timeout=900)
    networks = stack.sh("docker", "network", "ls", "--format", "{{.Name}}").split()
    assert {"fvtest-vault_net", "fvtest-vault_db_net"} <= set(networks), networks
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
    dynamic_database_credentials(stack)
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


def static_login_as_the_docs_give_it(stack: Project) -> None:
    """VAULT_INTEGRATION.md, "Static mode", in Compose: the roles in db, a login that is no
    superuser and owns nothing in secret/database/postgres, the schema migrated with the
    bootstrap login (init-vault.sh writes no standing login for the backend any more)."""
    stack.compose(APP, "up", "-d", "db")
    wait_healthy(stack, APP, {"db"})
    password = secrets.token_hex(16)
    roles = (ROOT / "vault" / "config" / "postgres-dynamic-roles.sql").read_text()
    roles += (
        "ALTER ROLE vault_db_admin NOLOGIN;\n"
        f"CREATE ROLE flask_static LOGIN PASSWORD '{password}' IN ROLE flask_app;\n"
    )
    psql = (
        'PGPASSWORD="$(cat /run/secrets/db_password)" psql -v ON_ERROR_STOP=1 -h 127.0.0.1 '
        '-U "$POSTGRES_USER" -d "$POSTGRES_DB" -v admin_role=vault_db_admin '
        "-v admin_password=unused -v database=appdb"
    )
    stack.compose(APP, "exec", "-T", "db", "sh", "-c", psql, stdin=roles)
    # As `bao kv patch` (hvac's own patch reads with a deprecated default: a warning).
    where = {**kv(stack, "database/postgres"), "username": "flask_static", "password": password}
    vault(stack).secrets.kv.v2.create_or_update_secret(
        path="database/postgres", secret=where, mount_point="secret"
    )
    bootstrap = json.dumps({"data": {"data": kv(stack, "database/bootstrap")}})
    migrate = ["python", "-m", "src.migrate", "--host", "db", "--database", "appdb"]
    stack.compose(APP, "run", "--rm", "-T", "--no-deps", "backend", *migrate, stdin=bootstrap)


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
    static_login_as_the_docs_give_it(stack)
    stack.compose(APP, "up", "-d", "--build")
    wait_healthy(stack, APP, {"backend", "db", "redis", "frontend"}, limit=240)
    admin_password = kv(stack, "app/flask")["admin_password"]
    admin = login(stack.url, "admin", admin_password)
    assert admin.get(f"{stack.url}/api/auth/me", timeout=20).status_code == 200
    # Static database mode here (no setup.sh): revoking the backend's tokens leaves its
    # database login alone, so this shows the secret ID alone. (In dynamic mode a revoked
    # token also revokes its database lease: see the report of issue 9.)
    secret_id_rotation_reaches_running_backend(stack, admin_password)

    # Issue 9: a second checkout on the same engine, under its own project name, beside the
    # default-named one: its own containers, volumes and networks, nothing shared.
    other = copy_project("fvside")
    try:
        other.compose("vault", "up", "-d")
        other_vault = f"http://127.0.0.1:{other.env['VAULT_PORT']}/v1/sys/seal-status"
        for _ in range(30):
            try:
                if requests.get(other_vault, timeout=3).json()["initialized"] is False:
                    break
            except requests.RequestException:
                time.sleep(1)
        else:
            raise AssertionError("the second checkout's Vault did not answer")
        networks = set(stack.sh("docker", "network", "ls", "--format", "{{.Name}}").split())
        assert {"vault_net", "vault_db_net", "fvside-vault_net", "fvside-vault_db_net"} <= networks
        assert admin.get(f"{stack.url}/api/auth/me", timeout=20).status_code == 200
        assert requests.get(f"{stack.env['VAULT_ADDR']}/v1/sys/seal-status", timeout=5).json()[
            "initialized"
        ], "the first checkout's Vault was replaced"
    finally:
        remove_project(other)
