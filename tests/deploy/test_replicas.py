"""`./setup.sh --local --replicas 3`: three gunicorn replicas behind Apache's balancer.

What lives in Redis or the database must hold whichever replica answers (each test talks to
the replicas one by one over their own Unix sockets, as the front would, so which replica
answers is chosen, not left to the balancer); and the front must ride out a replica dying.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest

from orchestration.vault_scripts import lib
from tests.deploy.test_setup_local import LocalStack, login, new_local_stack
from tests.harness.load import Load

# Production topology (issues 13, 14): run by `make test-topology`, which CI runs too,
# so that `make test` stays within its time budget.
pytestmark = [pytest.mark.topology, pytest.mark.slow]

REPLICAS = 3
# One client address per simulated browser, so that no test spends another's login budget.
ADDRESSES = (f"127.0.{n // 250}.{n % 250 + 2}" for n in itertools.count(1000))


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with new_local_stack() as local:
        output = local.up("--replicas", str(REPLICAS))
        assert f"balancing over {REPLICAS} backend replica(s)" in output
        yield local


@dataclass
class Answer:
    status: int
    body: dict[str, Any]


@dataclass
class Browser:
    """One user's cookies, sent to whichever replica each call names, from one client address
    (the X-Forwarded-For Apache would write; the replicas trust that one hop)."""

    stack: LocalStack
    client_ip: str = field(default_factory=lambda: next(ADDRESSES))
    cookies: dict[str, str] = field(default_factory=dict)

    def call(
        self, replica: int, method: str, path: str, body: Any = None, csrf: str = ""
    ) -> Answer:
        socket_path = self.stack.data_dir / "run" / "backend" / f"backend-{replica}.sock"
        headers = {"X-Forwarded-For": self.client_ip, "Content-Type": "application/json"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if csrf:
            headers["X-CSRF-TOKEN"] = self.cookies[csrf]
        connection = lib.UnixHTTPConnection(str(socket_path), 10)
        try:
            payload = None if body is None else json.dumps(body)
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            text = response.read().decode()
            for header in response.headers.get_all("Set-Cookie") or []:
                self.keep_cookie(header)
        finally:
            connection.close()
        return Answer(response.status, json.loads(text) if text.startswith("{") else {})

    def keep_cookie(self, header: str) -> None:
        for name, morsel in SimpleCookie(header).items():
            if morsel["max-age"] == "0" or not morsel.value:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = morsel.value


def logged_in(stack: LocalStack, replica: int, username: str, password: str) -> Browser:
    browser = Browser(stack)
    answer = browser.call(
        replica, "POST", "/api/auth/login", {"username": username, "password": password}
    )
    assert answer.status == 200, answer
    return browser


def replica_pid(stack: LocalStack, index: int) -> int:
    return int((stack.data_dir / "run" / f"backend-{index}.pid").read_text())


def worker_pids(master: int) -> set[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return {int(pid) for pid in children}


def test_status_lists_every_replica_and_the_front_balances_over_them(stack: LocalStack) -> None:
    status = stack.run("--status").stdout
    assert f"backend:    {REPLICAS} replica(s)\n" in status
    for index in range(1, REPLICAS + 1):
        where = rf"\S+/backend-{index}\.sock, /api/health HTTP 200"
        line = rf"^backend-{index}:  running \(pid \d+\), {where}$"
        assert re.search(line, status, re.M), status
    members = (stack.data_dir / "run" / "apache" / "balancer-members.conf").read_text()
    assert members.count("BalancerMember") == REPLICAS
    # Through the front, the answers come from every replica's workers, no sticky session.
    admin = login(stack.url, "admin", stack.admin_password())
    masters = {replica_pid(stack, i): i for i in range(1, REPLICAS + 1)}
    owners = {pid: masters[m] for m in masters for pid in worker_pids(m)}
    seen = {
        owners[admin.get(f"{stack.url}/api/admin/vault/status", timeout=10).json()["pid"]]
        for _ in range(3 * REPLICAS)
    }
    assert seen == set(range(1, REPLICAS + 1))


def test_login_rate_limit_is_counted_across_replicas(stack: LocalStack) -> None:
    """Five wrong passwords per minute per address, spread over three replicas: the sixth is 429."""
    browser = Browser(stack)
    wrong = {"username": "admin", "password": "not the password"}
    statuses = [
        browser.call(1 + i % REPLICAS, "POST", "/api/auth/login", wrong).status for i in range(6)
    ]
    assert statuses == [401] * 5 + [429]
    right = {"username": "admin", "password": stack.admin_password()}
    assert browser.call(2, "POST", "/api/auth/login", right).status == 429


def test_refresh_token_reuse_is_caught_on_another_replica(stack: LocalStack) -> None:
    thief = logged_in(stack, 1, "admin", stack.admin_password())
    user = Browser(stack, client_ip=thief.client_ip, cookies=dict(thief.cookies))
    # The user's browser rotates the refresh token on replica 2...
    assert user.call(2, "POST", "/api/auth/refresh", csrf="csrf_refresh_token").status == 200
    time.sleep(5.2)  # past REFRESH_REUSE_GRACE_SECONDS (a second tab is not a thief)
    # ... the copy comes back on replica 3: refused, and the whole family ends, on replica 1 too.
    replayed = thief.call(3, "POST", "/api/auth/refresh", csrf="csrf_refresh_token")
    assert replayed.status == 401
    assert user.call(1, "POST", "/api/auth/refresh", csrf="csrf_refresh_token").status == 401


def test_logout_on_one_replica_ends_the_session_on_every_replica(stack: LocalStack) -> None:
    browser = logged_in(stack, 1, "admin", stack.admin_password())
    kept = dict(browser.cookies)  # what a stolen copy of the cookies would be
    assert browser.call(3, "GET", "/api/auth/me").status == 200
    assert browser.call(2, "POST", "/api/auth/logout", csrf="csrf_refresh_token").status == 200
    copy = Browser(stack, client_ip=browser.client_ip, cookies=kept)
    for replica in range(1, REPLICAS + 1):
        assert copy.call(replica, "GET", "/api/auth/me").status == 401
        assert (
            copy.call(replica, "POST", "/api/auth/refresh", csrf="csrf_refresh_token").status == 401
        )


def test_admin_refresh_reaches_every_worker_of_every_replica_within_1s(stack: LocalStack) -> None:
    admin = logged_in(stack, 1, "admin", stack.admin_password())
    workers = {i: worker_pids(replica_pid(stack, i)) for i in range(1, REPLICAS + 1)}
    assert all(len(pids) >= 2 for pids in workers.values()), workers

    def generations_from_every_worker() -> dict[int, int]:
        seen: dict[int, int] = {}
        for replica, pids in workers.items():
            for _ in range(100):  # new connections until each of this replica's workers answered
                status = admin.call(replica, "GET", "/api/admin/vault/status").body
                seen[status["pid"]] = status["cache_generation"]
                if pids <= seen.keys():
                    break
        assert seen.keys() == set().union(*workers.values())
        return seen

    generations_from_every_worker()  # every worker has checked the generation once
    refreshed = admin.call(2, "POST", "/api/admin/vault/refresh", csrf="csrf_access_token")
    assert refreshed.status == 200
    asked_at = time.monotonic()
    # A worker compares the generation at most once a second, before a request: 1 s after the
    # refresh, the first request any worker of any replica answers already carries the new one.
    time.sleep(max(0.0, asked_at + 1.0 - time.monotonic()))
    assert set(generations_from_every_worker().values()) == {refreshed.body["generation"]}


def replica_requests(stack: LocalStack, index: int) -> float:
    """Requests replica `index` answered, from its own /metrics (the front does not pass it)."""
    answer = Browser(stack)
    socket_path = stack.data_dir / "run" / "backend" / f"backend-{index}.sock"
    connection = lib.UnixHTTPConnection(str(socket_path), 10)
    try:
        connection.request("GET", "/metrics", headers={"X-Forwarded-For": answer.client_ip})
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    lines = [line for line in text.splitlines() if line.startswith("http_requests_total{")]
    return sum(float(line.split()[-1]) for line in lines if 'endpoint="metrics' not in line)


def wait_for_line(log: Path, offset: int, text: str, limit: float = 10) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if text in log.read_bytes()[offset:].decode(errors="replace"):
            return True
        time.sleep(0.2)
    return False


@pytest.mark.timeout(240)
def test_a_replica_killed_under_load_costs_no_request(stack: LocalStack) -> None:
    """4 clients for ~20 s through Apache; replica 2 killed (SIGKILL, a crash) after 3 s, then
    brought back by re-running ./setup.sh: no GET fails, the front marks the member down and
    sends it traffic again once it is back."""
    user = login(stack.url, "admin", stack.admin_password())
    load = Load(stack.url, dict(user.cookies))
    clients = [threading.Thread(target=load.run) for _ in range(4)]
    apache_log = stack.data_dir / "logs" / "apache.log"
    log_before = apache_log.stat().st_size
    for client in clients:
        client.start()
    try:
        time.sleep(3)
        started = time.monotonic()
        os.killpg(replica_pid(stack, 2), signal.SIGKILL)  # master and workers at once
        # The requests it had in flight broke (and were resent, see Load.get); it is out of the
        # balancer at once, and said so when Apache next tries it (its retry period, 5 s).
        marked_down = wait_for_line(apache_log, log_before, "disabling worker for (backend-2:80)")
        assert marked_down, apache_log.read_bytes()[log_before:][-3000:]
        phases = {"marked down": time.monotonic() - started}
        assert "backend-2:  stopped" in stack.run("--status").stdout

        again = stack.run("--local")  # starts what is down: replica 2 only
        assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
        assert "starting backend replica 2 (gunicorn)" in again.stdout
        assert "starting backend replica 1 (gunicorn)" not in again.stdout
        phases["restarted"] = time.monotonic() - started
        # Back in the balancer at its next retry (every 5 s): it answers the clients' GETs.
        served = 0.0
        deadline = time.monotonic() + 30  # workers booting on a busy machine, then the retry
        while time.monotonic() < deadline and served < 20:
            time.sleep(0.5)
            served = replica_requests(stack, 2)
        assert served >= 20, f"replica 2 answered {served} requests after its restart"
        phases["serving again"] = time.monotonic() - started
        time.sleep(2)  # a while with all three again
    finally:
        load.stop.set()
        for client in clients:
            client.join(timeout=30)
    # The measurement, seen with -s: outcomes, and seconds after the kill.
    print(f"\nload: {dict(load.outcomes)}; { ({k: round(v, 1) for k, v in phases.items()}) }")
    assert load.failures == [], load.failures[:10]
    assert load.outcomes["ok"] > 500


def running(pid: int) -> bool:
    """Alive and not a zombie waiting for a parent that does not reap (a container's pid 1)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_stop_stops_every_replica(stack: LocalStack) -> None:
    masters = [replica_pid(stack, i) for i in range(1, REPLICAS + 1)]
    workers = set().union(*(worker_pids(m) for m in masters))
    stopped = stack.run("--stop")
    assert stopped.returncode == 0, stopped.stderr
    for index in range(1, REPLICAS + 1):
        assert f"stopping backend replica {index}: ok" in stopped.stdout
    assert not [pid for pid in [*masters, *workers] if running(pid)]
    assert not list((stack.data_dir / "run" / "backend").glob("*.sock"))
