"""Vault status and refresh across workers, Vault outages, and the metrics endpoint."""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.be_flask.test_jwt_key_rotation import newest_version
from tests.harness.app import (
    AppDatabase,
    csrf_headers,
    login,
    put_secret,
    read_secret,
    vault_client_for,
)


def test_status_shows_state_and_pid_never_a_secret(
    admin_client: FlaskClient, vault_secrets: dict[str, Any], app_database: AppDatabase
) -> None:
    response = admin_client.get("/api/admin/vault/status")
    assert response.status_code == 200
    assert response.json["pid"] == os.getpid()
    assert response.json["source"] == "vault"
    assert response.json["authenticated"] is True
    text = response.get_data(as_text=True)
    for value in [*vault_secrets.values(), app_database.password]:
        assert str(value) not in text


def signing_kid(client: FlaskClient) -> str:
    cookie = client.get_cookie("access_token_cookie", path="/api/")
    assert cookie is not None
    return str(jwt.get_unverified_header(cookie.value)["kid"])


@contextmanager
def new_jwt_key(openbao: Any, workers: tuple[Flask, ...], value: str) -> Iterator[str]:
    """A new jwt_secret version in Vault (its kid), put back and uncached afterwards."""
    original = read_secret(openbao, "app/flask")
    put_secret(openbao, "app/flask", {**original, "jwt_secret": value})
    try:
        yield str(newest_version(openbao))
    finally:
        put_secret(openbao, "app/flask", original)
        for worker in workers:
            worker.extensions["vault"].invalidate_cache()


def wait_until_signing_with(client: FlaskClient, password: str, kid: str, failure: str) -> None:
    """Log in again until the worker signs with `kid` (5 s)."""
    deadline = time.monotonic() + 5
    while True:
        assert login(client, "user", password).status_code == 200
        if signing_kid(client) == kid:
            return
        assert time.monotonic() < deadline, failure
        time.sleep(0.2)


def test_refresh_drops_the_cache_in_every_worker(
    make_app: Callable[..., Flask], backend_openbao: Any, vault_secrets: dict[str, Any]
) -> None:
    """Two apps with their own Vault clients stand for two workers: a refresh reaches both."""
    worker_a, worker_b = make_app(), make_app()
    admin_a, user_b = worker_a.test_client(), worker_b.test_client()
    assert login(admin_a, "admin", vault_secrets["admin_password"]).status_code == 200
    assert login(user_b, "user", vault_secrets["user_password"]).status_code == 200
    with new_jwt_key(backend_openbao, (worker_a, worker_b), "refreshed-" + "r" * 56) as new_kid:
        # Cached for 300 s: without a refresh worker B keeps signing with the old key.
        assert login(user_b, "user", vault_secrets["user_password"]).status_code == 200
        assert signing_kid(user_b) != new_kid
        response = admin_a.post("/api/admin/vault/refresh", headers=csrf_headers(admin_a))
        assert response.status_code == 200
        assert response.json["pid"] == os.getpid()
        assert login(admin_a, "admin", vault_secrets["admin_password"]).status_code == 200
        assert signing_kid(admin_a) == new_kid  # worker A: at once
        assert user_b.get("/api/auth/me").status_code == 200  # sessions survive the rotation
        password = vault_secrets["user_password"]
        wait_until_signing_with(user_b, password, new_kid, "worker B never dropped its cache")


def test_refresh_reaches_a_worker_that_has_only_been_scraped(
    make_app: Callable[..., Flask], backend_openbao: Any, vault_secrets: dict[str, Any]
) -> None:
    """A worker whose secrets were read (a /metrics scrape) before it ever compared the
    generation: its first comparison, after someone's refresh, must drop that cache too."""
    worker_a, worker_b = make_app(), make_app()
    admin_a, user_b = worker_a.test_client(), worker_b.test_client()
    assert login(admin_a, "admin", vault_secrets["admin_password"]).status_code == 200
    assert user_b.get("/metrics").status_code == 200  # B's cache holds app/flask now
    with new_jwt_key(backend_openbao, (worker_a, worker_b), "scraped-" + "s" * 56) as new_kid:
        response = admin_a.post("/api/admin/vault/refresh", headers=csrf_headers(admin_a))
        assert response.status_code == 200
        password = vault_secrets["user_password"]
        wait_until_signing_with(user_b, password, new_kid, "worker B kept its cache")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_vault_stopped_keeps_sessions_working_from_the_cache(
    make_app: Callable[..., Flask], openbao_factory: Callable[[], Any], postgres: Any
) -> None:
    server = openbao_factory()
    database, username, password = postgres.create_app_database("outage")
    location = {"host": postgres.host, "port": str(postgres.port), "database": database}
    put_secret(
        server, "database/postgres", {**location, "username": username, "password": password}
    )
    passwords = read_secret(server, "app/flask")
    app = make_app(vault=vault_client_for(server, cache_ttl=1))
    client = app.test_client()
    assert login(client, "admin", passwords["admin_password"]).status_code == 200, "login failed"
    assert client.get("/api/admin/vault/status").json["source"] == "vault"
    server.stop()
    time.sleep(1.5)  # past the cache TTL: every read now has to fall back on the cache
    statuses = []
    for _ in range(3):
        statuses.append(client.get("/api/auth/me").status_code)
        statuses.append(login(app.test_client(), "user", passwords["user_password"]).status_code)
    ready = client.get("/api/ready")
    assert statuses == [200] * 6
    assert ready.status_code == 200
    status = client.get("/api/admin/vault/status")
    assert status.status_code == 200 and status.json["source"] == "cache"


