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
from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import wraps
from typing import Any, cast

from flask import Flask, Response, current_app, request
from flask_limiter import Limiter, RequestLimit, RouteLimit
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import FixedWindowRateLimiter, RateLimiter
from werkzeug.exceptions import TooManyRequests
from werkzeug.middleware.proxy_fix import ProxyFix

from src.logging_setup import security_event
from src.outage import Outage
from src.redis_auth import storage_options

log = logging.getLogger(__name__)


def client_address() -> str:
    """The peer address, or the one trusted proxy hop's X-Forwarded-For entry (see ProxyFix)."""
    return request.remote_addr or "unknown"


def redis_outage() -> Outage:
    """Redis as this process's login counters see it: its failure said once, then left alone
    for a second at a time (the per-process counters count meanwhile), never waited on."""
    outage: Outage = current_app.extensions["login_redis"]
    return outage


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
    if isinstance(limiter.storage, RedisStorage) and not redis_outage().usable():
        return  # Redis failed a moment ago: the hard per-address limits still hold
    try:
        breached = sum(
            not limiter.limiter.hit(item, prefix, "account-failures", account)
            for item in parse_many(current_app.config["ACCOUNT_ALERT_LIMITS"])
        )
    except Exception as error:  # storage down: the hard per-address limits still hold
        redis_outage().failed(error)
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
        budgets = _login_budgets()
        counters = _take_login_budget(budgets)
        try:
            response = current_app.make_response(view(*args, **kwargs))
        except Exception as error:
            if _server_failure(error):  # database or Vault away: no password was checked
                counters.give_back(budgets)
            raise  # a refused login (401) keeps its unit
        if response.status_code == 200:
            counters.give_back(budgets)  # successful logins do not use up the budget
        return response

    return limited


Budgets = list[tuple[RateLimitItem, str]]


def _server_failure(error: Exception) -> bool:
    """An error the server answers 5xx (not the client's: a wrong password is a 401)."""
    status = getattr(error, "status", None) or getattr(error, "code", None)
    return not (isinstance(status, int) and status < 500)


def _login_budgets() -> Budgets:
    keys = [f"address:{client_address()}", account_and_address_key()]
    return [(item, key) for item in parse_many(current_app.config["LOGIN_LIMITS"]) for key in keys]


def _take_login_budget(budgets: Budgets) -> LoginCounters:
    """Count this attempt in every budget; 429 (nothing kept) when one is used up.

    On Redis in one round trip; in this process's own counters while Redis does not answer.
    """
    prefix = current_app.config["RATELIMIT_KEY_PREFIX"]
    limiter: Limiter = current_app.extensions["rate_limiter"]
    counters: LoginCounters = ProcessCounters(current_app.extensions["login_limit_fallback"])
    if isinstance(limiter.storage, RedisStorage) and redis_outage().usable():
        try:
            shared = RedisCounters(limiter.storage, prefix)
            breached = shared.take(budgets)
            counters = shared
            redis_outage().answered()
        except Exception as error:  # Redis down (or failing): the per-process counters hold
            redis_outage().failed(error)
            breached = counters.take(budgets)
    else:
        breached = counters.take(budgets)
    if breached is not None:
        item, key = budgets[breached]
        security_event("rate limited", limit=str(item), key=key)
        reset_at = counters.strategy.get_window_stats(item, prefix, "login", key).reset_time
        raise TooManyRequests(str(item), retry_after=max(1, math.ceil(reset_at - time.time())))
    return counters


class LoginCounters(ABC):
    """Where login budgets are counted: take all or none, give back after a success."""

    strategy: RateLimiter  # reads a budget's window (the 429's Retry-After)

    @abstractmethod
    def take(self, budgets: Budgets) -> int | None:
        """Take one unit of every budget; when one is used up, none: its index."""

    @abstractmethod
    def give_back(self, budgets: Budgets) -> None:
        """Return the units a successful login took."""


class ProcessCounters(LoginCounters):
    """This process's own counters (no Redis configured, or Redis down): no round trips."""

    def __init__(self, strategy: RateLimiter) -> None:
        self.strategy = strategy
        self.prefix = current_app.config["RATELIMIT_KEY_PREFIX"]

    def take(self, budgets: Budgets) -> int | None:
        for index, (item, key) in enumerate(budgets):
            if not self.strategy.hit(item, self.prefix, "login", key):
                self._add(budgets[: index + 1], -1)
                return index
        return None

    def give_back(self, budgets: Budgets) -> None:
        self._add(budgets, -1)

    def _add(self, budgets: Budgets, cost: int) -> None:
        for item, key in budgets:
            self.strategy.hit(item, self.prefix, "login", key, cost=cost)


