"""Pure logic of the Vault client, with fake clocks at a narrow seam: no server needed."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pytest

from src.vault.approle import LoginResult
from src.vault.backoff import BackoffGate, backoff_delay
from src.vault.cache import CacheEntry, SecretCache
from src.vault.fallback import fallback_secret
from src.vault.settings import FallbackSettings, VaultSettings
from src.vault.token import TokenManager, TokenState, renewal_margin
from src.vault_client import ConfigurationError, VaultClient, VaultUnavailableError


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_schedule_doubles_from_one_second_to_sixty() -> None:
    assert [backoff_delay(n, 1.0, 60.0) for n in range(9)] == [0, 1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff_delay(10_000, 1.0, 60.0) == 60


def test_gate_allows_one_probe_per_window_and_never_sooner_than_the_schedule() -> None:
    clock = FakeClock()
    gate = BackoffGate(1.0, 60.0, clock=clock, jitter=lambda: 1.0)  # jitter adds 25 %
    assert gate.try_begin() and gate.try_begin()  # healthy: always open
    gate.record_failure("connection refused")
    assert not gate.try_begin()
    clock.now += 1.24
    assert not gate.try_begin()
    clock.now += 0.02
    assert gate.try_begin()
    assert not gate.try_begin(), "a second caller in the same window must not probe"
    gate.record_failure("connection refused")
    clock.now += 2.4
    assert not gate.try_begin()
    clock.now += 0.2
    assert gate.try_begin()
    gate.record_success()
    assert gate.try_begin() and not gate.in_outage


def test_gate_logs_once_per_state_change(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="src.vault")
    clock = FakeClock()
    gate = BackoffGate(1.0, 60.0, clock=clock, jitter=lambda: 0.0)
    for _ in range(5):
        gate.record_failure("timeout")
    gate.record_failure("sealed or unavailable (503)")
    gate.record_success()
    gate.record_success()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 3, warnings
    assert "timeout" in warnings[0] and "503" in warnings[1] and "reachable again" in warnings[2]


@pytest.mark.parametrize(
    ("ttl", "margin"),
    [(3600, 1200), (600, 300), (900, 300), (3, 1.5), (60, 30)],
)
def test_renewal_margin_is_a_third_of_ttl_but_at_least_min_five_minutes_half_ttl(
    ttl: float, margin: float
) -> None:
    assert renewal_margin(ttl) == margin


def token(ttl: float = 3600, renewable: bool = True, capped: bool = False) -> TokenState:
    return TokenState("t", "acc", 1, 0.0, ttl, 3600, renewable, capped, 0.0)


@pytest.mark.parametrize(
    ("state", "now", "action"),
    [
        (token(), 0, None),
        (token(), 2399, None),
        (token(), 2400, "renew"),
        (token(), 3599, "renew"),
        (token(), 3600, "login"),
        (token(renewable=False), 2400, "login"),
        (token(ttl=1000, capped=True), 0, "login"),
        (token(ttl=2000, capped=True), 500, None),
    ],
)
def test_token_action_due(state: TokenState, now: float, action: str | None) -> None:
    assert state.action_due(now) == action


def test_cache_invalidate_keeps_value_for_stale_if_error() -> None:
    cache = SecretCache()
    cache.put("app/flask", CacheEntry({"k": "v"}, 9e9, fetched_at=5, source="cache", version=7))
    cache.invalidate()
    entry = cache.entries["app/flask"]
    assert entry.data == {"k": "v"} and entry.fresh_until == 0
    assert (entry.fetched_at, entry.source, entry.version) == (5, "cache", 7)


def test_settings_from_env_reads_ha_list_and_timeouts() -> None:
    settings = VaultSettings.from_env(
        {
            "VAULT_ADDR": "http://a:8200/, http://b:8200",
            "VAULT_CACHE_TTL": "0",
            "VAULT_CONNECT_TIMEOUT": "0.5",
        }
    )
    assert settings.addresses == ("http://a:8200", "http://b:8200")
    assert settings.cache_ttl == 0 and settings.connect_timeout == 0.5
    assert settings.read_timeout == 5 and settings.role_name == "flask-app"
    assert settings.kv_mount == "secret" and settings.max_staleness is None


@pytest.mark.parametrize("app_env", ["production", "local", "", "prod"])
def test_skip_verify_refused_unless_development(app_env: str) -> None:
    with pytest.raises(ConfigurationError, match="VAULT_SKIP_VERIFY"):
        VaultSettings.from_env({"APP_ENV": app_env, "VAULT_SKIP_VERIFY": "true"})
    development = {"APP_ENV": "development", "VAULT_SKIP_VERIFY": "1"}
    assert VaultSettings.from_env(development).verify is False


def test_production_is_the_default_and_only_development_allows_public_defaults() -> None:
    assert VaultSettings.from_env({}).app_env == "production"
    for app_env in ("production", "local", "staging", "Developmentx"):
        assert not VaultSettings.from_env({"APP_ENV": app_env}).is_development
    assert VaultSettings.from_env({"APP_ENV": " Development "}).is_development


def test_production_fallback_names_what_is_missing() -> None:
    given = FallbackSettings(secret_key="k" * 40)
    with pytest.raises(ConfigurationError, match="ADMIN_PASSWORD, USER_PASSWORD"):
        fallback_secret("app/flask", given, production=True, reason="down")
    with pytest.raises(ConfigurationError, match="DATABASE_URL"):
        fallback_secret("database/postgres", given, production=True, reason="down")
    with pytest.raises(VaultUnavailableError):
        fallback_secret("app/other", given, production=False, reason="down")


def test_development_fallback_warns_loudly(caplog: pytest.LogCaptureFixture) -> None:
    secrets = fallback_secret("app/flask", FallbackSettings(), production=False, reason="down")
    assert secrets["jwt_secret"].startswith("dev-only")
    assert "INSECURE DEVELOPMENT DEFAULTS" in caplog.text


class FakeVault:
    """The narrow seam under TokenManager: login() and post('renew-self'), counted."""

    def __init__(self, ttl: float, max_ttl: float, clock: FakeClock) -> None:
        self.ttl, self.max_ttl, self.clock = ttl, max_ttl, clock
        self.logins = self.renewals = 0
        self.issued_at = 0.0
        self.vault_token: str | None = None

    def login(self) -> LoginResult:
        time.sleep(0.05)  # long enough for every thread to pile up behind the lock
        self.logins += 1
        self.issued_at = self.clock.now
        return LoginResult(f"token-{self.logins}", f"acc-{self.logins}", self.ttl, True)

    def post(self, url: str, json: dict) -> dict:
        assert url == "/v1/auth/token/renew-self"
        time.sleep(0.05)
        self.renewals += 1
        left = self.issued_at + self.max_ttl - self.clock.now
        ttl = min(self.ttl, left)
        auth = {"client_token": f"token-{self.logins}", "lease_duration": ttl, "renewable": True}
        return {"auth": auth, "warnings": ["TTL capped to max_ttl"] if ttl < self.ttl else None}


def run_threads(target: Callable[[], object], count: int = 50) -> None:
    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive(), "a thread is still running after 10 s"


def test_single_flight_one_login_then_one_renewal_then_relogin_at_max_ttl() -> None:
    clock = FakeClock()
    vault = FakeVault(ttl=30, max_ttl=50, clock=clock)
    tokens = TokenManager(vault, vault, clock=clock)  # type: ignore[arg-type]
    run_threads(tokens.current)
    assert (vault.logins, vault.renewals) == (1, 0)
    clock.now += 20  # 10 s left of 30: renewal due
    run_threads(tokens.current)
    assert (vault.logins, vault.renewals) == (1, 1)
    assert tokens.state is not None and not tokens.state.capped
    clock.now += 20  # renewal due again; Vault caps the TTL at max TTL (10 s left)
    run_threads(tokens.current)
    assert (vault.logins, vault.renewals) == (2, 2), "a capped renewal is followed by a login"
    assert vault.vault_token == "token-2"


def test_status_says_why_without_approle_credentials() -> None:
    # No secret ID: no AppRole. Development, so the public defaults may serve.
    client = VaultClient(VaultSettings(role_id="only-a-role-id", app_env="development"))
    assert client.status()["last_error"] == "AppRole credentials not configured"
    assert client.get_app_secrets()["jwt_secret"].startswith("dev-only")
    status = client.status()
    assert status["source"] == "fallback" and not status["available"]
    assert status["last_error"] == "AppRole credentials not configured"
    assert status["requests_sent"] == 0, "nothing to log in with: Vault is never asked"


def test_postgres_refusals_replace_a_lease_at_most_every_two_seconds() -> None:
    """A grant missing from flask_app refuses every lease: no new lease per request."""
    from src.vault.database import DatabaseCredentials, DatabaseCredentialsLease

    credentials = DatabaseCredentials(VaultClient(VaultSettings()))
    now = time.monotonic()
    first = DatabaseCredentialsLease("l1", "v-1", "p", 1, 10.0, now, True, None, act_at=now + 6)
    credentials.lease = first
    credentials.refused(0, "42501")  # an older generation's connection: already replaced
    assert credentials.lease is first
    credentials.refused(1, "42501")
    assert credentials.lease.refetch and credentials.lease.act_at <= time.monotonic()
    second = DatabaseCredentialsLease("l2", "v-2", "p", 2, 10.0, now, True, None, act_at=now + 6)
    credentials.lease = second
    credentials.refused(2, "42501")  # refused again at once: wait for the next window
    assert credentials.lease is second
