"""Prometheus metrics: requests, latency, logins, Vault source and cache age, token lifetime."""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from src.app_secrets import secrets_source, vault_client
from src.logging_setup import REQUEST_STARTED

REQUESTS = Counter(
    "http_requests_total", "HTTP requests answered", ["method", "endpoint", "status"]
)
LATENCY = Histogram("http_request_duration_seconds", "Time to answer a request", ["endpoint"])
LOGINS = Counter("logins_total", "Login attempts by result", ["result"])
SESSION_CHECKS = Counter(
    "session_checks_total", "Access-token session checks, by where they were answered", ["source"]
)
SECRETS_SOURCE = Gauge(
    "vault_secrets_source",
    "1 for where app secrets come from now (vault, cache or fallback)",
    ["source"],
    multiprocess_mode="liveall",
)
CACHE_AGE = Gauge(
    "vault_cache_age_seconds", "Age of the cached app secrets", multiprocess_mode="liveall"
)
TOKEN_TTL = Gauge(
    "jwt_access_token_ttl_seconds", "Lifetime of new access tokens", multiprocess_mode="liveall"
)

SOURCES = ("vault", "cache", "fallback")
# The method label takes these values and `other`: the method is the client's to choose, and
# each new label value is a new series in every scrape and in Prometheus, for ever.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
bp = Blueprint("metrics", __name__)


def init_app(app: Flask) -> None:
    """Time every request and serve /metrics (call after logging_setup.init_app)."""
    # The start time is logging_setup's (one hook fewer on every request).
    app.after_request(_count)
    app.register_blueprint(bp)


# The labelled children seen so far: labels() validates and locks on every call. Bounded
# (the status is the app's, but a bound costs nothing); past it, labels() as before.
_CHILDREN_MAX = 1024
_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def _count(response: Response) -> Response:
    current = request._get_current_object()  # type: ignore[attr-defined]
    rule = current.url_rule
    method = current.method if current.method in METHODS else "other"
    key = (method, rule.rule if rule else "unmatched", response.status_code)
    children = _children.get(key)
    if children is None:
        method, endpoint, status = key
        children = (REQUESTS.labels(method, endpoint, str(status)), LATENCY.labels(endpoint))
        if len(_children) < _CHILDREN_MAX:
            _children[key] = children
    children[0].inc()
    started = g.get(REQUEST_STARTED)
    if started is not None:
        children[1].observe(time.perf_counter() - started)
    return response


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus exposition; across all workers when PROMETHEUS_MULTIPROC_DIR is set."""
    _update_gauges()
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def _update_gauges() -> None:
    source = secrets_source()
    for name in SOURCES:
        SECRETS_SOURCE.labels(name).set(1 if name == source else 0)
    entry = vault_client().status()["paths"].get("app/flask")
    if entry is not None:
        CACHE_AGE.set(entry["age_seconds"])
    TOKEN_TTL.set(current_app.config["JWT_ACCESS_TOKEN_EXPIRES"].total_seconds())
