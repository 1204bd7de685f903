"""End to end: the real apache2 in front of the real backend (gunicorn, Vault, PostgreSQL,
Redis), so the login limits count the address Apache saw, not what the client claims."""

from __future__ import annotations

import http.client
import json
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from tests.harness.apache import Apache, require_apache, running_apache
from tests.harness.app import Gunicorn, gunicorn_env
from tests.harness.servers import missing_server

REDIS_URL = "redis://127.0.0.1:6379/0"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def front_of_backend(
    backend_openbao: Any, app_database: Any, start_gunicorn: Callable[..., Gunicorn]
) -> Iterator[Apache]:
    require_apache()
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
    except redis.RedisError:
        missing_server("Redis is not running at 127.0.0.1:6379")
    env = gunicorn_env(
        backend_openbao,
        TRUSTED_PROXIES="1",  # as setup.sh runs it behind Apache
        RATELIMIT_ENABLED="true",
        REDIS_URL=REDIS_URL,
        RATELIMIT_KEY_PREFIX=f"test-apache-{secrets.token_hex(4)}",
        LOGIN_LIMITS="5/minute",
    )
    backend = start_gunicorn(env, workers=2, name="behind-apache")
    yield from running_apache(backend.url)


def login_from(apache: Apache, source: str, username: str, **headers: str) -> int:
    """One failed login through Apache, the TCP connection made from `source`."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", apache.port, timeout=10, source_address=(source, 0)
    )
    body = json.dumps({"username": username, "password": "wrong-password-42"})
    try:
        conn.request(
            "POST",
            "/api/auth/login",
            body=body,
            headers={"Content-Type": "application/json", **headers},
        )
        return conn.getresponse().status
    finally:
        conn.close()


def test_forged_forwarded_for_does_not_escape_the_per_address_limit_behind_apache(
    front_of_backend: Apache,
) -> None:
    # A new username and a new forged address each time: only the per-address budget of the
    # real address (127.0.0.1, as Apache saw it) is shared by these attempts.
    statuses = [
        login_from(
            front_of_backend,
            "127.0.0.1",
            f"nobody-{n}",
            **{"X-Forwarded-For": f"198.51.100.{n}", "X-Real-IP": f"198.51.100.{n}"},
        )
        for n in range(6)
    ]
    assert statuses == [401] * 5 + [429]
    # Another client address on the same machine has its own budget.
    assert login_from(front_of_backend, "127.0.0.2", "nobody-0") == 401
