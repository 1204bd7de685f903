"""Vault down, frozen, sealed or absent: cached or fallback values, bounded retries, recovery."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from src.vault.backoff import backoff_delay
from src.vault.settings import FallbackSettings
from src.vault_client import ConfigurationError, VaultClient, VaultUnavailableError
from tests.harness.openbao import OpenBao

from .vault_support import FAST, SecretWatch, secret_watch, settings_for

__all__ = ["secret_watch"]


def max_attempts(seconds: float, initial: float, maximum: float) -> int:
    """Attempts the backoff schedule allows in `seconds` after a first failure (jitter adds)."""
    attempts, elapsed, failures = 1, 0.0, 1
    while elapsed + backoff_delay(failures, initial, maximum) <= seconds:
        elapsed += backoff_delay(failures, initial, maximum)
        failures += 1
        attempts += 1
    return attempts


def read_through_outage(
    client: VaultClient, expected: dict, seconds: float, max_call: float
) -> tuple[int, int]:
    """Read for `seconds`; every read returns the cached value in at most `max_call` seconds."""
    sent = client.adapter.requests_sent
    deadline = time.monotonic() + seconds
    reads = 0
    while time.monotonic() < deadline:
        started = time.monotonic()
        assert client.get_app_secrets() == expected
        assert time.monotonic() - started < max_call
        reads += 1
        time.sleep(0.01)
    return reads, client.adapter.requests_sent - sent


def wait_for_source(client: VaultClient, source: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while client.get_app_secrets() and client.source != source:
        assert time.monotonic() < deadline, client.status()
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_killed_sealed_and_frozen_vault_serve_cached_values_then_recover(
    openbao_factory: Callable[[], OpenBao],
    secret_watch: SecretWatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = openbao_factory()
    secret_watch.add_server(server)
    client = secret_watch.client(settings_for(server, cache_ttl=0.3, **FAST))
    expected = client.get_app_secrets()
    bound = max_attempts(3.0, FAST["backoff_initial"], FAST["backoff_max"])

    server.kill(signal.SIGKILL)
    server.proc.wait(5)
    reads, attempts = read_through_outage(client, expected, 3.0, max_call=0.5)
    status = client.status()
    assert status["source"] == "cache" and status["paths"]["app/flask"]["stale"]
    assert "connection refused" in status["outage"]["reason"]
    assert 2 <= attempts <= bound, (attempts, bound)
    assert reads > 50

    server.start()  # Raft comes back sealed
    reads, attempts = read_through_outage(client, expected, 3.0, max_call=0.5)
    assert "sealed" in client.status()["outage"]["reason"]
    assert attempts <= bound + 1, (attempts, bound)  # +1: the window already open at restart
    server.unseal()
    wait_for_source(client, "vault", timeout=8)
    assert client.status()["outage"] is None

    server.kill(signal.SIGSTOP)  # frozen: connects, never answers; the read timeout bounds it
    try:
        reads, attempts = read_through_outage(client, expected, 3.0, max_call=1.6)
        assert client.status()["outage"]["reason"] == "timeout"
        assert 1 <= attempts <= bound
    finally:
        server.kill(signal.SIGCONT)
    wait_for_source(client, "vault", timeout=15)

    server.seal()
    reads, attempts = read_through_outage(client, expected, 2.0, max_call=0.5)
    assert "sealed" in client.status()["outage"]["reason"]
    server.unseal()
    wait_for_source(client, "vault", timeout=15)
    assert client.status()["logins"] == 1, "the token outlived every outage: no re-login"

    outage_logs = [
        r.getMessage() for r in caplog.records if r.name == "src.vault.backoff" and r.levelno >= 30
    ]
    # One warning per state change (down, sealed, up, timeout, up, sealed, up), not per read.
    assert len(outage_logs) <= 8, outage_logs


def test_vault_absent_at_start_uses_env_then_vault_values_win(
    tmp_path: Path, secret_watch: SecretWatch
) -> None:
    server = OpenBao(base=tmp_path / "bao", dev=True)
    role_id, secret_id = f"role-{uuid.uuid4()}", str(uuid.uuid4())
    fallback = FallbackSettings(
        secret_key="env-secret-key-" + uuid.uuid4().hex,
        database_url="postgresql://app:env%40pw@db.example:5433/appdb",
        admin_password="env-admin-" + uuid.uuid4().hex,
        user_password="env-user-" + uuid.uuid4().hex,
    )
    secret_watch.add(fallback.secret_key, fallback.admin_password, fallback.user_password, "env@pw")
    settings = settings_for(server, role_id=role_id, secret_id=secret_id, fallback=fallback, **FAST)
    client = secret_watch.client(settings)
    assert client.get_app_secrets()["jwt_secret"] == fallback.secret_key
    database = client.get_database_config()
    assert (database["host"], database["port"], database["password"]) == (
        "db.example",
        5433,
        "env@pw",
    )
    assert database["url"].startswith("postgresql+psycopg://app:env%40pw@db.example:5433/")
    assert client.source == "fallback" and not client.is_available()
    assert "connection refused" in (client.status()["last_error"] or "")

    try:
        server.start()
        server.initialize()
        root = server.client(server.root_token)
        root.write_data("auth/approle/role/flask-app/role-id", data={"role_id": role_id})
        root.write_data(
            "auth/approle/role/flask-app/custom-secret-id", data={"secret_id": secret_id}
        )
        secret_watch.add_server(server)
        wait_for_source(client, "vault", timeout=10)
        assert client.get_app_secrets()["jwt_secret"] != fallback.secret_key
        assert client.get_database_config()["host"] != "db.example"
    finally:
        server.stop()


def test_production_without_vault_or_env_names_what_is_missing(
    tmp_path: Path, secret_watch: SecretWatch
) -> None:
    server = OpenBao(base=tmp_path / "bao", dev=True)  # never started: nothing listens
    settings = settings_for(server, role_id="r", secret_id="s", app_env="production", **FAST)
    client = secret_watch.client(settings)
    with pytest.raises(ConfigurationError, match="SECRET_KEY, ADMIN_PASSWORD, USER_PASSWORD"):
        client.get_app_secrets()
    with pytest.raises(ConfigurationError, match="DATABASE_URL"):
        client.get_database_config()


def test_max_staleness_bounds_how_long_a_cached_value_is_served(
    dev_openbao: OpenBao, secret_watch: SecretWatch
) -> None:
    secret_watch.add_server(dev_openbao)
    settings = settings_for(dev_openbao, cache_ttl=0.2, max_staleness=6.0, **FAST)
    client = secret_watch.client(settings)
    expected = client.get_app_secrets()
    fetched = time.monotonic()
    dev_openbao.stop()
    # Timed from the fetch, not from the stop: stopping the server may itself take a second.
    served_for = fetched + 4.5 - time.monotonic()
    assert served_for > 1.0, "stopping the server took too long for this test to mean anything"
    read_through_outage(client, expected, served_for, max_call=0.5)
    time.sleep(max(0.0, fetched + 6.3 - time.monotonic()))
    with pytest.raises(VaultUnavailableError, match="VAULT_MAX_STALENESS"):
        client.get_app_secrets()


@pytest.mark.timeout(60)
def test_stale_while_revalidate_readers_do_not_wait_for_a_frozen_refresh(
    dev_openbao: OpenBao, secret_watch: SecretWatch
) -> None:
    """An expired path and a frozen Vault: one thread refreshes (and hangs until the read
    timeout); every other thread gets the previous value at once."""
    secret_watch.add_server(dev_openbao)
    settings = settings_for(dev_openbao, cache_ttl=0.2, **{**FAST, "read_timeout": 4.0})
    client = secret_watch.client(settings)
    expected = client.get_app_secrets()
    time.sleep(0.3)  # expired: the next read refreshes
    refresh_lock = client.cache.lock_for("app/flask")

    dev_openbao.kill(signal.SIGSTOP)
    try:
        refresher = threading.Thread(target=client.get_app_secrets, daemon=True)
        refresher.start()
        deadline = time.monotonic() + 5
        while not refresh_lock.locked():  # the refresher is in its Vault read
            assert time.monotonic() < deadline, "no refresh started"
            time.sleep(0.01)

        def timed_read() -> float:
            started = time.monotonic()
            assert client.get_app_secrets() == expected
            return time.monotonic() - started

        with ThreadPoolExecutor(max_workers=8) as pool:
            latencies = list(pool.map(lambda _: timed_read(), range(32)))
        assert max(latencies) < 0.5, sorted(latencies)[-3:]
        assert refresher.is_alive(), "the refresh was not blocked by the frozen Vault"
    finally:
        dev_openbao.kill(signal.SIGCONT)
    refresher.join(timeout=10)
    assert not refresher.is_alive()
    wait_for_source(client, "vault", timeout=10)
