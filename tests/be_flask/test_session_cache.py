"""The session cache (src/session_cache.py) when Redis fails, hangs or forgets, and its bound.

Revocation through the app is covered in test_auth_next_request.py (both ways). Here: what a
user sees when Redis is refused or frozen (answers on time, from the database), when the
generation disappears (Redis restarted or flushed: the next check reads the database), and a
change made around the app (SQL in psql) reaching every worker within SESSION_CACHE_SECONDS.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY

from src.session_cache import SessionCache
from tests.be_flask.test_users import ENDED, PASSWORD, create_user
from tests.harness.app import AppDatabase, login, random_name
from tests.harness.redis_server import private_redis_server


def checks(source: str) -> float:
    return REGISTRY.get_sample_value("session_checks_total", {"source": source}) or 0.0


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of this test's own, to freeze and flush."""
    with private_redis_server(tmp_path) as (port, server):
        yield f"redis://127.0.0.1:{port}/0", server


def cached_app(make_app: Callable[..., Flask], redis_url: str, seconds: float) -> Flask:
    return make_app(
        REDIS_URL=redis_url,
        REDIS_AUTH="none",
        RATELIMIT_KEY_PREFIX=random_name("session-cache"),
        SESSION_CACHE_SECONDS=seconds,
    )


def user_session(app: Flask, admin: FlaskClient) -> tuple[dict[str, Any], FlaskClient]:
    user = create_user(admin, role="user")
    client = app.test_client()
    assert login(client, user["username"], PASSWORD).status_code == 200
    return user, client


def test_a_session_is_answered_from_memory_after_its_first_check(
    make_app: Callable[..., Flask], admin_client: FlaskClient, private_redis: tuple[str, Any]
) -> None:
    app = cached_app(make_app, private_redis[0], 600)
    _, client = user_session(app, admin_client)
    before = checks("cache"), checks("database")
    for _ in range(5):
        assert client.get("/api/auth/me").status_code == 200
    assert (checks("cache") - before[0], checks("database") - before[1]) == (4, 1)


def test_redis_refused_every_check_reads_the_database(
    make_app: Callable[..., Flask], admin_client: FlaskClient
) -> None:
    app = cached_app(make_app, "redis://127.0.0.1:1/0", 600)
    _, client = user_session(app, admin_client)
    before = checks("cache"), checks("database")
    for _ in range(3):
        assert client.get("/api/auth/me").status_code == 200
    assert (checks("cache") - before[0], checks("database") - before[1]) == (0, 3)


