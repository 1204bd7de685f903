"""One JSON shape for every error, so /api never answers with HTML or a traceback."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException

from src.database import credentials_refused
from src.vault_client import VaultClientError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error a route raises to answer with error_response(status, message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# A 503 is a dependency away for a moment (database, Vault): clients are told when to retry.
RETRY_AFTER_SECONDS = 2


def error_response(status: int, message: str) -> tuple[Response, int]:
    """The JSON body of every error: {"error": <short reason>, "status": <code>}."""
    response = jsonify(error=message, status=status)
    if status == 503:
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response, status


def _http_error(error: HTTPException) -> Response:
    response, status = error_response(error.code or 500, error.description or error.name)
    # Keep headers such as Allow (405) and Retry-After (429).
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    response.status_code = status
    return response


def _api_error(error: ApiError) -> tuple[Response, int]:
    return error_response(error.status, error.message)


def _database_error(error: DBAPIError) -> tuple[Response, int]:
    if credentials_refused(error.orig):
        # Dynamic credentials revoked under us: new ones are being fetched (src/database.py).
        log.warning("database refused the credentials", extra={"error_type": type(error).__name__})
        return error_response(503, "database refused the credentials, try again shortly")
    if isinstance(error, OperationalError):
        log.warning("database unavailable", extra={"error_type": "OperationalError"})
        return error_response(503, "database unavailable, try again shortly")
    return _unexpected_error(error)


def _secrets_unavailable(_error: VaultClientError) -> tuple[Response, int]:
    log.warning("app secrets unavailable", extra={"error_type": type(_error).__name__})
    return error_response(503, "secrets unavailable, try again shortly")


def _unexpected_error(error: Exception) -> tuple[Response, int]:
    log.exception("unhandled error", extra={"error_type": type(error).__name__})
    return error_response(500, "internal server error")


def init_app(app: Flask) -> None:
    """Register the JSON error handlers."""
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(DBAPIError, _database_error)
    app.register_error_handler(VaultClientError, _secrets_unavailable)
    app.register_error_handler(Exception, _unexpected_error)
