"""Vault integration state and cache refresh, admins only."""

from __future__ import annotations

import logging
import os
from typing import Any

from flask import Blueprint, jsonify
from flask_jwt_extended import current_user

from src.app_secrets import secrets_source, vault_client
from src.auth import admin_required
from src.cache_sync import bump_generation, current_generation

log = logging.getLogger(__name__)
bp = Blueprint("admin", __name__, url_prefix="/api/admin")


@bp.get("/vault/status")
@admin_required
def vault_status() -> Any:
    """The answering worker's Vault state (never a secret value) with its pid."""
    status = dict(vault_client().status())
    status.update(pid=os.getpid(), source=secrets_source(), cache_generation=current_generation())
    return jsonify(status)


@bp.post("/vault/refresh")
@admin_required
def vault_refresh() -> Any:
    """Drop the Vault cache in every worker (each one notices within a second)."""
    log.info("vault cache refresh", extra={"by": current_user.username})
    generation = bump_generation()
    log.info("vault cache refresh: ok", extra={"generation": generation})
    return jsonify(status="refresh requested", generation=generation, pid=os.getpid())
