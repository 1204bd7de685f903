"""The rate-limit counters live in a Redis that requires the password Vault holds
(secret/app/flask, key redis_password): the backend authenticates with it, nobody else gets in."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask

from tests.harness.redis_server import private_redis_server


@pytest.fixture
def private_redis(tmp_path: Path, vault_secrets: dict[str, Any]) -> Iterator[int]:
    """A redis-server that requires Vault's redis_password, as setup.sh --local starts one."""
    with private_redis_server(tmp_path, vault_secrets["redis_password"]) as (port, _server):
        yield port


def attempt(app: Flask) -> int:
    body = {"username": "admin", "password": "not the password"}
    return app.test_client().post("/api/auth/login", json=body).status_code


def test_counters_are_in_the_password_protected_redis_and_strangers_are_refused(
    private_redis: int, make_app: Any, vault_secrets: dict[str, Any]
) -> None:
    prefix = f"test-{secrets.token_hex(4)}"
    url = f"redis://127.0.0.1:{private_redis}/0"
    # The URL has no password: the backend reads it from Vault.
    app = make_app(RATELIMIT_ENABLED=True, REDIS_URL=url, RATELIMIT_KEY_PREFIX=prefix)
    assert [attempt(app) for _ in range(5)] == [401] * 5

    # A local process without the password: refused, it can neither read nor reset a counter.
    stranger = redis.Redis.from_url(url, socket_timeout=5)
    for command in (lambda: stranger.keys(f"*{prefix}*"), lambda: stranger.flushall()):
        with pytest.raises(redis.AuthenticationError, match=r"NOAUTH|authenticated"):
            command()
    assert attempt(app) == 429

    # The counters are in this Redis (not in the worker's memory fallback).
    owner = redis.Redis.from_url(url, password=vault_secrets["redis_password"], socket_timeout=5)
    assert owner.keys(f"*{prefix}*"), "no counter in the Redis the backend was given"
    # A second app (another worker) shares them through Redis.
    other = make_app(RATELIMIT_ENABLED=True, REDIS_URL=url, RATELIMIT_KEY_PREFIX=prefix)
    assert attempt(other) == 429


def test_redis_auth_must_be_vault_or_none(make_app: Any) -> None:
    with pytest.raises(RuntimeError, match="REDIS_AUTH must be vault or none"):
        make_app(REDIS_AUTH="password123")
