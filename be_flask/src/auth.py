"""JWT sessions: keys from Vault, cookies with CSRF, revocation, rotation and reuse detection."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any

from flask import Flask, Response, current_app, g, jsonify, request
from flask_jwt_extended import (
    JWTManager,
    create_access_token,
    create_refresh_token,
    current_user,
    view_decorators,
)
from flask_jwt_extended.config import config as jwt_config
from flask_jwt_extended.exceptions import (
    CSRFError,
    NoAuthorizationError,
    RevokedTokenError,
    UserLookupError,
    WrongTokenError,
)
from jwt.exceptions import DecodeError, ExpiredSignatureError
from sqlalchemy import bindparam, delete, select
from sqlalchemy.orm import Session

from src import jwt_keys
from src.database import insert_ignoring_conflict
from src.errors import error_response
from src.jwt_decode import decode_jwt
from src.logging_setup import security_event
from src.models import RevokedFamily, RevokedToken, User, public_user, utcnow
from src.session_cache import session_cache

log = logging.getLogger(__name__)

# Three base64url segments; anything else is refused before PyJWT sees it.
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
MAX_TOKEN_LENGTH = 4096
# Claim of the access token: exp of the refresh token issued with it (the session's end).
SESSION_EXPIRY_CLAIM = "sexp"


class AppJWTManager(JWTManager):
    """JWTManager refusing malformed input (non-ASCII, oversize) as a 401 instead of a crash."""

    def _decode_jwt_from_config(
        self, encoded_token: str, csrf_value: Any = None, allow_expired: bool = False
    ) -> dict[str, Any]:
        if len(encoded_token) > MAX_TOKEN_LENGTH or not TOKEN_SHAPE.fullmatch(encoded_token):
            raise DecodeError("malformed token")
        if csrf_value is not None and not (isinstance(csrf_value, str) and csrf_value.isascii()):
            raise CSRFError("malformed CSRF token")
        # The library's own version parses the token three times before verifying it (claims
        # unverified, header, then the real decode), and once more for the header afterwards;
        # PyJWT's parse checks every character in Python. Our key loader only needs the
        # header's kid: read it here (the shape is checked above), then decode once.
        header = _unverified_header(encoded_token)
        g.jwt_header = (encoded_token, header)
        kwargs: dict[str, Any] = {
            **_decode_options(),
            "csrf_value": csrf_value,
            "encoded_token": encoded_token,
            "secret": self._decode_key_callback(header, {}),
        }
        try:
            decoded = decode_jwt(**kwargs, allow_expired=allow_expired)
        except ExpiredSignatureError as error:
            # As the library does: its expired-token handler reads the header and claims.
            error.jwt_header = header  # type: ignore[attr-defined]
            error.jwt_data = decode_jwt(**kwargs, allow_expired=True)  # type: ignore[attr-defined]
            raise
        return decoded


def _decode_options() -> dict[str, Any]:
    """The library's decode settings of this app, read from its config once, not per token."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    options: dict[str, Any] | None = app.extensions.get("jwt_decode_options")
    if options is None:
        options = app.extensions["jwt_decode_options"] = {
            "algorithms": jwt_config.decode_algorithms,
            "audience": jwt_config.decode_audience,
            "identity_claim_key": jwt_config.identity_claim_key,
            "issuer": jwt_config.decode_issuer,
            "leeway": jwt_config.leeway,
            "verify_aud": jwt_config.decode_audience is not None,
            "verify_sub": jwt_config.verify_sub,
        }
    return options


def _unverified_header(encoded_token: str) -> dict[str, Any]:
    """The JOSE header of a token of TOKEN_SHAPE, for choosing the key: not yet trusted.

    The full decode parses it again with PyJWT's checks before anything is accepted.
    """
    return _segment(encoded_token, 0)


def _segment(encoded_token: str, index: int) -> dict[str, Any]:
    """The JSON object in a segment of a token of TOKEN_SHAPE (0: header, 1: claims)."""
    segment = encoded_token.split(".")[index]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        raise DecodeError("invalid token segment") from None
    if not isinstance(decoded, dict):
        raise DecodeError("invalid token segment")
    return decoded


_library_headers = view_decorators.get_unverified_jwt_headers


