"""Reading JSON request bodies with clear 4xx answers for anything malformed."""

from __future__ import annotations

from typing import Any

from flask import request

from src.errors import ApiError


def json_body() -> dict[str, Any]:
    """The request's JSON object, or a 415/400 error saying what is wrong with it."""
    if not request.is_json:
        raise ApiError(415, "request body must be JSON (Content-Type: application/json)")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


def field(body: dict[str, Any], name: str, kind: type, required: bool = True) -> Any:
    """One field of the body, of the given type (bool is not accepted as an int)."""
    if name not in body:
        if required:
            raise ApiError(400, f"missing field: {name}")
        return None
    value = body[name]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ApiError(400, f"field {name} must be of type {kind.__name__}")
    if isinstance(value, str) and not _is_text(value):
        raise ApiError(400, f"field {name} must be text without NUL or lone surrogate characters")
    return value


def _is_text(value: str) -> bool:
    # JSON may escape a lone surrogate (\ud800) or NUL: neither hashes, stores nor logs safely.
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