# Every budget of one login in one round trip, atomically: each counter (limits' fixed-window
# keys, so that limits reads their windows) goes up by ARGV[1]; when one passes its limit,
# all go back down and its 1-based index is returned. ARGV[1] = -1 gives units back. A counter
# created here gets its window's expiry, as limits' own incr_expire script does.
ADD_TO_BUDGETS = """
local amount = tonumber(ARGV[1])
local breached = 0
for i, key in ipairs(KEYS) do
  local current = redis.call('incrby', key, amount)
  if current == amount then
    redis.call('expire', key, ARGV[2 * i])
  end
  if amount > 0 and breached == 0 and current > tonumber(ARGV[2 * i + 1]) then
    breached = i
  end
end
if breached > 0 then
  for _, key in ipairs(KEYS) do
    redis.call('decrby', key, amount)
  end
end
return breached
"""


class RedisCounters(LoginCounters):
    """The counters shared by every worker, in limits' fixed-window keys on Redis."""

    def __init__(self, storage: RedisStorage, prefix: str) -> None:
        self.strategy = FixedWindowRateLimiter(storage)
        self.storage = storage
        self.prefix = prefix

    def take(self, budgets: Budgets) -> int | None:
        breached = self._add(budgets, 1)
        return breached - 1 if breached else None

    def give_back(self, budgets: Budgets) -> None:
        try:
            self._add(budgets, -1)
        except Exception as error:  # storage gone since the attempt was counted: unit kept
            redis_outage().failed(error)

    def _add(self, budgets: Budgets, amount: int) -> int:
        keys = [
            self.storage.prefixed_key(item.key_for(self.prefix, "login", key))
            for item, key in budgets
        ]
        args: list[int] = [amount]
        for item, _key in budgets:
            args += [item.get_expiry(), item.amount]
        script = current_app.extensions["login_budget_script"]
        return int(script(keys=keys, args=args))


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
    _headers_only_on_refresh(app, limiter)
    app.extensions["rate_limiter"] = limiter
    app.extensions["login_limit_fallback"] = FixedWindowRateLimiter(MemoryStorage())
    app.extensions["login_redis"] = Outage(
        log,
        "rate limit storage down: counting logins in this process",
        "rate limit storage back: counting logins in Redis",
    )
    # Registered now (no I/O; EVALSHA from its first use on): no storage when limits are off.
    if app.config["RATELIMIT_ENABLED"] and isinstance(limiter.storage, RedisStorage):
        script = limiter.storage.get_connection().register_script(ADD_TO_BUDGETS.encode())
        app.extensions["login_budget_script"] = script
    app.view_functions["auth.login"] = limit_login(app.view_functions["auth.login"])
    _limit(app, "auth.refresh", limiter.limit(refresh_limits))


def _headers_only_on_refresh(app: Flask, limiter: Limiter) -> None:
    """Run the extension's after-request work (X-RateLimit and Retry-After headers, its
    per-request state) for refresh only: no other route has a limit of the extension's (login
    counts in its own decorator and sets Retry-After itself), and the hooks cost every request
    tens of microseconds to find nothing."""
    inject = Limiter._Limiter__inject_headers  # type: ignore[attr-defined]
    after = app.after_request_funcs.setdefault(None, [])
    headers = [hook for hook in after if getattr(hook, "func", None) is inject]
    after[:] = [hook for hook in after if hook not in headers]
    # Its teardown only empties that per-request state, which lives on the request context.
    teardown = app.teardown_request_funcs.setdefault(None, [])
    teardown[:] = [hook for hook in teardown if getattr(hook, "__self__", None) is not limiter]

    def refresh_headers(response: Response) -> Response:
        if request.endpoint == "auth.refresh":
            for hook in headers:
                response = cast(Response, hook(response))
        return response

    after.append(refresh_headers)


def _limit(app: Flask, endpoint: str, limit: RouteLimit) -> None:
    view: Any = app.view_functions[endpoint]
    app.view_functions[endpoint] = limit(view)
