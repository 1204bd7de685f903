"""Liveness and readiness."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text

from src.app_secrets import app_secrets
from src.database import DATABASE_REFUSAL
from src.errors import RETRY_AFTER_SECONDS
from src.extensions import db
from src.vault.errors import VaultUnavailableError

log = logging.getLogger(__name__)
bp = Blueprint("health", __name__, url_prefix="/api")


@bp.get("/health")
def health() -> Any:
    """200 while the process serves."""
    return jsonify(status="ok")


@bp.get("/ready")
def ready() -> Any:
    """200 when the database answers and the app secrets are usable, else 503 with the reason.

    Where the secrets come from is for admins (/api/admin/vault/status), not for anyone.
    """
    database_error = _database_error()
    checks = {"database": database_error is None, "secrets": _secrets_ok()}
    if all(checks.values()):
        return jsonify(status="ready", **checks), 200
    reasons = [database_error] if database_error else []
    reasons += [] if checks["secrets"] else ["secrets unavailable"]
    response = jsonify(status="not ready", reason=", ".join(reasons), **checks)
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response, 503


def _database_error() -> str | None:
    """None when the database answers, else why not (fail closed, e.g. lease ended)."""
    try:
        db.session().execute(text("SELECT 1"))
        return current_app.extensions.get(DATABASE_REFUSAL)
    except VaultUnavailableError as error:
        log.warning("readiness: %s", error)
        return str(error)
    except Exception:
        log.warning("readiness: database unreachable", exc_info=True)
        return "database unreachable"


def _secrets_ok() -> bool:
    try:
        return bool(app_secrets().get("jwt_secret"))
    except Exception:
        log.warning("readiness: app secrets unavailable", exc_info=True)
        return False
