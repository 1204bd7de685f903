"""The production topology in Compose: `./setup.sh --docker --ha --tls`, run for real.

One stack proves several things (the Docker tests share a time budget): Vault's three Raft
nodes serve TLS with the project's CA, the backend reaches them by their Compose names over
https, and `docker kill` of the leader under load fails no app request while a new leader is
elected and Vault reads resume on it. Marked `docker` (make test-docker).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest
import requests
from requests import Response

from tests.docker.conftest import Project, copy_project, remove_project
from tests.docker.test_compose_stacks import csrf, login
from tests.harness.load import start_threads

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]

THREADS = 4
ELECTION_LIMIT = 20.0  # seconds from the leader's death to a new active node (10 s is typical)


HA_FILES = ("docker-compose.vault-ha.yaml", "docker-compose.vault-ha-tls.yaml")
TLS_FILES = ("docker-compose.vault.yaml", "docker-compose.vault-tls.yaml")


def down(stack: Project, vault_files: tuple[str, str]) -> None:
    """Both stacks with the files they ran (Project.down knows the plain ones), volumes too."""
    stack.env["VAULT_STACK"] = stack.vault_project
    for project, files in (
        (stack.app_project, ("docker-compose.yaml", "docker-compose.tls.yaml")),  # frees vault_net
        (stack.vault_project, vault_files),
    ):
        options = [arg for name in files for arg in ("-f", name)]
        stack.sh(
            "docker-compose", "-p", project, *options, "down", "-v", "--remove-orphans",
            check=False,
        )  # fmt: skip


def project_on(name: str, vault_files: tuple[str, str]) -> Iterator[Project]:
    stack = copy_project(name)
    stack.https = True  # both stacks run --tls: users come in over https
    down(stack, vault_files)  # a run killed half-way may have left these stacks behind
    try:
        yield stack
    finally:
        down(stack, vault_files)
        remove_project(stack)


@pytest.fixture
def ha_project(docker_images: list[str]) -> Iterator[Project]:
    yield from project_on("fvha", HA_FILES)


@pytest.fixture
def tls_project(docker_images: list[str]) -> Iterator[Project]:
    yield from project_on("fvtls", TLS_FILES)


def containers(stack: Project, project: str) -> dict[str, dict[str, Any]]:
    """The running containers of a Compose project by service, whatever files made them."""
    ids = stack.sh(
        "docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}"
    ).split()  # fmt: skip
    inspected = json.loads(stack.sh("docker", "inspect", *ids))
    return {c["Config"]["Labels"]["com.docker.compose.service"]: c for c in inspected}


def node_ports(stack: Project) -> dict[str, int]:
    first = int(stack.env["VAULT_PORT"])
    return {f"vault-{n}": first + 2 * (n - 1) for n in (1, 2, 3)}


def app_secrets(stack: Project) -> dict[str, str]:
    client = node_client(stack, int(stack.env["VAULT_PORT"]))
    secret = client.secrets.kv.v2.read_secret_version(
        path="app/flask", mount_point="secret", raise_on_deleted_version=True
    )
    return dict(secret["data"]["data"])


def ca(stack: Project) -> str:
    return str(stack.root / "vault" / "tls" / "ca.pem")


def node_client(stack: Project, port: int) -> hvac.Client:
    token = (stack.root / "vault-operator-token").read_text().strip()
    return hvac.Client(url=f"https://127.0.0.1:{port}", token=token, verify=ca(stack), timeout=3)


def leader(stack: Project, alive: set[str]) -> str | None:
    """The node that says it is the active one, among those still running."""
    for name, port in node_ports(stack).items():
        if name not in alive:
            continue
        try:
            answer = requests.get(
                f"https://127.0.0.1:{port}/v1/sys/leader", verify=ca(stack), timeout=3
            ).json()
        except (requests.RequestException, ValueError):
            continue
        if answer.get("is_self"):
            return name
    return None


def check_tls(stack: Project) -> None:
    """The host reaches Vault over https with the project's CA, and only so."""
    port = stack.env["VAULT_PORT"]
    health = requests.get(
        f"https://127.0.0.1:{port}/v1/sys/health", verify=ca(stack), timeout=10
    )  # fmt: skip
    assert health.status_code == 200, health.text
    plain = requests.get(f"http://127.0.0.1:{port}/v1/sys/health", timeout=10)
    assert plain.status_code == 400 and "HTTPS" in plain.text, plain.text
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"https://127.0.0.1:{port}/v1/sys/health", timeout=10)  # system CAs only
    # The server certificate names every Compose service the backend may be sent to.
    sans = stack.sh(
        "openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", "vault/tls/vault.pem"
    )  # fmt: skip
    for name in ("vault", "vault-1", "vault-2", "vault-3"):
        assert f"DNS:{name}," in sans or sans.rstrip().endswith(f"DNS:{name}"), sans
    vault_nodes = containers(stack, stack.vault_project)
    for name in ("vault-1", "vault-2", "vault-3"):
        cid = vault_nodes[name]["Id"]
        # The key the server reads: its own copy, owner-only (the host's stays 0600).
        key = stack.sh("docker", "exec", cid, "stat", "-c", "%a %U", "/vault/tls/vault-key.pem")
        assert key.split() == ["400", "openbao"], key
    app = containers(stack, stack.app_project)["backend"]
    env = dict(item.split("=", 1) for item in app["Config"]["Env"])
    assert env["VAULT_ADDR"] == ",".join(f"https://vault-{n}:8200" for n in (1, 2, 3)), env
    assert env["VAULT_CACERT"] == "/run/vault-tls/ca.pem"
    # From the backend's container, by each service name, verified against the mounted CA.
    probe = (
        "import ssl, sys, urllib.request as u;"
        "c = ssl.create_default_context(cafile='/run/vault-tls/ca.pem');"
        "[u.urlopen(f'https://{h}:8200/v1/sys/health?standbyok=true', context=c, timeout=5)"
        " for h in sys.argv[1:]]"
    )
    stack.sh("docker", "exec", app["Id"], "python", "-c", probe, "vault", "vault-2", "vault-3")
    host_key = (stack.root / "vault" / "tls" / "vault-key.pem").stat().st_mode & 0o777
    assert host_key == 0o600


