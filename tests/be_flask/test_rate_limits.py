"""Login rate limits per account and per client address, kept in Redis, not fooled by headers."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.harness.app import random_name
from tests.harness.redis_server import private_redis_server, system_redis_url


@pytest.fixture(scope="module")
def redis_server() -> str:
    return system_redis_url()


@pytest.fixture
def limited_app(make_app: Callable[..., Flask], redis_server: str) -> Callable[..., Flask]:
    """Apps with rate limits on, in Redis, under a key prefix of their own. The system Redis
    has no password, so the backend sends none (test_redis_password.py covers one that has)."""
    prefix = f"test-{secrets.token_hex(4)}"

    def build(**settings: Any) -> Flask:
        defaults = {"RATELIMIT_ENABLED": True, "REDIS_URL": redis_server, "REDIS_AUTH": "none"}
        return make_app(**{**defaults, "RATELIMIT_KEY_PREFIX": prefix, **settings})

    return build


def attempt(client: FlaskClient, username: str, password: str = "wrong", **headers: str) -> Any:  # noqa: S107
    return client.post(
        "/api/auth/login", json={"username": username, "password": password}, headers=headers
    )


def assert_rate_limited(response: Any) -> None:
    assert response.status_code == 429
    assert response.is_json
    assert response.json["status"] == 429
    assert int(response.headers["Retry-After"]) > 0


def test_sixth_failed_attempt_on_an_account_from_one_address_is_429(
    limited_app: Callable[..., Flask], vault_secrets: dict[str, Any]
) -> None:
    client = limited_app().test_client()
    for _ in range(5):
        assert attempt(client, "user").status_code == 401
    # Even the right password is refused now, from this address, for the window.
    assert_rate_limited(attempt(client, "user", vault_secrets["user_password"]))


def test_sixth_attempt_from_one_address_is_429_whatever_the_username(
    limited_app: Callable[..., Flask],
) -> None:
    client = limited_app().test_client()
    for _ in range(5):
        assert attempt(client, random_name()).status_code == 401
    assert_rate_limited(attempt(client, random_name()))


def test_forged_forwarded_for_does_not_reset_the_counter(
    limited_app: Callable[..., Flask],
) -> None:
    """Without a trusted proxy the header is ignored: a new fake address changes nothing."""
    client = limited_app().test_client()
    for i in range(5):
        forged = f"203.0.113.{i}"
        assert attempt(client, random_name(), **{"X-Forwarded-For": forged}).status_code == 401
    assert_rate_limited(attempt(client, random_name(), **{"X-Forwarded-For": "198.51.100.7"}))


def test_behind_one_proxy_only_its_hop_counts(limited_app: Callable[..., Flask]) -> None:
    """With TRUSTED_PROXIES=1 the proxy's appended entry is the address; the client's are not."""
    client = limited_app(TRUSTED_PROXIES=1).test_client()
    for i in range(5):
        header = f"203.0.113.{i}, 192.0.2.10"  # forged first entry, proxy-appended last entry
        assert attempt(client, random_name(), **{"X-Forwarded-For": header}).status_code == 401
    assert_rate_limited(
        attempt(client, random_name(), **{"X-Forwarded-For": "198.51.100.1, 192.0.2.10"})
    )
    # Another client behind the same proxy is not affected.
    assert attempt(client, random_name(), **{"X-Forwarded-For": "192.0.2.11"}).status_code == 401


def test_counters_are_shared_between_processes_through_redis(
    limited_app: Callable[..., Flask],
) -> None:
    """Two apps (as two workers would) on one Redis see one budget per address and account."""
    first, second = limited_app().test_client(), limited_app().test_client()
    target = random_name()
    for client in (first, second, first, second, first):
        assert attempt(client, target).status_code == 401
    assert_rate_limited(attempt(second, target))


def test_successful_logins_do_not_use_up_the_budget(
    limited_app: Callable[..., Flask], vault_secrets: dict[str, Any]
) -> None:
    client = limited_app().test_client()
    for _ in range(8):
        assert attempt(client, "user", vault_secrets["user_password"]).status_code == 200


def test_logins_the_database_could_not_check_do_not_use_up_the_budget(
    limited_app: Callable[..., Flask], vault_secrets: dict[str, Any]
) -> None:
    """A database outage answers logins 503: no password was checked, so no budget is spent
    (else every user is locked out for the window once the database is back)."""
    down = limited_app(DATABASE_URL="postgresql+psycopg://nobody:nothing@127.0.0.1:1/none")
    client = down.test_client()
    password = vault_secrets["user_password"]
    assert [attempt(client, "user", password).status_code for _ in range(6)] == [503] * 6
    back = limited_app().test_client()  # same counters (prefix), same address
    assert attempt(back, "user", password).status_code == 200
    assert [attempt(back, "user").status_code for _ in range(6)] == [401] * 5 + [429]


def test_refresh_is_limited_per_address(
    limited_app: Callable[..., Flask], vault_secrets: dict[str, Any]
) -> None:
    client = limited_app(REFRESH_LIMITS="2/minute").test_client()
    assert attempt(client, "user", vault_secrets["user_password"]).status_code == 200
    responses = []
    for _ in range(3):
        csrf = client.get_cookie("csrf_refresh_token")
        assert csrf is not None
        responses.append(client.post("/api/auth/refresh", headers={"X-CSRF-TOKEN": csrf.value}))
    assert [response.status_code for response in responses] == [200, 200, 429]
    # The extension's headers: what is left of the budget, and when to come back.
    assert responses[0].headers["X-RateLimit-Remaining"] == "1"
    assert int(responses[2].headers["Retry-After"]) > 0


def test_redis_down_does_not_take_logins_down(
    make_app: Callable[..., Flask], vault_secrets: dict[str, Any]
) -> None:
    """Nothing listens on port 1: limits fall back to this process, logins keep working."""
    app = make_app(RATELIMIT_ENABLED=True, REDIS_URL="redis://127.0.0.1:1/0")
    client = app.test_client()
    assert attempt(client, "user", vault_secrets["user_password"]).status_code == 200
    statuses = [attempt(client, "user").status_code for _ in range(6)]
    assert statuses == [401] * 5 + [429]


def test_a_frozen_redis_costs_logins_its_timeout_once_and_is_said_once(
    make_app: Callable[..., Flask],
    vault_secrets: dict[str, Any],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis stopped (SIGSTOP) under logins: none waits on it past its 0.25 s timeout (then
    the process counts for a second without asking), and the log says so once, not per login.
    Resumed after 5 s whatever happens, so that a login waiting on it shows as a 5 s one."""
    password = vault_secrets["user_password"]
    with private_redis_server(tmp_path) as (port, server):
        app = make_app(
            RATELIMIT_ENABLED=True,
            REDIS_URL=f"redis://127.0.0.1:{port}/0",
            REDIS_AUTH="none",
            RATELIMIT_KEY_PREFIX=random_name("frozen"),
        )
        client = app.test_client()
        assert attempt(client, "user", password).status_code == 200
        os.kill(server.pid, signal.SIGSTOP)
        resume = threading.Timer(5.0, os.kill, (server.pid, signal.SIGCONT))
        resume.start()
        answers = []
        try:
            with caplog.at_level(logging.WARNING, logger="src.limiter"):
                for _ in range(8):
                    started = time.monotonic()
                    status = attempt(client, "user", password).status_code
                    answers.append((status, round(time.monotonic() - started, 2)))
                    time.sleep(0.2)
        finally:
            resume.cancel()
            os.kill(server.pid, signal.SIGCONT)
    assert [status for status, _ in answers] == [200] * 8, answers
    assert max(took for _, took in answers) < 1.0, answers
    assert caplog.text.count("rate limit storage down") == 1, caplog.text