def _decoded_header(encoded_token: str) -> dict[str, Any]:
    """The header read by _decode_jwt_from_config for this very token, else PyJWT's parse."""
    seen: tuple[str, dict[str, Any]] | None = g.get("jwt_header")
    if seen is not None and seen[0] is encoded_token:
        return dict(seen[1])
    headers: dict[str, Any] = _library_headers(encoded_token)
    return headers


def jwt_settings(app: Flask) -> dict[str, Any]:
    """Flask-JWT-Extended configuration derived from the app settings."""
    return {
        "JWT_TOKEN_LOCATION": ["cookies"],
        "JWT_ALGORITHM": "HS256",
        "JWT_DECODE_ALGORITHMS": ["HS256"],
        "JWT_ENCODE_ISSUER": app.config["JWT_ISSUER"],
        "JWT_DECODE_ISSUER": app.config["JWT_ISSUER"],
        "JWT_ENCODE_AUDIENCE": app.config["JWT_AUDIENCE"],
        "JWT_DECODE_AUDIENCE": app.config["JWT_AUDIENCE"],
        "JWT_COOKIE_CSRF_PROTECT": True,
        "JWT_CSRF_IN_COOKIES": True,
        "JWT_ACCESS_COOKIE_PATH": "/api/",
        # Refresh and logout both need the refresh token; nothing else ever sees it.
        "JWT_REFRESH_COOKIE_PATH": "/api/auth/",
        "JWT_ACCESS_CSRF_COOKIE_PATH": "/",
        "JWT_REFRESH_CSRF_COOKIE_PATH": "/",
        "JWT_ERROR_MESSAGE_KEY": "error",
    }


def init_app(app: Flask, jwt: JWTManager) -> None:
    """Configure JWTs and register the callbacks that tie them to Vault and the database."""
    for key, value in jwt_settings(app).items():
        app.config.setdefault(key, value)
    jwt.init_app(app)
    # Flask-JWT-Extended parses the header of the token it has just verified once more, with
    # PyJWT's per-character check: hand it the header of that same token instead.
    view_decorators.get_unverified_jwt_headers = _decoded_header
    jwt.encode_key_loader(_signing_key)
    jwt.additional_headers_loader(lambda _identity: {"kid": jwt_keys.signing_key()[0]})
    jwt.decode_key_loader(lambda header, _payload: jwt_keys.verification_key(header))
    jwt.user_identity_loader(lambda user: str(user.id))
    jwt.user_lookup_loader(_load_user)
    jwt.token_in_blocklist_loader(_is_revoked)
    _register_error_callbacks(jwt)


def _signing_key(_identity: Any) -> str:
    # The newest key version, read through the client's cache: a key rotated in Vault takes
    # over within VAULT_CACHE_TTL (1 s after an admin refresh), with no I/O while it is fresh.
    return jwt_keys.signing_key()[1]


def get_jwt_secret() -> str:
    """The key that signs new JWTs now, from Vault through the cache (the design's name)."""
    # Delegates, so that it follows whatever decides the current signing key (rotation).
    return _signing_key(None)


def _register_error_callbacks(jwt: JWTManager) -> None:
    """Every JWT problem is a 401 in the app's one error shape (the library defaults to 422)."""
    jwt.unauthorized_loader(lambda reason: error_response(401, reason))
    jwt.invalid_token_loader(lambda _reason: error_response(401, "invalid token"))
    jwt.expired_token_loader(lambda _h, _p: error_response(401, "token has expired"))
    jwt.revoked_token_loader(lambda _h, _p: error_response(401, "token has been revoked"))
    jwt.user_lookup_error_loader(lambda _h, _p: error_response(401, "session is no longer valid"))
    jwt.needs_fresh_token_loader(lambda _h, _p: error_response(401, "fresh login required"))
    jwt.token_verification_failed_loader(lambda _h, _p: error_response(401, "invalid token"))


def _session() -> Session:
    from src.extensions import db

    return db.session()


@dataclass(frozen=True, slots=True)
class SessionUser:
    """The user of a request's token, as read with its revocation state (current_user).

    A plain row, not an ORM object: a route that changes a user loads it in its own session.
    """

    id: int
    username: str
    role: str
    enabled: bool
    token_version: int
    created_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        """The public view of the user, as User.to_dict()."""
        return public_user(self)