def front_login(stack: Project, username: str, password: str) -> requests.Session:
    """Logged in at the https front, trusting the project's CA (as a browser that imported it)."""
    return login(stack.url, username, password, verify=ca(stack))


def hammer(
    stack: Project, password: str, stop: threading.Event, results: list[tuple[int, float]]
) -> None:
    """Authenticated requests back to back (not token refreshes: those are rate-limited)."""
    url = stack.url
    session = front_login(stack, "user", password)
    while not stop.is_set():
        started = time.monotonic()
        try:
            code = session.get(f"{url}/api/auth/me", timeout=15).status_code
        except requests.RequestException:
            code = 0
        results.append((code, time.monotonic() - started))


def post_as_a_browser(session: requests.Session, url: str, headers: dict[str, str]) -> Response:
    """POST, sent again once when the kept-alive connection it reused had been closed by the
    front (KeepAliveTimeout 5 s; this session sat idle about that long through the election)
    before any answer came, as browsers do; requests does not (seen once in the HA test)."""
    try:
        return session.post(url, headers=headers, timeout=20)
    except requests.ConnectionError as error:
        if "RemoteDisconnected" not in repr(error):
            raise
        return session.post(url, headers=headers, timeout=20)


def reads_version(
    stack: Project, admin: requests.Session, at: str, dead: str, marker: str
) -> dict[str, object]:
    """A new app/flask version written on node `at` reaches the app (cache dropped)."""
    client = node_client(stack, node_ports(stack)[at])
    current = client.secrets.kv.v2.read_secret_version(
        path="app/flask", mount_point="secret", raise_on_deleted_version=True
    )["data"]["data"]
    written = client.secrets.kv.v2.create_or_update_secret(
        path="app/flask", mount_point="secret", secret={**current, "ha_marker": marker}
    )
    version = written["data"]["version"]
    refresh = post_as_a_browser(admin, f"{stack.url}/api/admin/vault/refresh", csrf(admin))
    assert refresh.status_code == 200, refresh.text
    deadline = time.monotonic() + 60
    while True:
        status = admin.get(f"{stack.url}/api/admin/vault/status", timeout=20).json()
        if status["paths"].get("app/flask", {}).get("version") == version:
            break
        assert time.monotonic() < deadline, status
        time.sleep(1)
    assert status["authenticated"] is True, status
    assert status["current_address"] != f"https://{dead}:8200", status
    assert str(status["current_address"]).startswith("https://vault-"), status
    return dict(status)


