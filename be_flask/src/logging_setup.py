"""JSON-lines logging with a filter that redacts anything looking like a secret."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from flask import Flask, Response, g, request

# g attribute: time.perf_counter() at the start of the request (the log line and metrics).
REQUEST_STARTED = "request_started"
SECURITY = logging.getLogger("security")
REQUESTS = logging.getLogger("requests")

_REDACTED = "[REDACTED]"
_PATTERNS = (
    # JWTs: three base64url segments, the first one a JSON header ("eyJ").
    re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*"),
    # Vault/OpenBao tokens.
    re.compile(r"\b(?:hvs|hvb|hvr|s|b|r)\.[A-Za-z0-9_-]{20,}"),
    # key=value or "key": "value" where the key names a secret.
    re.compile(
        r"(?i)((?:password|passwd|secret|token|secret_id|api_key)[\"']?\s*[:=]\s*[\"']?)"
        r"[^\s\"',&}]+"
    ),
    # Passwords inside connection URLs.
    re.compile(r"(://[^:/\s]+:)[^@\s]+(@)"),
)
_RECORD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
# Strings found clean lately ("GET", "/api/auth/me", a username, an address): each request's
# log line repeats them, and every scan for secrets costs microseconds. Emptied whenever a new
# secret is remembered, and when full.
_CLEAN_MEMO_SIZE = 4096


class SecretRegistry:
    """Secret values known to this process, so that they can be cut out of any log line."""

    def __init__(self) -> None:
        self._values: frozenset[str] = frozenset()
        self._lock = threading.Lock()
        self._clean: dict[str, None] = {}

    def remember(self, values: Iterable[Any]) -> None:
        """Add secret values (short or non-string ones are ignored: they would redact noise)."""
        new = {v for v in values if isinstance(v, str) and len(v) >= 6}
        if new <= self._values:
            return  # the hot path: nothing new, no lock
        with self._lock:
            self._values = self._values | new
            self._clean = {}  # what was clean may hold the new secret

    def redact(self, text: str) -> str:
        clean = self._clean
        if text in clean:
            return text
        original = text
        for value in self._values:
            if value in text:
                text = text.replace(value, _REDACTED)
        for pattern in _PATTERNS:
            text = pattern.sub(_redact_match, text)
        if text == original and len(text) <= 256:
            if len(clean) >= _CLEAN_MEMO_SIZE:
                clean.clear()
            clean[text] = None
        return text


def _redact_match(match: re.Match[str]) -> str:
    if match.re.groups == 2:
        return f"{match.group(1)}{_REDACTED}{match.group(2)}"
    if match.re.groups == 1:
        return f"{match.group(1)}{_REDACTED}"
    return _REDACTED


secrets_registry = SecretRegistry()


class RedactingFilter(logging.Filter):
    """Rewrite the rendered message and extra fields of every record without secrets."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = secrets_registry.redact(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = secrets_registry.redact(
                logging.Formatter().formatException(record.exc_info)
            )
            record.exc_info = None
        fields = vars(record)
        for key in fields.keys() - _RECORD_ATTRS:  # the extra fields (set difference, in C)
            value = fields[key]
            if isinstance(value, str):
                fields[key] = secrets_registry.redact(value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        fields = vars(record)
        entry: dict[str, Any] = {
            "time": f"{_utc_second(int(record.created))}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for key in fields:
            if key not in _RECORD_ATTRS:
                entry[key] = fields[key]
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str)


@lru_cache(maxsize=4)
def _utc_second(epoch_second: int) -> str:
    """ISO-8601 UTC of a second: formatted once per second, not once per line."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_second))


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg,unused-ignore]
    """Write to whatever sys.stderr is at emit time (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(level: str = "INFO", log_file: str = "") -> None:
    """Install one JSON handler with redaction on the root logger (replacing ours, if any)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_json_app_handler", False)]:
        root.removeHandler(old)
        old.close()
    handler: logging.Handler = logging.FileHandler(log_file) if log_file else _StderrHandler()
    handler._json_app_handler = True  # type: ignore[attr-defined]
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    # Our lines name no thread, multiprocessing process or source line (only the pid): not
    # looking them up (the logging docs' "Optimization") saves a fifth of every record's cost.
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging._srcfile = None


def security_event(event: str, level: int = logging.WARNING, **fields: Any) -> None:
    """Log a security event with the user and client address of the current request."""
    fields.setdefault("address", request.remote_addr if request else None)
    SECURITY.log(level, event, extra={"event": event, **fields})


def init_app(app: Flask) -> None:
    """Log in JSON and write one line per request."""
    configure_logging(app.config["LOG_LEVEL"], app.config["LOG_FILE"])
    app.before_request(_start_timer)
    app.after_request(_log_request)


def _start_timer() -> None:
    setattr(g, REQUEST_STARTED, time.perf_counter())


def _log_request(response: Response) -> Response:
    if not REQUESTS.isEnabledFor(logging.INFO):
        return response
    state = g._get_current_object()  # one context lookup each
    current = request._get_current_object()  # type: ignore[attr-defined]
    duration = time.perf_counter() - getattr(state, REQUEST_STARTED, time.perf_counter())
    REQUESTS.info(
        "request",
        extra={
            "method": current.method,
            "path": current.path,
            "status": response.status_code,
            "duration_ms": round(duration * 1000, 2),
            "user": getattr(state, "username", None),
            "address": current.remote_addr,
        },
    )
    return response