_USERS = User.__table__.c
# Everything that decides whether a token is still good, in one statement built once (its
# compiled form is cached): the user's row, and the token's and its family's revocation.
_SESSION_USER_COLUMNS = (
    _USERS.id,
    _USERS.username,
    _USERS.role,
    _USERS.enabled,
    _USERS.token_version,
    _USERS.created_at,
)
SESSION_STATE = select(
    *_SESSION_USER_COLUMNS,
    select(RevokedToken.__table__.c.reason)
    .where(RevokedToken.__table__.c.jti == bindparam("jti"))
    .scalar_subquery()
    .label("token_reason"),
    select(RevokedFamily.__table__.c.reason)
    .where(RevokedFamily.__table__.c.family == bindparam("family"))
    .scalar_subquery()
    .label("family_reason"),
).where(_USERS.id == bindparam("user_id"))


def session_state(payload: dict[str, Any]) -> tuple[Any, ...] | None:
    """The token's user and revocation reasons: one round trip, no transaction.

    For an access token, a worker may answer from its memory while the session generation in
    Redis is unchanged (src/session_cache.py): every commit that changes a user or a
    revocation resets it, so a revocation, logout, disabled or demoted user (token_version
    bumped) still refuses the very next request, in every worker.
    """
    from src.extensions import db

    params = {"user_id": _user_id(payload), "jti": payload["jti"], "family": payload.get("fam", "")}
    if payload["type"] != "access":  # refresh and logout: rare, and they change the state
        return db.read_one(SESSION_STATE, params)
    key = (params["user_id"], params["jti"], params["family"])
    return session_cache().lookup(key, lambda: db.read_one(SESSION_STATE, params))


# The user logging in, with the password hash to verify (login: one round trip, no ORM).
LOGIN_USER = select(*_SESSION_USER_COLUMNS, _USERS.password_hash).where(
    _USERS.username == bindparam("username")
)


def session_user(row: tuple[Any, ...]) -> SessionUser:
    """The SessionUser of a row of SESSION_STATE or LOGIN_USER (their first six columns)."""
    return SessionUser(*row[:6])


def _load_user(_header: dict[str, Any], payload: dict[str, Any]) -> SessionUser | None:
    """The token's user, unless disabled or their sessions were ended (token_version bumped)."""
    user: SessionUser | None = g.pop("token_user", None)
    if user is None:  # no revocation check ran first (the library always runs one)
        row = session_state(payload)
        user = None if row is None else session_user(row)
    if user is None or not user.enabled or user.token_version != payload.get("ver"):
        return None
    g.username = user.username
    return user


def _user_id(payload: dict[str, Any]) -> int:
    try:
        return int(payload["sub"])
    except (TypeError, ValueError):
        return 0  # no user has id 0: the lookup finds nobody


def _is_revoked(_header: dict[str, Any], payload: dict[str, Any]) -> bool:
    """True for a revoked token or family; a rotated refresh token coming back ends the family."""
    row = session_state(payload)  # one round trip for the token, its family and its user
    if row is None:
        return False  # no such user: _load_user refuses the token
    g.token_user = session_user(row)  # for _load_user, which runs next
    token_reason, family_reason = row[6:8]
    if family_reason is not None:
        return True
    if token_reason is None:
        return False
    if payload["type"] == "refresh" and token_reason == "rotated":  # noqa: S105
        session = _session()
        if rotated_moments_ago(session, payload):
            return False  # a second tab refreshing at the same moment, not a thief
        report_refresh_reuse(session, payload)
    return True


def rotated_moments_ago(session: Session, payload: dict[str, Any]) -> bool:
    """True while a rotated refresh token is within REFRESH_REUSE_GRACE_SECONDS of rotation.

    Two tabs refreshing together send the same token; the later one gets a pair of its own in
    the same family instead of ending the session. After the window, a replay is reuse.
    """
    rotated_at = session.scalar(
        select(RevokedToken.revoked_at).where(
            RevokedToken.jti == payload["jti"], RevokedToken.reason == "rotated"
        )
    )
    if rotated_at is None:
        return False
    if rotated_at.tzinfo is None:  # SQLite hands back naive UTC
        rotated_at = rotated_at.replace(tzinfo=UTC)
    grace = timedelta(seconds=current_app.config["REFRESH_REUSE_GRACE_SECONDS"])
    return utcnow() - rotated_at <= grace