def test_setup_docker_ha_tls_survives_the_leader_killed_under_load(ha_project: Project) -> None:
    stack = ha_project
    output = stack.sh("./setup.sh", "--docker", "--ha", "--tls", "-p", stack.name, timeout=900)
    assert "docker-compose.vault-ha.yaml + docker-compose.vault-ha-tls.yaml" in output
    status = stack.sh("./setup.sh", "--status")
    roles = [line for line in status.splitlines() if line.strip().startswith("vault-")]
    assert len(roles) == 3 and sum("leader" in r for r in roles) == 1, status
    assert sum("standby" in r for r in roles) == 2 and "Vault certificate: valid" in status, status
    check_tls(stack)

    secrets = app_secrets(stack)
    admin = front_login(stack, "admin", secrets["admin_password"])
    everyone = {"vault-1", "vault-2", "vault-3"}
    first = leader(stack, everyone)
    assert first is not None

    stop = threading.Event()
    results: list[tuple[int, float]] = []
    threads = start_threads(THREADS, hammer, stack, secrets["user_password"], stop, results)
    try:
        time.sleep(3)  # load before the kill
        vault_nodes = containers(stack, stack.vault_project)
        stack.sh("docker", "kill", vault_nodes[first]["Id"])
        killed_at = time.monotonic()
        survivors = everyone - {first}
        new = None
        while new is None:
            assert time.monotonic() - killed_at < ELECTION_LIMIT, "no new leader"
            new = leader(stack, survivors)
            time.sleep(0.2)
        election = time.monotonic() - killed_at
        print(f"new leader {new} {election:.1f}s after {first} was killed")
        reads_version(stack, admin, new, first, "after-docker-kill")
        time.sleep(3)  # load after the reads resumed
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    failed = [code for code, _ in results if code != 200]
    assert len(results) > 50, f"too little load to mean anything: {len(results)} requests"
    assert not failed, f"{len(failed)} of {len(results)} requests failed: {set(failed)}"

    # Runbook "lost node": start it again; it comes back sealed, unseal-vault.sh (the keys
    # file), and it rejoins as a standby of the new leader.
    stack.sh("docker", "start", vault_nodes[first]["Id"])
    port = node_ports(stack)[first]
    env_addr = f"https://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            requests.get(f"{env_addr}/v1/sys/seal-status", verify=ca(stack), timeout=3)
            break
        except requests.RequestException:
            assert time.monotonic() < deadline, f"{first} did not answer after docker start"
            time.sleep(1)
    stack.env["VAULT_ADDR"] = env_addr
    stack.sh("vault/scripts/unseal-vault.sh")  # finds the project's CA by itself
    del stack.env["VAULT_ADDR"]
    deadline = time.monotonic() + 60
    while True:
        answer = requests.get(f"{env_addr}/v1/sys/leader", verify=ca(stack), timeout=5).json()
        if answer.get("leader_address") and not answer.get("is_self"):
            break
        assert time.monotonic() < deadline, json.dumps(answer)
        time.sleep(1)
    assert Path(stack.root / ".env").read_text().count("BACKEND_VAULT_ADDR=https://") == 1


