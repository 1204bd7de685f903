"""No worker keeps stale authorisation state: a change in one refuses the next request in another.

Two apps on one database stand for two gunicorn workers, run twice: without Redis (every check
reads the database) and with the session cache on (src/session_cache.py, its entries allowed to
live 10 minutes, so only the generation reset can refuse). The session is used in worker B first
(twice: with the cache on, the second check is answered from B's memory), then an admin in worker
A changes the user or ends the session, and B's very next request with the same cookie must be
refused. A per-worker cache that a change does not reset, however short-lived, fails these tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY

from tests.be_flask.test_users import ENDED, PASSWORD, create_user, patch
from tests.harness.app import csrf_headers, login, random_name
from tests.harness.redis_server import system_redis_url

REVOKED = "token has been revoked"


@pytest.fixture(scope="module", params=["database", "session cache"])
def workers(request: pytest.FixtureRequest, make_app: Callable[..., Flask]) -> tuple[Flask, Flask]:
    if request.param == "database":
        return make_app(), make_app()
    settings = {
        "REDIS_URL": system_redis_url(),
        "REDIS_AUTH": "none",
        "RATELIMIT_KEY_PREFIX": random_name("next-request"),  # a generation of their own
        "SESSION_CACHE_SECONDS": 600,
    }
    return make_app(**settings), make_app(**settings)


def checks_from_cache() -> float:
    return REGISTRY.get_sample_value("session_checks_total", {"source": "cache"}) or 0.0


@pytest.fixture(scope="module")
def admin_in_a(workers: tuple[Flask, Flask], vault_secrets: dict[str, Any]) -> FlaskClient:
    admin = workers[0].test_client()
    assert login(admin, "admin", vault_secrets["admin_password"]).status_code == 200
    return admin


def session_in_b(workers: tuple[Flask, Flask], admin: FlaskClient, role: str) -> tuple[int, Any]:
    """A new user's session, used twice in worker B (200), ready for its next request."""
    user = create_user(admin, role=role)
    client = workers[1].test_client()
    assert login(client, user["username"], PASSWORD).status_code == 200
    path = "/api/users" if role == "admin" else "/api/auth/me"
    assert client.get(path).status_code == 200
    remembered = checks_from_cache()
    assert client.get(path).status_code == 200
    if workers[1].config["REDIS_URL"]:  # B answered the second check from its memory
        assert checks_from_cache() == remembered + 1
    return user["id"], client


def assert_refused(client: FlaskClient, path: str, error: str) -> None:
    refused = client.get(path)
    assert refused.status_code == 401
    assert refused.json["error"] == error


@pytest.mark.parametrize(
    ("role", "change", "path"),
    [
        ("user", {"enabled": False}, "/api/auth/me"),
        ("admin", {"role": "user"}, "/api/users"),  # demoted: not even a 403, the session ends
        ("user", {"password": "a brand new passphrase"}, "/api/auth/me"),
    ],
)
def test_a_change_in_worker_a_refuses_the_next_request_in_worker_b(
    workers: tuple[Flask, Flask],
    admin_in_a: FlaskClient,
    role: str,
    change: dict[str, Any],
    path: str,
) -> None:
    user_id, client = session_in_b(workers, admin_in_a, role)
    assert patch(admin_in_a, user_id, **change).status_code == 200
    assert_refused(client, path, ENDED)


def test_a_logout_in_worker_a_refuses_the_next_request_in_worker_b(
    workers: tuple[Flask, Flask], admin_in_a: FlaskClient
) -> None:
    _, client = session_in_b(workers, admin_in_a, "user")
    # The same browser's next request lands on worker A: it logs out there.
    same_browser = workers[0].test_client()
    for name, path in (("refresh_token_cookie", "/api/auth/"), ("csrf_refresh_token", "/")):
        cookie = client.get_cookie(name, path=path)
        assert cookie is not None
        same_browser.set_cookie(name, cookie.value, path=path)
    logout = same_browser.post("/api/auth/logout", headers=csrf_headers(client, refresh=True))
    assert logout.status_code == 200
    # The access cookie B still holds is unexpired: only the revocation can refuse it.
    assert_refused(client, "/api/auth/me", REVOKED)


def test_deleting_the_user_in_worker_a_refuses_the_next_request_in_worker_b(
    workers: tuple[Flask, Flask], admin_in_a: FlaskClient
) -> None:
    user_id, client = session_in_b(workers, admin_in_a, "user")
    deleted = admin_in_a.delete(f"/api/users/{user_id}", headers=csrf_headers(admin_in_a))
    assert deleted.status_code == 204
    assert_refused(client, "/api/auth/me", ENDED)