def report_refresh_reuse(session: Session, payload: dict[str, Any]) -> None:
    """A rotated refresh token was presented again: someone holds a copy, end the whole family."""
    security_event("refresh token reuse", user_id=payload.get("sub"), family=payload.get("fam"))
    revoke_family(session, payload, "reuse")


def session_response(user: User | SessionUser, family: str | None = None) -> Response:
    """The user and the session's expiry as JSON, with new access and refresh cookies."""
    claims = {"fam": family or uuid.uuid4().hex, "ver": user.token_version, "role": user.role}
    refresh_token = create_refresh_token(user, additional_claims=claims)
    # The access token carries its refresh token's exp: the UI can show when the session ends
    # (its cookies are HttpOnly) and /me answers it without a database lookup.
    refresh_claims = _unverified_claims(refresh_token)
    claims[SESSION_EXPIRY_CLAIM] = refresh_claims["exp"]
    access_token = create_access_token(user, additional_claims=claims)
    access_claims = _unverified_claims(access_token)
    response = jsonify(user=user.to_dict(), **session_expiry(access_claims))
    _set_token_cookies(response, access_token, access_claims, refresh=False)
    _set_token_cookies(response, refresh_token, refresh_claims, refresh=True)
    return response


def _set_token_cookies(
    response: Response, token: str, claims: dict[str, Any], refresh: bool
) -> None:
    """The token's cookie and its CSRF cookie, exactly as set_access_cookies and
    set_refresh_cookies set them, but with the CSRF value from the claims just signed: the
    library gets it by decoding and verifying the token once more (per cookie, per login)."""
    if refresh:
        names = (jwt_config.refresh_cookie_name, jwt_config.refresh_csrf_cookie_name)
        paths = (jwt_config.refresh_cookie_path, jwt_config.refresh_csrf_cookie_path)
        max_age = _seconds("JWT_REFRESH_TOKEN_EXPIRES")
    else:
        names = (jwt_config.access_cookie_name, jwt_config.access_csrf_cookie_name)
        paths = (jwt_config.access_cookie_path, jwt_config.access_csrf_cookie_path)
        max_age = _seconds("JWT_ACCESS_TOKEN_EXPIRES")
    common: dict[str, Any] = {
        "max_age": max_age,
        "secure": jwt_config.cookie_secure,
        "domain": jwt_config.cookie_domain,
        "samesite": jwt_config.cookie_samesite,
    }
    response.set_cookie(names[0], token, httponly=True, path=paths[0], **common)
    if jwt_config.cookie_csrf_protect and jwt_config.csrf_in_cookies:
        response.set_cookie(names[1], claims["csrf"], httponly=False, path=paths[1], **common)


def session_expiry(access_payload: dict[str, Any]) -> dict[str, str | None]:
    """When the access token and the session (its refresh token) expire, ISO-8601 UTC."""
    session_exp = access_payload.get(SESSION_EXPIRY_CLAIM)  # absent in tokens from before it
    return {
        "access_expires_at": _expiry(access_payload).isoformat(),
        "session_expires_at": None if session_exp is None else _utc(session_exp).isoformat(),
    }


def _unverified_claims(token: str) -> dict[str, Any]:
    # Only for a token minted a line earlier: its signature is ours by construction.
    return _segment(token, 1)


def _seconds(setting: str) -> int:
    lifetime: timedelta = current_app.config[setting]
    return int(lifetime.total_seconds())


def revoke_token(session: Session, payload: dict[str, Any], reason: str) -> bool:
    """Add the token's jti to the denylist; False when it was already there (a race lost)."""
    values = {
        "jti": payload["jti"],
        "token_type": payload["type"],
        "reason": reason,
        "expires_at": _expiry(payload),
        "revoked_at": utcnow(),
    }
    result = session.execute(
        insert_ignoring_conflict(_dialect(session), RevokedToken, values, "jti")
    )
    session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


