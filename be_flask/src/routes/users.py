"""User administration, admins only."""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Blueprint, jsonify
from flask_jwt_extended import current_user
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from src.auth import admin_required
from src.errors import ApiError
from src.extensions import db
from src.logging_setup import security_event
from src.models import ROLES, User
from src.passwords import check_password_policy, hash_password
from src.validation import field, json_body

log = logging.getLogger(__name__)
bp = Blueprint("users", __name__, url_prefix="/api/users")

USERNAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@bp.get("")
@admin_required
def list_users() -> Any:
    """Every user, by id."""
    users = db.session().scalars(select(User).order_by(User.id)).all()
    return jsonify(users=[user.to_dict() for user in users])


@bp.post("")
@admin_required
def create_user() -> Any:
    """Create a user from username, password and role (default: user)."""
    body = json_body()
    username, password = field(body, "username", str), field(body, "password", str)
    role = field(body, "role", str, required=False) or "user"
    if not USERNAME.fullmatch(username):
        raise ApiError(400, "username must be 1-64 letters, digits, '_', '.' or '-'")
    _check_role(role)
    check_password_policy(password, username)
    user = User(username=username, password_hash=hash_password(password), role=role)
    user.enabled, user.token_version = True, 0
    session = db.session()
    session.add(user)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ApiError(409, "username already exists") from None
    log.info("user created", extra={"user": username, "role": role, "by": current_user.username})
    return jsonify(user=user.to_dict()), 201


@bp.patch("/<int:user_id>")
@admin_required
def update_user(user_id: int) -> Any:
    """Enable or disable a user, change their role or password; sessions end when needed."""
    body = json_body()
    enabled = field(body, "enabled", bool, required=False)
    role = field(body, "role", str, required=False)
    password = field(body, "password", str, required=False)
    if enabled is None and role is None and password is None:
        raise ApiError(400, "nothing to change: give enabled, role or password")
    session = db.session()
    user = _lock_for_change(user_id)
    if user.id == current_user.id and (enabled is False or role not in (None, "admin")):
        raise ApiError(409, "admins cannot disable or demote themselves")
    _apply_changes(user, enabled, role, password)
    session.commit()
    log.info("user updated", extra={"user": user.username, "by": current_user.username})
    return jsonify(user=user.to_dict())


def _apply_changes(
    user: User, enabled: bool | None, role: str | None, password: str | None
) -> None:
    if role is not None:
        _check_role(role)
        user.role = role
    if password is not None:
        check_password_policy(password, user.username)
        user.password_hash = hash_password(password)
    if enabled is not None:
        user.enabled = enabled
    if password is not None or enabled is False or role is not None:
        # Tokens carry the version they were issued with; the user lookup refuses older ones.
        user.token_version += 1
        security_event("sessions ended", level=logging.INFO, user=user.username)


@bp.delete("/<int:user_id>")
@admin_required
def delete_user(user_id: int) -> Any:
    """Delete a user (their tokens stop working: the user lookup finds nobody)."""
    user = _lock_for_change(user_id)
    if user.id == current_user.id:
        raise ApiError(409, "admins cannot delete themselves")
    session = db.session()
    session.delete(user)
    session.commit()
    log.info("user deleted", extra={"user": user.username, "by": current_user.username})
    return "", 204


def _lock_for_change(user_id: int) -> User:
    """The user to change, row-locked with the acting admin's row until the commit.

    Two admins demoting or deleting each other at the same moment queue here (rows locked in
    id order, so never a deadlock), and the second sees it is no longer an admin: 403.
    """
    actor_id = current_user.id
    rows = db.session().scalars(
        select(User)
        .where(User.id.in_({actor_id, user_id}))
        .order_by(User.id)
        .with_for_update()
        .execution_options(populate_existing=True)  # what the lock holder sees, not a cache
    )
    users = {user.id: user for user in rows}
    actor = users.get(actor_id)
    if actor is None or not actor.enabled or actor.role != "admin":
        raise ApiError(403, "admin role required")
    if user_id not in users:
        raise ApiError(404, "no such user")
    return users[user_id]


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ApiError(400, f"role must be one of {', '.join(ROLES)}")