def test_a_frozen_redis_costs_one_request_a_quarter_second_then_nothing(
    make_app: Callable[..., Flask],
    admin_client: FlaskClient,
    private_redis: tuple[str, subprocess.Popen[bytes]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, proc = private_redis
    app = cached_app(make_app, url, 600)
    _, client = user_session(app, admin_client)
    assert client.get("/api/auth/me").status_code == 200
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="src.session_cache"):
            assert client.get("/api/auth/me").status_code == 200
        first = time.monotonic() - started
        started = time.monotonic()
        for _ in range(10):
            assert client.get("/api/auth/me").status_code == 200
        next_ten = time.monotonic() - started
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    assert first < 2.0, f"the first request with Redis frozen took {first:.2f} s"
    assert next_ten < first, f"10 more requests took {next_ten:.2f} s: Redis asked again"
    assert "session cache: Redis failed, checking sessions in the database" in caplog.text


def test_a_lost_generation_and_a_change_made_in_sql_refuse_the_next_request(
    make_app: Callable[..., Flask],
    admin_client: FlaskClient,
    app_database: AppDatabase,
    private_redis: tuple[str, Any],
) -> None:
    """Redis restarted or flushed: the generation is gone, the next check reads the database."""
    app = cached_app(make_app, private_redis[0], 600)
    client = used_then_disabled_in_sql(app, admin_client, app_database)
    redis.Redis.from_url(private_redis[0]).flushall()
    refused = client.get("/api/auth/me")
    assert (refused.status_code, refused.json["error"]) == (401, ENDED)


def test_a_change_made_in_sql_alone_is_seen_within_session_cache_seconds(
    make_app: Callable[..., Flask],
    admin_client: FlaskClient,
    app_database: AppDatabase,
    private_redis: tuple[str, Any],
) -> None:
    """Nothing resets the generation for SQL typed around the app: the entry's age does. Until
    then the remembered check answers (from memory, not the database), then the session ends."""
    app = cached_app(make_app, private_redis[0], 1.0)
    client = used_then_disabled_in_sql(app, admin_client, app_database)
    changed = time.monotonic()
    served_from_memory = 0
    while True:  # the check remembered before the change is at most 1 s old from `changed` on
        started = time.monotonic()
        from_cache = checks("cache")
        answer = client.get("/api/auth/me")
        if answer.status_code != 200:
            break
        assert started - changed < 1.0, "served past SESSION_CACHE_SECONDS"
        assert checks("cache") == from_cache + 1, "a 200 after the change came from the database"
        served_from_memory += 1
        time.sleep(0.05)
    # The user is disabled: the session's own refusal, not a database or Redis failure.
    assert (answer.status_code, answer.json["error"]) == (401, ENDED)
    assert time.monotonic() - changed < 1.5
    assert served_from_memory >= 1, "no answer from memory: the bound was never exercised"


def used_then_disabled_in_sql(app: Flask, admin: FlaskClient, database: AppDatabase) -> FlaskClient:
    """A session checked once (remembered), then its user disabled in SQL around the app."""
    user, client = user_session(app, admin)
    assert client.get("/api/auth/me").status_code == 200
    dsn = {"host": database.host, "port": database.port, "dbname": database.database}
    with psycopg.connect(**dsn, user=database.username, password=database.password) as sql:
        sql.execute("UPDATE users SET enabled = false WHERE id = %s", (user["id"],))
    return client


@pytest.mark.parametrize("refusal", ["wrong password", "stopped"])
def test_a_reset_redis_refused_is_an_alert_and_this_worker_forgets_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, refusal: str
) -> None:
    """A real Redis that refuses the deletion: one that wants another password, or one that
    has stopped since the check was remembered."""
    with private_redis_server(tmp_path, password="the-servers-password") as (port, server):
        password = "not-its-password" if refusal == "wrong password" else "the-servers-password"
        client = redis.Redis.from_url(
            f"redis://:{password}@127.0.0.1:{port}/0", socket_timeout=0.25
        )
        cache = SessionCache(client, "k", 2.0)
        if refusal == "stopped":
            assert cache.generation() is not None  # it did answer before it stopped
            server.terminate()
            server.wait(timeout=10)
        cache.entries["session"] = (b"generation", time.monotonic(), ("row",))
        with caplog.at_level(logging.ERROR, logger="src.session_cache"):
            cache.invalidate()
    assert cache.entries == {}
    assert "ALERT: session generation not reset in Redis" in caplog.text
    assert cache.generation() is None  # paused: checks read the database


def test_resets_refused_by_a_frozen_redis_alert_once_and_are_done_when_it_answers(
    private_redis: tuple[str, subprocess.Popen[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    """Every commit during the outage fails its reset: one ALERT, not one per commit, and the
    generation other workers compare is renewed as soon as Redis answers again (else their
    remembered checks of a session ended meanwhile would count until they age out)."""
    url, proc = private_redis
    cache = SessionCache(redis.Redis.from_url(url, socket_timeout=0.25), "k", 2.0)
    before = cache.generation()
    assert before is not None
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        with caplog.at_level(logging.ERROR, logger="src.session_cache"):
            for _ in range(3):  # three commits, each a second apart (past the pause)
                cache.invalidate()
                time.sleep(1.05)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    assert caplog.text.count("ALERT: session generation not reset in Redis") == 1
    time.sleep(1.05)  # past the pause after the last failure
    after = cache.generation()
    assert after is not None and after != before