def from_address(index: int) -> dict[str, str]:
    """Headers of a client at its own (loopback) address behind one trusted proxy."""
    return {"X-Forwarded-For": f"127.0.{index // 250}.{index % 250 + 2}"}


def test_a_stranger_cannot_lock_the_admin_out(
    limited_app: Callable[..., Flask], vault_secrets: dict[str, Any]
) -> None:
    """Attack: a flood of bad logins for admin from one address; admin logs in from another."""
    client = limited_app(TRUSTED_PROXIES=1).test_client()
    statuses = [attempt(client, "admin", **from_address(1)).status_code for _ in range(12)]
    assert statuses == [401] * 5 + [429] * 7
    owner = attempt(client, "admin", vault_secrets["admin_password"], **from_address(2))
    assert owner.status_code == 200, owner.get_data(as_text=True)


def test_attempts_spread_over_addresses_raise_the_alarm_and_slow_down(
    limited_app: Callable[..., Flask],
    vault_secrets: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One account, a new address per attempt: no hard lock, but an alert and a slow-down."""
    app = limited_app(TRUSTED_PROXIES=1, ACCOUNT_ALERT_LIMITS="4/minute")
    client = app.test_client()
    target = random_name()
    times = []
    for i in range(7):
        started = time.monotonic()
        # Normalised: "Name" and "name" are one account.
        name = target.upper() if i % 2 else target
        assert attempt(client, name, **from_address(10 + i)).status_code == 401
        times.append(time.monotonic() - started)
    alerts = [r for r in caplog.records if getattr(r, "event", None) == "account under attack"]
    assert alerts and alerts[0].name == "security"
    assert min(times[4:]) >= 0.2 > max(times[:3]), times
    # The owner, from yet another address, is neither locked out nor slowed down.
    owner_started = time.monotonic()
    owner = attempt(client, "user", vault_secrets["user_password"], **from_address(99))
    assert owner.status_code == 200 and time.monotonic() - owner_started < 2


def test_the_hourly_limit_holds_when_the_minute_one_does_not(
    limited_app: Callable[..., Flask],
) -> None:
    client = limited_app(LOGIN_LIMITS="100/minute;3/hour").test_client()
    statuses = [attempt(client, random_name()).status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]


def test_concurrent_attempts_cannot_overshoot_the_limit(
    limited_app: Callable[..., Flask],
) -> None:
    """Race: 16 bad logins at once from one address; exactly the budget gets through to 401."""
    app = limited_app()
    clients = [app.test_client() for _ in range(16)]
    barrier = threading.Barrier(len(clients))

    def fire(client: FlaskClient) -> int:
        barrier.wait(timeout=10)
        return int(attempt(client, random_name()).status_code)

    with ThreadPoolExecutor(max_workers=len(clients)) as pool:
        statuses = sorted(pool.map(fire, clients))
    assert statuses == [401] * 5 + [429] * 11, statuses