def check_front_tls(stack: Project, username: str, password: str) -> None:
    """Users get the app over https only, from a front whose key only www-data reads."""
    url = stack.url
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{url}/", timeout=10)  # system CAs only: the certificate is refused
    page = requests.get(f"{url}/", verify=ca(stack), timeout=10)
    assert page.status_code == 200, page.text
    assert page.headers["Strict-Transport-Security"].startswith("max-age="), page.headers
    plain = requests.get(
        f"http://127.0.0.1:{stack.env['HTTP_PORT']}/api/health", allow_redirects=False, timeout=10
    )  # fmt: skip
    assert plain.status_code == 301, plain.text
    assert plain.headers["Location"] == f"{url}/api/health", plain.headers
    # The login's cookies (JWT and CSRF) are Secure: a browser never sends them over http.
    answer = requests.post(
        f"{url}/api/auth/login", json={"username": username, "password": password},
        verify=ca(stack), timeout=20,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    cookies = answer.raw.headers.getlist("Set-Cookie")
    assert any(c.startswith("access_token_cookie=") for c in cookies), cookies
    assert all("; Secure" in c for c in cookies), cookies
    front = containers(stack, stack.app_project)["frontend"]["Id"]
    key = stack.sh("docker", "exec", front, "stat", "-c", "%a %U", "/run/front-tls/front-key.pem")
    assert key.split() == ["400", "www-data"], key


def test_setup_docker_tls_single_node(tls_project: Project) -> None:
    """`./setup.sh --docker --tls`: one node on TLS, remembered; the host's scripts find the CA."""
    stack = tls_project
    for option, message in (("--mtls", "--mtls is a local-mode option"),
                            ("--auto-unseal", "--auto-unseal is a local-mode option")):  # fmt: skip
        refused = stack.sh("./setup.sh", "--docker", option, "-p", stack.name, check=False)
        assert message in refused and "Traceback" not in refused, refused
    # Certificates made by another user than the container's (as on a workstation, where the
    # host uid is not root): the server still gets its key through the one-shot's copy.
    stack.sh("vault/scripts/make-certs.sh")
    stack.sh("chown", "-R", "1000:1000", "vault/tls")
    output = stack.sh("./setup.sh", "--docker", "--tls", "-p", stack.name, timeout=900)
    assert "docker-compose.vault.yaml + docker-compose.vault-tls.yaml" in output
    assert "kept" in output and (stack.root / "vault/tls/vault-key.pem").stat().st_uid == 1000
    assert (stack.root / "vault/tls/front-key.pem").stat().st_uid == 1000
    assert f"Ready: https://127.0.0.1:{stack.env['HTTPS_PORT']}" in output, output
    port = stack.env["VAULT_PORT"]
    assert f"VAULT_ADDR=https://127.0.0.1:{port}" in output
    backend = containers(stack, stack.app_project)["backend"]
    env = dict(item.split("=", 1) for item in backend["Config"]["Env"])
    assert (env["VAULT_ADDR"], env["VAULT_CACERT"]) == (
        "https://vault:8200",
        "/run/vault-tls/ca.pem",
    )
    secrets = app_secrets(stack)
    check_front_tls(stack, "admin", secrets["admin_password"])
    admin = front_login(stack, "admin", secrets["admin_password"])
    panel = admin.get(f"{stack.url}/api/admin/vault/status", timeout=20).json()
    assert panel["authenticated"] is True and panel["current_address"] == "https://vault:8200"
    plain = requests.get(f"http://127.0.0.1:{port}/v1/sys/health", timeout=10)
    assert plain.status_code == 400, plain.text

    # The host's scripts over https without VAULT_CACERT: they find vault/tls/ca.pem.
    stack.env["VAULT_ADDR"] = f"https://127.0.0.1:{port}"
    stack.sh("vault/scripts/rotate-secret-id.sh")
    del stack.env["VAULT_ADDR"]
    # Vault stopped, then setup.sh with no option: TLS is remembered, Vault unsealed again
    # (the app served from its cache meanwhile); the healthcheck (bao status against the CA)
    # says healthy.
    stack.sh("./setup.sh", "--stop", "vault", timeout=300)
    again = stack.sh("./setup.sh", timeout=600)
    assert "docker-compose.vault-tls.yaml" in again
    vault_id = containers(stack, stack.vault_project)["vault"]["Id"]
    deadline = time.monotonic() + 90
    while stack.sh("docker", "inspect", "-f", "{{.State.Health.Status}}", vault_id).strip() != (
        "healthy"
    ):
        assert time.monotonic() < deadline, "the TLS Vault container never became healthy"
        time.sleep(2)
    front_login(stack, "admin", secrets["admin_password"])
    assert "Vault certificate: valid" in stack.sh("./setup.sh", "--status")
