"""Liveness and readiness."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, jsonify
from sqlalchemy import text

from src.app_secrets import app_secrets, secrets_source
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
    """200 when the database answers and the app secrets are usable; says where they come from."""
    database_error = _database_error()
    checks = {"database": database_error is None, "secrets": _secrets_ok()}
    ok = all(checks.values())
    body = {"status": "ready" if ok else "not ready", **checks, "source": _source()}
    if database_error is not None:
        body["reason"] = database_error
    return jsonify(body), 200 if ok else 503


def _database_error() -> str | None:
    """None when the database answers, else why not (fail closed, e.g. lease ended)."""
    try:
        db.session().execute(text("SELECT 1"))
        return None
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


def _source() -> str:
    try:
        return secrets_source()
    except Exception:
        return "unknown"