def revoke_family(session: Session, payload: dict[str, Any], reason: str) -> None:
    """End every token of the login session the payload belongs to."""
    refresh_expires: timedelta = current_app.config["JWT_REFRESH_TOKEN_EXPIRES"]
    values = {
        "family": payload.get("fam", ""),
        "reason": reason,
        "expires_at": utcnow() + refresh_expires,
        "revoked_at": utcnow(),
    }
    session.execute(insert_ignoring_conflict(_dialect(session), RevokedFamily, values, "family"))
    session.commit()


def purge_expired(session: Session) -> None:
    """Forget revocations of tokens that have expired anyway (keeps the denylist small)."""
    now = utcnow()
    session.execute(delete(RevokedToken).where(RevokedToken.expires_at < now))
    session.execute(delete(RevokedFamily).where(RevokedFamily.expires_at < now))
    session.commit()


def _expiry(payload: dict[str, Any]) -> datetime:
    return _utc(payload.get("exp", 0))


def _utc(timestamp: Any) -> datetime:
    return datetime.fromtimestamp(int(timestamp), UTC)


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


@dataclass(frozen=True, slots=True)
class AccessCookie:
    """Where an access token and its CSRF value are read from, per the library's settings."""

    name: str
    csrf_header: str
    csrf_methods: frozenset[str]  # empty when CSRF protection is off
    identity_claim: str


def _access_cookie() -> AccessCookie:
    """This app's AccessCookie, read from the library's config once, not per request."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    cookie: AccessCookie | None = app.extensions.get("access_cookie")
    if cookie is None:
        if tuple(jwt_config.token_location) != ("cookies",) or jwt_config.csrf_check_form:
            raise RuntimeError("login_required reads tokens from cookies (JWT_TOKEN_LOCATION)")
        protect = jwt_config.cookie_csrf_protect and jwt_config.csrf_in_cookies
        cookie = app.extensions["access_cookie"] = AccessCookie(
            name=jwt_config.access_cookie_name,
            csrf_header=jwt_config.access_csrf_header_name,
            csrf_methods=frozenset(jwt_config.csrf_request_methods if protect else ()),
            identity_claim=jwt_config.identity_claim_key,
        )
    return cookie


def verify_access_token() -> None:
    """What jwt_required() verifies for an access token in a cookie, in the same order, with
    the same errors (the library's handlers answer them) and the same results for
    get_jwt() and current_user: the token's CSRF value for state-changing methods, the
    signature and claims, its type, its revocation, its user.

    The library's general path (several token locations, a settings lookup through the app
    proxy for each of ~25 options, the header parsed again) was a sixth of the CPU of /me.
    """
    current = request._get_current_object()  # type: ignore[attr-defined]
    if current.method == "OPTIONS":  # the library's exempt method
        return
    cookie = _access_cookie()
    token = current.cookies.get(cookie.name)
    if not token:
        raise NoAuthorizationError(f'Missing cookie "{cookie.name}"')
    csrf_value = None
    if current.method in cookie.csrf_methods:
        csrf_value = current.headers.get(cookie.csrf_header)
        if not csrf_value:
            raise CSRFError("Missing CSRF token")
    manager: AppJWTManager = current_app.extensions["flask-jwt-extended"]
    payload = manager._decode_jwt_from_config(token, csrf_value)
    header = g.jwt_header[1]
    if payload["type"] == "refresh":
        raise WrongTokenError("Only non-refresh tokens are allowed")
    if _is_revoked(header, payload):
        raise RevokedTokenError(header, payload)
    user = _load_user(header, payload)
    if user is None:
        message = f"user_lookup returned None for {payload[cookie.identity_claim]}"
        raise UserLookupError(message, header, payload)
    state = g._get_current_object()
    state._jwt_extended_jwt_user = {"loaded_user": user}
    state._jwt_extended_jwt_header = header
    state._jwt_extended_jwt = payload
    state._jwt_extended_jwt_location = "cookies"


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """jwt_required() for an access token in a cookie (see verify_access_token)."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        verify_access_token()
        return view(*args, **kwargs)

    return wrapper


def admin_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Allow the view to admins only: 401 without a valid session, 403 for other roles."""

    @wraps(view)
    @login_required
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if current_user.role != "admin":
            security_event("permission denied", user=current_user.username, path=request.path)
            return error_response(403, "admin role required")
        return view(*args, **kwargs)

    return wrapper
