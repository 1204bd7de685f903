"""Rate limits on login and refresh, per client address and per account, shared through Redis."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, current_app, request
from flask_limiter import Limiter, RequestLimit, RouteLimit
from werkzeug.middleware.proxy_fix import ProxyFix

from src.logging_setup import security_event

log = logging.getLogger(__name__)


def client_address() -> str:
    """The peer address, or the one trusted proxy hop's X-Forwarded-For entry (see ProxyFix)."""
    return request.remote_addr or "unknown"


def account_key() -> str:
    """The username a login attempt targets, so spreading attempts over addresses does not help."""
    body = request.get_json(silent=True)
    username = body.get("username") if isinstance(body, dict) else None
    return f"account:{username[:64].lower()}" if isinstance(username, str) else "account:-"


def login_limits() -> str:
    return str(current_app.config["LOGIN_LIMITS"])


def refresh_limits() -> str:
    return str(current_app.config["REFRESH_LIMITS"])


def failed(response: Response) -> bool:
    """Only failed attempts use up the login budget: a user logging in often is not an attack."""
    return response.status_code != 200


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
    # Redis down must not take logins down: count in this process until it is back.
    app.config.setdefault("RATELIMIT_SWALLOW_ERRORS", True)
    app.config.setdefault("RATELIMIT_IN_MEMORY_FALLBACK_ENABLED", True)
    if app.config["RATELIMIT_ENABLED"]:
        storage = "redis" if redis_url else "memory (this process only)"
        log.info("rate limit storage", extra={"storage": storage})
    # One limiter per app: the extension keeps its storage and switches on the instance.
    limiter = Limiter(client_address, headers_enabled=True, on_breach=log_breach)
    limiter.init_app(app)
    app.extensions["rate_limiter"] = limiter
    _limit(app, "auth.login", limiter.limit(login_limits, deduct_when=failed))
    _limit(app, "auth.login", limiter.limit(login_limits, key_func=account_key, deduct_when=failed))
    _limit(app, "auth.refresh", limiter.limit(refresh_limits))


def _limit(app: Flask, endpoint: str, limit: RouteLimit) -> None:
    view: Any = app.view_functions[endpoint]
    app.view_functions[endpoint] = limit(view)
