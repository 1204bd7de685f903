"""A full cookie session: login, me, CSRF, refresh rotation, reuse detection, logout."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt as pyjwt
import pytest
from flask.testing import FlaskClient

from tests.harness.app import csrf_headers, login

COOKIES = ("access_token_cookie", "csrf_access_token", "refresh_token_cookie", "csrf_refresh_token")


REVOKED = "token has been revoked"
CSRF_MISMATCH = "CSRF double submit tokens do not match"


def error_of(response: Any) -> str:
    """The error of a 401 answer (which check refused the request)."""
    assert response.status_code == 401, response.get_data(as_text=True)
    return str(response.json["error"])


def set_cookie_headers(response: Any) -> dict[str, str]:
    return {h.split("=", 1)[0]: h for h in response.headers.getlist("Set-Cookie")}


# Where each cookie lives: a cookie is only replaced or cleared at its exact path, and the
# UI's script reads both CSRF cookies from any page.
COOKIE_PATHS = {
    "access_token_cookie": "/api/",
    "refresh_token_cookie": "/api/auth/",
    "csrf_access_token": "/",
    "csrf_refresh_token": "/",
}


def cookie_attributes(header: str) -> dict[str, str]:
    """The attributes of one Set-Cookie header (lower-case names; flags map to "")."""
    _, *attributes = (part.strip() for part in header.split(";"))
    return {k.lower(): v for k, _, v in (a.partition("=") for a in attributes)}


def assert_cookies_cleared(response: Any) -> None:
    """Every session cookie is sent back empty and expired, at the path it was set with."""
    headers = set_cookie_headers(response)
    assert set(headers) == set(COOKIES), response.headers.getlist("Set-Cookie")
    for name, header in headers.items():
        attributes = cookie_attributes(header)
        assert header.startswith(f"{name}=;"), header
        assert attributes["path"] == COOKIE_PATHS[name], header
        expired = attributes.get("max-age") == "0" or "1970" in attributes.get("expires", "")
        assert expired, header


def test_login_as_admin_with_the_password_from_vault(
    client: FlaskClient, vault_secrets: dict[str, Any]
) -> None:
    response = login(client, "admin", vault_secrets["admin_password"])
    assert response.status_code == 200
    assert response.json["user"]["username"] == "admin"
    assert response.json["user"]["role"] == "admin"
    assert "password_hash" not in response.json["user"]
    headers = set_cookie_headers(response)
    assert set(headers) == set(COOKIES)
    for name, header in headers.items():
        assert "Secure" in header
        assert "SameSite=Strict" in header
        assert cookie_attributes(header)["path"] == COOKIE_PATHS[name], header
        assert ("HttpOnly" in header) == name.endswith("_token_cookie"), name
    me = client.get("/api/auth/me")
    assert me.status_code == 200
    assert me.json["user"]["username"] == "admin"


def test_me_without_session_is_401(client: FlaskClient) -> None:
    response = client.get("/api/auth/me")
    assert response.status_code == 401
    assert response.is_json


def test_post_without_csrf_header_is_refused(logged_in_client: FlaskClient) -> None:
    assert error_of(logged_in_client.post("/api/auth/logout")) == "Missing CSRF token"
    wrong = {"X-CSRF-TOKEN": "not-the-cookie-value"}
    assert error_of(logged_in_client.post("/api/auth/logout", headers=wrong)) == CSRF_MISMATCH
    assert error_of(logged_in_client.post("/api/auth/refresh")) == "Missing CSRF token"
    # Still logged in: the refused requests changed nothing.
    assert logged_in_client.get("/api/auth/me").status_code == 200


def test_refresh_rotates_the_refresh_token(logged_in_client: FlaskClient) -> None:
    old_refresh = logged_in_client.get_cookie("refresh_token_cookie", path="/api/auth/")
    assert old_refresh is not None
    response = logged_in_client.post(
        "/api/auth/refresh", headers=csrf_headers(logged_in_client, True)
    )
    assert response.status_code == 200
    new_refresh = logged_in_client.get_cookie("refresh_token_cookie", path="/api/auth/")
    assert new_refresh is not None and new_refresh.value != old_refresh.value
    assert logged_in_client.get("/api/auth/me").status_code == 200


def test_reusing_a_rotated_refresh_token_ends_the_whole_session(
    app: Any, logged_in_client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(app.config, "REFRESH_REUSE_GRACE_SECONDS", 0)  # every replay is reuse
    old_refresh = logged_in_client.get_cookie("refresh_token_cookie", path="/api/auth/")
    old_csrf = csrf_headers(logged_in_client, True)
    assert old_refresh is not None
    assert logged_in_client.post("/api/auth/refresh", headers=old_csrf).status_code == 200
    # An attacker replays the stolen, already rotated refresh token.
    attacker = app.test_client()
    attacker.set_cookie("refresh_token_cookie", old_refresh.value, path="/api/auth/")
    assert error_of(attacker.post("/api/auth/refresh", headers=old_csrf)) == REVOKED
    # The legitimate user's newer tokens die with the family.
    assert error_of(logged_in_client.get("/api/auth/me")) == REVOKED
    new_csrf = csrf_headers(logged_in_client, True)
    assert error_of(logged_in_client.post("/api/auth/refresh", headers=new_csrf)) == REVOKED


def test_logout_makes_both_old_tokens_useless(app: Any, logged_in_client: FlaskClient) -> None:
    access = logged_in_client.get_cookie("access_token_cookie", path="/api/")
    refresh = logged_in_client.get_cookie("refresh_token_cookie", path="/api/auth/")
    refresh_csrf = csrf_headers(logged_in_client, True)
    assert access is not None and refresh is not None
    response = logged_in_client.post("/api/auth/logout", headers=refresh_csrf)
    assert response.status_code == 200
    assert_cookies_cleared(response)
    replay = app.test_client()
    replay.set_cookie("access_token_cookie", access.value, path="/api/")
    replay.set_cookie("refresh_token_cookie", refresh.value, path="/api/auth/")
    assert error_of(replay.get("/api/auth/me")) == REVOKED
    assert error_of(replay.post("/api/auth/refresh", headers=refresh_csrf)) == REVOKED


def test_logout_purges_revocations_of_expired_tokens(
    app: Any, logged_in_client: FlaskClient
) -> None:
    from src.extensions import db
    from src.models import RevokedToken, utcnow

    with app.app_context():
        session = db.session()
        old = RevokedToken(
            jti="expired-long-ago",
            token_type="access",
            reason="logout",
            expires_at=utcnow() - timedelta(days=1),
        )
        session.add(old)
        session.commit()
    assert (
        logged_in_client.post(
            "/api/auth/logout", headers=csrf_headers(logged_in_client, True)
        ).status_code
        == 200
    )
    with app.app_context():
        assert db.session().get(RevokedToken, "expired-long-ago") is None


def expiry_of(body: dict[str, Any], key: str) -> datetime:
    """A parsed ISO-8601 expiry of a session answer; it must say UTC."""
    value = datetime.fromisoformat(body[key])
    assert value.utcoffset() == timedelta(0), body[key]
    return value


def seconds_ahead(body: dict[str, Any], key: str) -> float:
    return (expiry_of(body, key) - datetime.now(UTC)).total_seconds()


def decoded(client: FlaskClient, name: str, path: str) -> dict[str, Any]:
    """The claims of a token cookie (read only to compare with what the JSON says)."""
    cookie = client.get_cookie(name, path=path)
    assert cookie is not None, name
    claims: dict[str, Any] = pyjwt.decode(cookie.value, options={"verify_signature": False})
    return claims


@pytest.mark.parametrize("route", ["login", "me", "refresh"])
def test_session_answers_say_when_access_and_session_expire(
    client: FlaskClient, vault_secrets: dict[str, Any], route: str
) -> None:
    body = login(client, "user", vault_secrets["user_password"]).json
    if route == "me":
        body = client.get("/api/auth/me").json
    elif route == "refresh":
        body = client.post("/api/auth/refresh", headers=csrf_headers(client, True)).json
    assert 15 * 60 - 10 <= seconds_ahead(body, "access_expires_at") <= 15 * 60
    assert 7 * 86400 - 10 <= seconds_ahead(body, "session_expires_at") <= 7 * 86400
    # The very exp claims of the cookies the browser holds, not a guess from the settings.
    access = decoded(client, "access_token_cookie", "/api/")
    refresh = decoded(client, "refresh_token_cookie", "/api/auth/")
    assert expiry_of(body, "access_expires_at").timestamp() == access["exp"]
    assert expiry_of(body, "session_expires_at").timestamp() == refresh["exp"]


def test_refresh_moves_both_expiries_forward(logged_in_client: FlaskClient) -> None:
    before = logged_in_client.get("/api/auth/me").json
    time.sleep(1.1)  # exp has whole-second resolution
    refreshed = logged_in_client.post(
        "/api/auth/refresh", headers=csrf_headers(logged_in_client, True)
    ).json
    after = logged_in_client.get("/api/auth/me").json
    for key in ("access_expires_at", "session_expires_at"):
        assert expiry_of(refreshed, key) > expiry_of(before, key), key
        assert after[key] == refreshed[key], key


def _expire_access_token(client: FlaskClient) -> None:
    """What the browser holds after 15 idle minutes: the access cookie is gone."""
    client.delete_cookie("access_token_cookie", path="/api/")
    client.delete_cookie("csrf_access_token", path="/")


def test_logout_after_the_access_token_expired_ends_the_session(
    app: Any, logged_in_client: FlaskClient
) -> None:
    """Attack: the next person at the browser refreshes a session its owner logged out of."""
    refresh = logged_in_client.get_cookie("refresh_token_cookie", path="/api/auth/")
    refresh_csrf = csrf_headers(logged_in_client, True)
    assert refresh is not None
    _expire_access_token(logged_in_client)
    response = logged_in_client.post("/api/auth/logout", headers=refresh_csrf)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert_cookies_cleared(response)
    replay = app.test_client()
    replay.set_cookie("refresh_token_cookie", refresh.value, path="/api/auth/")
    assert error_of(replay.post("/api/auth/refresh", headers=refresh_csrf)) == REVOKED


def test_logout_without_any_session_still_clears_the_cookies(client: FlaskClient) -> None:
    response = client.post("/api/auth/logout")
    assert response.status_code == 200
    assert_cookies_cleared(response)


def test_two_tabs_refreshing_at_once_keep_the_session(
    app: Any, logged_in_client: FlaskClient
) -> None:
    """Two tabs send the same refresh cookie together: not reuse, the session lives on."""
    refresh = logged_in_client.get_cookie("refresh_token_cookie", path="/api/auth/")
    refresh_csrf = csrf_headers(logged_in_client, True)
    assert refresh is not None
    tabs = [app.test_client() for _ in range(2)]
    for tab in tabs:
        tab.set_cookie("refresh_token_cookie", refresh.value, path="/api/auth/")
    barrier = threading.Barrier(len(tabs))

    def refresh_in(tab: FlaskClient) -> int:
        barrier.wait(timeout=10)
        return tab.post("/api/auth/refresh", headers=refresh_csrf).status_code

    with ThreadPoolExecutor(max_workers=len(tabs)) as pool:
        statuses = list(pool.map(refresh_in, tabs))
    assert statuses == [200, 200]
    for tab in tabs:
        assert tab.get("/api/auth/me").status_code == 200
    assert logged_in_client.get("/api/auth/me").status_code == 200


def test_a_replay_after_the_grace_window_still_ends_the_family(
    make_app: Any, vault_secrets: dict[str, Any]
) -> None:
    app = make_app(REFRESH_REUSE_GRACE_SECONDS=1)
    client = app.test_client()
    assert login(client, "user", vault_secrets["user_password"]).status_code == 200
    old_refresh = client.get_cookie("refresh_token_cookie", path="/api/auth/")
    old_csrf = csrf_headers(client, True)
    assert old_refresh is not None
    assert client.post("/api/auth/refresh", headers=old_csrf).status_code == 200
    time.sleep(1.3)
    attacker = app.test_client()
    attacker.set_cookie("refresh_token_cookie", old_refresh.value, path="/api/auth/")
    assert error_of(attacker.post("/api/auth/refresh", headers=old_csrf)) == REVOKED
    assert error_of(client.get("/api/auth/me")) == REVOKED
