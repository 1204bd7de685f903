"""Liveness and readiness."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, jsonify
from sqlalchemy import text

from src.app_secrets import app_secrets
from src.extensions import db

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
    checks = {"database": _database_ok(), "secrets": _secrets_ok()}
    if all(checks.values()):
        return jsonify(status="ready", **checks), 200
    reason = ", ".join(f"{name} unavailable" for name, ok in checks.items() if not ok)
    return jsonify(status="not ready", reason=reason, **checks), 503


def _database_ok() -> bool:
    try:
        db.session().execute(text("SELECT 1"))
        return True
    except Exception:
        log.warning("readiness: database unreachable", exc_info=True)
        return False


def _secrets_ok() -> bool:
    try:
        return bool(app_secrets().get("jwt_secret"))
    except Exception:
        log.warning("readiness: app secrets unavailable", exc_info=True)
        return False
