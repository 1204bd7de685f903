"""A frozen PostgreSQL (SIGSTOP: it neither answers nor closes anything) costs a request at
most a bound, never a hang: 503 with Retry-After, /api/health unaffected, back by itself."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask

from tests.harness.postgres import PostgresCluster, find_pg_bin
from tests.harness.servers import missing_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

# STUCK_AFTER_SECONDS (5) plus a new connection's connect_timeout (5), with some slack.
BOUND = 12.0
FROZEN = 25.0


@pytest.fixture
def own_postgres() -> Iterator[PostgresCluster]:
    """A cluster of this test's own: freezing the session's one would stall other apps."""
    bindir = find_pg_bin()
    if bindir is None:
        missing_server("PostgreSQL server binaries (initdb, pg_ctl) not found")
        return
    cluster = PostgresCluster(bindir=bindir, root=Path(tempfile.mkdtemp(prefix="pgfrozen-")))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


def server_processes(cluster: PostgresCluster) -> list[int]:
    master = int((cluster.datadir / "postmaster.pid").read_text().split()[0])
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [master, *map(int, children)]


def resume_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # a backend that had just ended
            os.kill(pid, signal.SIGCONT)


def timed(call: Callable[[], object]) -> tuple[object, float]:
    started = time.monotonic()
    return call(), time.monotonic() - started


def test_a_frozen_database_answers_503_within_a_bound_and_comes_back(
    make_app: Callable[..., Flask], own_postgres: PostgresCluster
) -> None:
    database, user, password = own_postgres.create_app_database("frozen")
    app = make_app(DATABASE_URL=own_postgres.url(user, password, database))
    client = app.test_client()
    assert client.get("/api/ready").status_code == 200
    frozen = server_processes(own_postgres)
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    resume = threading.Timer(FROZEN, resume_all, (frozen,))
    resume.start()
    try:
        time.sleep(1.2)  # the pooled connection is now idle long enough to be pinged
        ready, ready_took = timed(lambda: client.get("/api/ready"))
        login, login_took = timed(
            lambda: client.post("/api/auth/login", json={"username": "admin", "password": "x"})
        )
        health, health_took = timed(lambda: client.get("/api/health"))
    finally:
        resume.cancel()
        resume_all(frozen)
    assert (ready.status_code, ready_took < BOUND) == (503, True), (ready.json, ready_took)  # type: ignore[attr-defined]
    assert "database" in ready.json["reason"]  # type: ignore[attr-defined]
    assert (login.status_code, login_took < BOUND) == (503, True), (login.json, login_took)  # type: ignore[attr-defined]
    assert login.headers["Retry-After"] == "2"  # type: ignore[attr-defined]
    assert health.status_code == 200 and health_took < 1.0  # type: ignore[attr-defined]
    # Resumed: served again by itself within 5 s (dead pooled connections are replaced).
    deadline = time.monotonic() + 5
    while client.get("/api/ready").status_code != 200:
        assert time.monotonic() < deadline, "not ready 5 s after PostgreSQL resumed"
        time.sleep(0.2)
