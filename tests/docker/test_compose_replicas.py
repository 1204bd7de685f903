"""`./setup.sh --docker --replicas 3`: three backend containers behind the front's balancer.

What tests/deploy/test_replicas.py proves of the shared state (Redis, the database) holds here
too; this module proves what only the Compose stack does: the front finds the replicas through
the `backend` service's DNS name, spreads requests over the three containers, and rides out
one of them killed (`docker kill`) and started again (`docker start`) on another address,
which the front's watcher (balancer-members.sh --follow) follows. Which container
answered is read from each container's own request log (`docker logs`), as an operator would.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from tests.docker.conftest import Project, copy_project, remove_project
from tests.docker.test_compose_stacks import csrf, kv, login
from tests.harness.load import Load

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(600)]

REPLICAS = 3
NAME = "fvrep"  # our own Compose projects (fvrep, fvrep-vault), never the default ones


@pytest.fixture(scope="module")
def stack(docker_images: list[str]) -> Iterator[Project]:
    project = copy_project(NAME)
    try:
        output = project.sh(
            "./setup.sh", "--docker", "-p", NAME, "--replicas", str(REPLICAS), timeout=900
        )
        assert f"{REPLICAS} backend replica(s)" in output
        yield project
    finally:
        remove_project(project)


@pytest.fixture(scope="module")
def admin(stack: Project) -> requests.Session:
    """Logged in once: the login limits count per client address, and every request of this
    module comes from the same one (the front's view of the host)."""
    return login(stack.url, "admin", kv(stack, "app/flask")["admin_password"])


def backends(stack: Project) -> list[dict[str, Any]]:
    """The backend containers, by their Compose number (replica 1 first)."""
    ids = stack.compose("app", "ps", "-q", "backend").split()
    inspected: list[dict[str, Any]] = json.loads(stack.sh("docker", "inspect", *ids))
    return sorted(
        inspected, key=lambda c: int(c["Config"]["Labels"]["com.docker.compose.container-number"])
    )


def front(stack: Project) -> str:
    return stack.compose("app", "ps", "-q", "frontend").strip()


def app_net_address(container: dict[str, Any]) -> str:
    """The address the front dials: the container's on the app network."""
    return str(container["NetworkSettings"]["Networks"][f"{NAME}_app_net"]["IPAddress"])


def requests_logged(stack: Project, container: str, since: float, path: str) -> int:
    """Requests for `path` in the container's own log (one JSON line per request) since then."""
    log = stack.sh("docker", "logs", "--since", f"{since:.3f}", container)
    count = 0
    for line in log.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        count += isinstance(entry, dict) and entry.get("path") == path
    return count


def per_replica(stack: Project, since: float, path: str) -> list[int]:
    return [requests_logged(stack, c["Id"], since, path) for c in backends(stack)]


def test_the_front_balances_over_every_replica(stack: Project) -> None:
    containers = backends(stack)
    assert len(containers) == REPLICAS
    assert all(c["State"]["Health"]["Status"] == "healthy" for c in containers)
    # One balancer member per container, by its address (balancer-members.sh --dns backend).
    members = stack.sh("docker", "exec", front(stack), "cat", "/tmp/balancer-members.conf")
    listed = sorted(line.split('"')[1] for line in members.splitlines())
    assert listed == sorted(f"http://{app_net_address(c)}:8000" for c in containers), members
    # Round robin over the three, no sticky session: each container answered its share
    # (counted before and after: setup.sh's own readiness probes are in the logs too).
    before = per_replica(stack, 0, "/api/ready")
    for _ in range(3 * REPLICAS):
        assert requests.get(f"{stack.url}/api/ready", timeout=20).status_code == 200
    after = per_replica(stack, 0, "/api/ready")
    assert [a - b for a, b in zip(after, before, strict=True)] == [3] * REPLICAS


def front_log_since(stack: Project, since: float) -> str:
    return stack.sh("docker", "logs", "--since", f"{since:.3f}", front(stack))


def wait_for(check: Callable[[], bool], limit: float, pause: float = 0.5) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(pause)
    return False


@pytest.mark.timeout(300)
def test_a_replica_killed_under_load_costs_no_request(
    stack: Project, admin: requests.Session
) -> None:
    """4 clients through the front for ~20-30 s; replica 2 killed (`docker kill`, SIGKILL) after
    3 s, another container takes its address meanwhile, then it is `docker start`ed (so with
    another address): no GET fails, the front marks the old member down, follows the replica
    to its new address without being recreated, and sends it traffic again."""
    load = Load(stack.url, {c.name: str(c.value) for c in admin.cookies})
    clients = [threading.Thread(target=load.run) for _ in range(4)]
    victim = backends(stack)[1]
    old_address = app_net_address(victim)
    squatter = ""
    began = time.time()
    for client in clients:
        client.start()
    phases: dict[str, float] = {}
    try:
        time.sleep(3)
        started = time.monotonic()
        stack.sh("docker", "kill", victim["Id"])
        down = (
            f"disabling worker for ({old_address}:8000)",
            f"DISABLING http://{old_address}:8000",
        )
        assert wait_for(lambda: any(line in front_log_since(stack, began) for line in down), 20), (
            front_log_since(stack, began)[-3000:]
        )
        phases["marked down"] = time.monotonic() - started
        # Any container started now gets the freed address (Docker hands out the lowest free
        # one): a one-off container, as `docker compose run` would start, takes it.
        squatter = stack.sh(
            "docker", "run", "-d", "--rm", "--network", f"{NAME}_app_net", "--cap-drop", "ALL",
            "--read-only", "debian:12.12-slim", "sleep", "300",
        ).strip()  # fmt: skip
        stack.sh("docker", "start", victim["Id"])
        phases["started"] = time.monotonic() - started
        new_address = app_net_address(next(c for c in backends(stack) if c["Id"] == victim["Id"]))
        assert new_address != old_address
        restarted_at = time.time() - 1

        def serving() -> bool:
            return requests_logged(stack, victim["Id"], restarted_at, "/api/auth/me") >= 10

        assert wait_for(serving, 60, pause=1), front_log_since(stack, began)[-3000:]
        phases["serving again"] = time.monotonic() - started
        # Not recreated: the front's watcher saw the new address and restarted Apache gracefully,
        # once (the replica gone, before, changed nothing: the balancer had marked it down).
        followed = [
            line
            for line in front_log_since(stack, began).splitlines()
            if line.startswith("balancer-members.sh:") and "graceful restart" in line
        ]
        assert len(followed) == 1 and f"http://{new_address}:8000" in followed[0], followed
        time.sleep(2)  # a while with all three again
    finally:
        load.stop.set()
        for client in clients:
            client.join(timeout=30)
        if squatter:
            stack.sh("docker", "rm", "-f", squatter, check=False)
    # The measurement, seen with -s: outcomes, and seconds after the kill.
    print(f"\nload: {dict(load.outcomes)}; { ({k: round(v, 1) for k, v in phases.items()}) }")
    assert load.failures == [], load.failures[:10]
    assert load.outcomes["ok"] > 500


def test_cache_refresh_reaches_every_container(stack: Project, admin: requests.Session) -> None:
    """ "Refresh secret cache" sent to one container reaches every container's workers (the
    mechanism and its 1 s bound: tests/deploy/test_replicas.py)."""
    refreshed = admin.post(f"{stack.url}/api/admin/vault/refresh", headers=csrf(admin), timeout=20)
    assert refreshed.status_code == 200, refreshed.text
    since = time.time() - 0.2
    time.sleep(1.1)  # a worker compares the generation at most once a second
    seen = [
        admin.get(f"{stack.url}/api/admin/vault/status", timeout=20).json()["cache_generation"]
        for _ in range(4 * REPLICAS)
    ]
    assert seen == [refreshed.json()["generation"]] * len(seen)
    assert all(n >= 1 for n in per_replica(stack, since, "/api/admin/vault/status"))


def test_login_limit_spans_the_containers(stack: Project) -> None:
    """Five wrong passwords for one account from one address, dealt round robin to the three
    containers: the sixth attempt is refused whichever container gets it. Last: it spends
    this address's login budget for a minute."""
    since = time.time() - 1
    wrong = {"username": "mallory-target", "password": "not the password"}
    statuses = [
        requests.post(f"{stack.url}/api/auth/login", json=wrong, timeout=20).status_code
        for _ in range(6)
    ]
    assert statuses == [401] * 5 + [429]
    assert all(n >= 1 for n in per_replica(stack, since, "/api/auth/login"))
