"""Three-node Raft HA under load: the leader dies, then a second node; no request fails."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import hvac
import pytest
import requests

from tests.be_flask.test_gunicorn import session_for
from tests.be_flask.test_rotation_under_load import hammer, refresh_everywhere
from tests.harness.app import Gunicorn, gunicorn_env, publish_database, put_secret, read_secret
from tests.harness.load import start_threads
from tests.harness.openbao import OpenBao
from tests.harness.openbao_cluster import Cluster, running_cluster

# Production topology (issues 13, 14): run by `make test-topology`, which CI runs too,
# so that `make test` stays within its time budget.
pytestmark = pytest.mark.topology

THREADS = 4
WORKERS = 2
ELECTION_LIMIT = 10.0  # seconds from the leader's death to a new active node


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture
def backend(cluster: Cluster, postgres: Any, start_gunicorn: Any) -> Iterator[Gunicorn]:
    """gunicorn with every node in VAULT_ADDR and a 1 s cache, so Vault is read all along."""
    publish_database(cluster.nodes[0], postgres, "ha")
    env = gunicorn_env(
        cluster.nodes[0],
        VAULT_ADDR=cluster.addresses,
        VAULT_CACHE_TTL="1",
        VAULT_CONNECT_TIMEOUT="1",
        VAULT_READ_TIMEOUT="2",
        VAULT_BACKOFF_INITIAL="0.2",
        VAULT_BACKOFF_MAX="1",
        RATELIMIT_ENABLED="false",
        REDIS_URL="",
    )
    server = start_gunicorn(env, workers=WORKERS, name="vault-ha")
    yield server
    server.stop()


def admin_status(server: Gunicorn, admin: requests.Session) -> dict[str, Any]:
    response = admin.get(
        f"{server.url}/api/admin/vault/status", headers={"Connection": "close"}, timeout=10
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def kill(node: OpenBao) -> None:
    node.kill(signal.SIGKILL)
    assert node.proc is not None
    node.proc.wait(5)


def wait_for_new_leader(cluster: Cluster, dead: OpenBao) -> tuple[OpenBao, float]:
    started = time.monotonic()
    leader = cluster.wait_for_leader(ELECTION_LIMIT + 5)
    assert leader is not dead
    return leader, time.monotonic() - started


def reads_version(
    cluster: Cluster, server: Gunicorn, admin: requests.Session, marker: str
) -> tuple[int, str]:
    """Write a new app/flask version, refresh the app: the version it reads and from where."""
    leader = cluster.wait_for_leader(5)
    leader.root_token = cluster.root_token
    put_secret(leader, "app/flask", {**read_secret(leader, "app/flask"), "ha_marker": marker})
    version = int(
        leader.client(cluster.root_token).secrets.kv.v2.read_secret_version(
            path="app/flask", mount_point="secret", raise_on_deleted_version=True
        )["data"]["metadata"]["version"]
    )
    refresh_everywhere(server, admin)
    # Every worker has its own client and cache: wait until both gunicorn workers read it
    # (a new connection per request, so that the kernel hands them to either worker).
    deadline, versions = time.monotonic() + 15, {}
    while len(versions) < WORKERS or set(versions.values()) != {version}:
        assert time.monotonic() < deadline, versions
        status = admin_status(server, admin)
        versions[status["pid"]] = status["paths"]["app/flask"]["version"]
        time.sleep(0.1)
    return version, str(status["current_address"])


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_leader_then_second_node_killed_under_load(cluster: Cluster, backend: Gunicorn) -> None:
    passwords = read_secret(cluster.nodes[0], "app/flask")
    admin = session_for(backend, "admin", passwords["admin_password"])
    stop = threading.Event()
    results: list[tuple[int, float]] = []
    threads = start_threads(THREADS, hammer, backend, passwords["user_password"], stop, results)
    try:
        time.sleep(3)
        first_leader = cluster.wait_for_leader(5)
        kill(first_leader)
        leader, election = wait_for_new_leader(cluster, first_leader)
        assert election < ELECTION_LIMIT, election
        # Reads resume on the new leader: a version written there reaches the app. Its
        # client skipped the dead node (connection refused) and any standby's 429.
        version, address = reads_version(cluster, backend, admin, "after-first-kill")
        assert address != first_leader.addr

        # Second node down: one of three is no quorum, so no leader can be elected and
        # nothing can be written. OpenBao's standby still serves reads from its own copy of
        # the log (read-enabled standby), so the app keeps answering, with the last
        # committed version, from that standby or from its cache.
        kill(leader)
        survivor = cluster.running()[0]
        outage_until = time.monotonic() + 6
        while time.monotonic() < outage_until:
            assert cluster.leader() is None, "a single node of three must not become active"
            time.sleep(0.5)
        with pytest.raises((hvac.exceptions.VaultError, requests.RequestException)):
            survivor.client(cluster.root_token).secrets.kv.v2.create_or_update_secret(
                path="ha-probe", secret={"written": "without quorum"}, mount_point="secret"
            )
        status = admin_status(backend, admin)
        assert status["paths"]["app/flask"]["version"] == version, status
        assert status["current_address"] == survivor.addr or status["outage"], status

        # Quorum back (an operator restarts and unseals the first leader): a leader again
        # within the limit, and the app reads from Vault once more.
        first_leader.start()
        cluster.unseal(first_leader)
        _, election = wait_for_new_leader(cluster, leader)
        assert election < ELECTION_LIMIT + 5, election
        newer, _ = reads_version(cluster, backend, admin, "quorum-back")
        assert newer == version + 1
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    failed = [status for status, _ in results if status != 200]
    assert len(results) > 100 and failed == [], (len(results), failed[:20])
