"""Login, refresh, logout and the current user."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, g, jsonify
from flask_jwt_extended import (
    current_user,
    get_jwt,
    jwt_required,
    unset_jwt_cookies,
    verify_jwt_in_request,
)
from flask_jwt_extended.exceptions import (
    NoAuthorizationError,
    RevokedTokenError,
    UserLookupError,
    WrongTokenError,
)
from jwt.exceptions import InvalidTokenError
from sqlalchemy import update

from src.app_secrets import app_secrets
from src.auth import (
    LOGIN_USER,
    SessionUser,
    login_required,
    purge_expired,
    report_refresh_reuse,
    revoke_family,
    revoke_token,
    rotated_moments_ago,
    session_expiry,
    session_response,
    session_user,
)
from src.errors import ApiError
from src.extensions import db
from src.limiter import slow_down_failed_login
from src.logging_setup import security_event
from src.metrics import LOGINS
from src.models import User
from src.passwords import MAX_LENGTH, hash_password, needs_rehash, verify_password
from src.validation import field, json_body

log = logging.getLogger(__name__)
bp = Blueprint("auth", __name__, url_prefix="/api/auth")

INVALID_CREDENTIALS = "invalid username or password"


@bp.post("/login")
def login() -> Response:
    """Check username and password; set the session cookies (rate limits: src/limiter.py)."""
    app_secrets()  # no signing key, no session: 503 before a password is even looked at
    body = json_body()
    username, password = field(body, "username", str), field(body, "password", str)
    if len(password) > MAX_LENGTH:
        raise ApiError(400, f"password must be at most {MAX_LENGTH} characters")
    return session_response(authenticate(username, password))


def authenticate(username: str, password: str) -> SessionUser:
    """The enabled user with this password; unknown users cost the same and get the same 401."""
    row = db.read_one(LOGIN_USER, {"username": username})  # one round trip, no transaction
    user, password_hash = (None, None) if row is None else (session_user(row), row[-1])
    password_ok = verify_password(password_hash, password)
    if user is None or password_hash is None or not password_ok or not user.enabled:
        LOGINS.labels("failed").inc()
        security_event("login failed", user=username[:64])
        slow_down_failed_login(username)
        raise ApiError(401, INVALID_CREDENTIALS)
    if needs_rehash(password_hash):
        session = db.session()
        new_hash = hash_password(password)
        session.execute(update(User).where(User.id == user.id).values(password_hash=new_hash))
        session.commit()
    LOGINS.labels("ok").inc()
    g.username = user.username
    security_event("login ok", level=logging.INFO, user=user.username)
    return user


@bp.post("/refresh")
@jwt_required(refresh=True)
def refresh() -> Response:
    """Swap the refresh token for a new pair; the old one is revoked (reuse ends the family)."""
    payload = get_jwt()
    session = db.session()
    if not revoke_token(session, payload, "rotated") and not rotated_moments_ago(session, payload):
        # Rotated before, and not a moment ago by a second tab: someone holds a copy.
        report_refresh_reuse(session, payload)
        raise ApiError(401, "token has been revoked")
    return session_response(current_user, family=payload["fam"])


@bp.post("/logout")
def logout() -> Response:
    """End the login session (the refresh token's whole family); always clear the cookies.

    The refresh token, not the access token, identifies the session: after 15 idle minutes
    only the refresh token is left, and it is what must die.
    """
    payload = _refresh_token_or_none()
    if payload is not None:
        session = db.session()
        revoke_token(session, payload, "logout")
        revoke_family(session, payload, "logout")
        purge_expired(session)
        security_event("logout", level=logging.INFO, user=current_user.username)
    response = jsonify(status="logged out")
    unset_jwt_cookies(response)
    return response


def _refresh_token_or_none() -> dict[str, Any] | None:
    """The verified refresh token; None when there is no live one (nothing left to end).

    A CSRF failure is not swallowed: a forged cross-site logout is refused (401).
    """
    try:
        verify_jwt_in_request(refresh=True)
    except (NoAuthorizationError, RevokedTokenError, UserLookupError, WrongTokenError):
        return None
    except InvalidTokenError:  # expired, bad signature, malformed
        return None
    return get_jwt()


@bp.get("/me")
@login_required
def me() -> Any:
    """The user of the session and when it expires."""
    return jsonify(user=current_user.to_dict(), **session_expiry(get_jwt()))