def metric_values(client: FlaskClient, *series: str) -> list[float]:
    """The current values of these series in /metrics (0 for one not yet there)."""
    lines = client.get("/metrics").get_data(as_text=True).splitlines()
    values = dict(line.rsplit(" ", 1) for line in lines if line and not line.startswith("#"))
    return [float(values.get(name, 0)) for name in series]


def test_metrics(admin_client: FlaskClient, client: FlaskClient) -> None:
    counted = (
        'logins_total{result="failed"}',
        'http_requests_total{endpoint="/api/auth/login",method="POST",status="401"}',
    )
    before = metric_values(client, *counted)
    assert login(client, "nobody", "wrong password").status_code == 401
    assert metric_values(client, *counted) == [value + 1 for value in before]
    response = client.get("/metrics")
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    assert 'logins_total{result="ok"}' in text
    assert 'logins_total{result="failed"}' in text
    assert 'http_requests_total{endpoint="/api/auth/login",method="POST",status="200"}' in text
    assert "http_request_duration_seconds_bucket" in text
    assert 'vault_secrets_source{source="vault"} 1.0' in text
    assert "vault_cache_age_seconds" in text
    assert "jwt_access_token_ttl_seconds 900.0" in text


def request_series(client: FlaskClient) -> set[str]:
    text = client.get("/metrics").get_data(as_text=True)
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if line.startswith("http_req")}


def test_made_up_http_methods_add_no_metric_series(client: FlaskClient) -> None:
    """The method is the client's to choose: each one a new series would grow /metrics (and
    Prometheus) without bound. Unknown methods are counted as `other`."""
    paths = ("/api/health", "/api/no-such-route")
    for path in paths:
        client.open(path, method="FIRST")
    before = request_series(client)
    made_up = [f"M{n}X{secrets.token_hex(4).upper()}" for n in range(30)] + ["PROPFIND"]
    for method in made_up:
        for path in paths:
            assert client.open(path, method=method).status_code in (404, 405)
    after = request_series(client)
    assert after - before <= {s for s in after if "/metrics" in s}, after - before
    assert not [m for m in [*made_up, "FIRST"] if f'method="{m}"' in "".join(after)]
    assert any('method="other"' in series for series in after)


def test_metrics_carry_no_secret(client: FlaskClient, vault_secrets: dict[str, Any]) -> None:
    text = client.get("/metrics").get_data(as_text=True)
    assert all(str(v) not in text for v in vault_secrets.values())
    assert json.dumps(vault_secrets) not in text


def test_fallback_secrets_are_reported_and_logged(
    make_app: Callable[..., Flask], tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Vault never reachable (development): env fallback values serve, and everyone is told."""
    from src.vault.settings import FallbackSettings

    fallback = FallbackSettings(
        secret_key="fallback-signing-key-" + "f" * 43,
        admin_password="fallback admin passphrase",
        user_password="fallback user passphrase",
    )
    vault = _unreachable_vault(fallback=fallback)
    app = make_app(vault=vault, DATABASE_URL=f"sqlite:///{tmp_path / 'fb.db'}")
    client = app.test_client()
    ready = client.get("/api/ready")
    assert ready.status_code == 200
    assert "source" not in ready.json  # for admins only
    assert login(client, "admin", "fallback admin passphrase").status_code == 200
    admin_status = client.get("/api/admin/vault/status")
    assert admin_status.status_code == 200 and admin_status.json["source"] == "fallback"
    events = [r for r in caplog.records if getattr(r, "event", None) == "fallback mode"]
    assert events and events[0].name == "security"


def test_no_vault_no_cache_no_fallback_is_503_not_500(
    make_app: Callable[..., Flask], tmp_path: Any
) -> None:
    vault = _unreachable_vault(app_env="production")  # no development defaults to fall back on
    app = make_app(vault=vault, DATABASE_URL=f"sqlite:///{tmp_path / 'nv.db'}")
    client = app.test_client()
    ready = client.get("/api/ready")
    assert ready.status_code == 503
    assert ready.json["secrets"] is False and ready.json["reason"] == "secrets unavailable"
    # No signing key, no session: refused before any password is checked.
    refused = login(client, "admin", "any password at all")
    assert refused.status_code == 503 and refused.json["error"].startswith("secrets unavailable")
    cookie = {"Cookie": "access_token_cookie=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln"}
    me = app.test_client(use_cookies=False).get("/api/auth/me", headers=cookie)
    assert me.status_code == 503
    assert me.json["error"] == "secrets unavailable, try again shortly"
    assert client.get("/api/health").status_code == 200


def _unreachable_vault(**settings: Any) -> Any:
    """A Vault client whose only address refuses connections at once, never retried."""
    from src.vault_client import VaultClient, VaultSettings

    return VaultClient(
        VaultSettings(
            addresses=("http://127.0.0.1:1",),
            role_id="role",
            secret_id="secret",
            connect_timeout=0.2,
            read_retries=0,
            **settings,
        )
    )
