"""Rate limits on login and refresh, shared through Redis.

Hard limits key on the client address, and on (account, address) for logins: a stranger
flooding an account from one address locks only that address out, never the account's owner.
Per account, across all addresses, failures only raise an alert and slow further failures
down (slow_down_failed_login), since a hard per-account lock is a lock anyone can trigger.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Flask, current_app, request
from flask_limiter import Limiter, RequestLimit, RouteLimit
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter, RateLimiter
from werkzeug.exceptions import TooManyRequests
from werkzeug.middleware.proxy_fix import ProxyFix

from src.logging_setup import security_event
from src.redis_auth import storage_options

log = logging.getLogger(__name__)


def client_address() -> str:
    """The peer address, or the one trusted proxy hop's X-Forwarded-For entry (see ProxyFix)."""
    return request.remote_addr or "unknown"


# The slow-down of failed logins for an account under attack: doubles per breached tier.
SLOW_DOWN_BASE_SECONDS = 0.25
SLOW_DOWN_MAX_SECONDS = 1.0


def account_name(username: str) -> str:
    """The account a username targets: "Admin" and "admin" share one set of counters."""
    return username[:64].lower()


def account_and_address_key() -> str:
    """The targeted account at this client address: the key of the hard login limit."""
    body = request.get_json(silent=True)
    username = body.get("username") if isinstance(body, dict) else None
    account = account_name(username) if isinstance(username, str) else "-"
    return f"account:{account}|{client_address()}"


def slow_down_failed_login(username: str) -> None:
    """Count a failure against the account from any address; past ACCOUNT_ALERT_LIMITS, alert
    and delay this (failed) answer, more for each breached limit. Never blocks the owner."""
    limiter: Limiter | None = current_app.extensions.get("rate_limiter")
    if limiter is None or not current_app.config["RATELIMIT_ENABLED"]:
        return
    prefix, account = current_app.config["RATELIMIT_KEY_PREFIX"], account_name(username)
    try:
        breached = sum(
            not limiter.limiter.hit(item, prefix, "account-failures", account)
            for item in parse_many(current_app.config["ACCOUNT_ALERT_LIMITS"])
        )
    except Exception:  # storage down: the hard per-address limits still hold
        log.warning("account failure count unavailable", exc_info=True)
        return
    if breached:
        security_event("account under attack", user=account, limits_breached=breached)
        time.sleep(min(SLOW_DOWN_MAX_SECONDS, SLOW_DOWN_BASE_SECONDS * 2 ** (breached - 1)))


def limit_login(view: Callable[..., Any]) -> Callable[..., Any]:
    """Take one unit of every login budget before the attempt, atomically, and give it back
    after a success: concurrent attempts cannot all pass a check made before any is counted.
    """

    @wraps(view)
    def limited(*args: Any, **kwargs: Any) -> Any:
        if not current_app.config["RATELIMIT_ENABLED"]:
            return view(*args, **kwargs)
        strategy = _login_strategy()  # asked once: a storage check is a round trip
        taken = _take_login_budget(strategy)
        response = current_app.make_response(view(*args, **kwargs))  # a failure raises: kept
        if response.status_code == 200:
            _give_back(strategy, taken)  # successful logins do not use up the budget
        return response

    return limited


def _login_budgets() -> list[tuple[RateLimitItem, str]]:
    keys = [f"address:{client_address()}", account_and_address_key()]
    return [(item, key) for item in parse_many(current_app.config["LOGIN_LIMITS"]) for key in keys]


def _take_login_budget(strategy: RateLimiter) -> list[tuple[RateLimitItem, str]]:
    """Count this attempt in every budget; 429 (nothing kept) when one is used up."""
    prefix = current_app.config["RATELIMIT_KEY_PREFIX"]
    taken: list[tuple[RateLimitItem, str]] = []
    for item, key in _login_budgets():
        allowed = strategy.hit(item, prefix, "login", key)
        taken.append((item, key))
        if not allowed:
            _give_back(strategy, taken)
            security_event("rate limited", limit=str(item), key=key)
            reset_at = strategy.get_window_stats(item, prefix, "login", key).reset_time
            raise TooManyRequests(str(item), retry_after=max(1, math.ceil(reset_at - time.time())))
    return taken


def _give_back(strategy: RateLimiter, taken: list[tuple[RateLimitItem, str]]) -> None:
    prefix = current_app.config["RATELIMIT_KEY_PREFIX"]
    try:
        for item, key in taken:
            strategy.hit(item, prefix, "login", key, cost=-1)
    except Exception:  # storage gone since the attempt was counted: the unit stays used
        log.warning("rate limit storage down: login budget not given back")


def _login_strategy() -> RateLimiter:
    """The shared (Redis) counters; this process's own while the storage does not answer."""
    limiter: Limiter = current_app.extensions["rate_limiter"]
    fallback: RateLimiter = current_app.extensions["login_limit_fallback"]
    try:
        if limiter.storage.check():
            return limiter.limiter
    except Exception:  # noqa: S110 - a storage that raises is as down as one that says so
        pass
    log.warning("rate limit storage down: counting logins in this process")
    return fallback


def refresh_limits() -> str:
    return str(current_app.config["REFRESH_LIMITS"])


def log_breach(limit: RequestLimit) -> None:
    security_event("rate limited", limit=str(limit.limit), key=limit.key)


def init_app(app: Flask) -> None:
    """Limit login and refresh (call after their blueprint is registered) on Redis or memory."""
    hops = app.config["TRUSTED_PROXIES"]
    if hops:
        # Only the last `hops` entries of X-Forwarded-For were written by our proxies; anything a
        # client put before them is ignored, so a forged header cannot reset its counter.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    redis_url = app.config["REDIS_URL"]
    app.config.setdefault("RATELIMIT_STORAGE_URI", redis_url or "memory://")
    if redis_url:
        app.config.setdefault("RATELIMIT_STORAGE_OPTIONS", storage_options(app, redis_url))
    # Redis down must not take logins down: count in this process until it is back.
    app.config.setdefault("RATELIMIT_SWALLOW_ERRORS", True)
    app.config.setdefault("RATELIMIT_IN_MEMORY_FALLBACK_ENABLED", True)
    if app.config["RATELIMIT_ENABLED"]:
        storage = "redis" if redis_url else "memory (this process only)"
        log.info("rate limit storage", extra={"storage": storage})
    # One limiter per app: the extension keeps its storage and switches on the instance.
    limiter = Limiter(client_address, headers_enabled=True, on_breach=log_breach)
    limiter.init_app(app)
    # No default or application-wide limits: the extension's check before every request could
    # only find none (at a cost on every route). The limited views check in their decorator.
    hooks = app.before_request_funcs.setdefault(None, [])
    hooks[:] = [hook for hook in hooks if hook != limiter._check_request_limit]
    app.extensions["rate_limiter"] = limiter
    app.extensions["login_limit_fallback"] = FixedWindowRateLimiter(MemoryStorage())
    app.view_functions["auth.login"] = limit_login(app.view_functions["auth.login"])
    _limit(app, "auth.refresh", limiter.limit(refresh_limits))


def _limit(app: Flask, endpoint: str, limit: RouteLimit) -> None:
    view: Any = app.view_functions[endpoint]
    app.view_functions[endpoint] = limit(view)
