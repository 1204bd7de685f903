"""Every token attack is a 401 JSON answer, never a 500 and never a session."""

from __future__ import annotations

import base64
import json
import time
import warnings
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient

ATTACKER_KEY = "attacker-key-" + "x" * 64


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(data: dict[str, Any]) -> str:
    return b64(json.dumps(data).encode())


# kid of the real token under attack: forgeries carry it, so only the attack itself is wrong.
REAL_KID: dict[str, str] = {}


def sign(payload: dict[str, Any], key: str, algorithm: str = "HS256", **headers: Any) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short keys for HS512 are part of the attack
        return jwt.encode(payload, key, algorithm=algorithm, headers={**REAL_KID, **headers})


def unsigned(payload: dict[str, Any], alg: str) -> str:
    return f"{b64json({'alg': alg, 'typ': 'JWT'})}.{b64json(payload)}."


Attack = Callable[[dict[str, Any], str, str], str]


def tamper_payload(claims: dict[str, Any], key: str, token: str) -> str:
    header, _, signature = token.split(".")
    return f"{header}.{b64json({**claims, 'sub': '999', 'role': 'admin'})}.{signature}"


def future(seconds: int = 3600) -> int:
    return int(time.time()) + seconds


ATTACKS: dict[str, Attack] = {
    "alg none": lambda c, k, t: unsigned(c, "none"),
    "alg None": lambda c, k, t: unsigned(c, "None"),
    "alg nOnE": lambda c, k, t: unsigned(c, "nOnE"),
    "alg none with signature kept": lambda c, k, t: unsigned(c, "none") + t.split(".")[2],
    "HS512 with the real key": lambda c, k, t: sign(c, k, "HS512"),
    "HS384 with the real key": lambda c, k, t: sign(c, k, "HS384"),
    "payload changed, signature kept": tamper_payload,
    "signature stripped": lambda c, k, t: t.rsplit(".", 1)[0] + ".",
    "two segments": lambda c, k, t: t.rsplit(".", 1)[0],
    "five segments": lambda c, k, t: t + ".e30.e30",
    "non-UTF-8 header": lambda c, k, t: b64(b"\xff\xfe\xfd") + "." + t.split(".", 1)[1],
    "non-UTF-8 payload": lambda c, k, t: t.split(".")[0] + "." + b64(b"\xc3\x28\xa0") + ".c2ln",
    "non-ASCII characters": lambda c, k, t: t[:-4] + "\u00ff\u00fe\u00e9\u00e8",
    "oversize": lambda c, k, t: sign({**c, "pad": "A" * 20_000}, k),
    "empty": lambda c, k, t: "",
    "garbage": lambda c, k, t: "not-a-token",
    "expired": lambda c, k, t: sign({**c, "exp": int(time.time()) - 10}, k),
    "nbf in the future": lambda c, k, t: sign({**c, "nbf": future()}, k),
    "iat in the future": lambda c, k, t: sign({**c, "iat": future()}, k),
    "wrong issuer": lambda c, k, t: sign({**c, "iss": "someone-else"}, k),
    "no issuer": lambda c, k, t: sign({x: v for x, v in c.items() if x != "iss"}, k),
    "wrong audience": lambda c, k, t: sign({**c, "aud": "another-api"}, k),
    "refresh token as access token": lambda c, k, t: sign({**c, "type": "refresh"}, k),
    "token version of ended sessions": lambda c, k, t: sign({**c, "ver": c["ver"] - 1}, k),
    "unknown user": lambda c, k, t: sign({**c, "sub": "987654"}, k),
    "non-numeric subject": lambda c, k, t: sign({**c, "sub": "admin' OR 1=1 --"}, k),
    "signed with another key": lambda c, k, t: sign(c, ATTACKER_KEY),
    "kid with a path": lambda c, k, t: sign(c, ATTACKER_KEY, kid="../../../../dev/null"),
    "kid with SQL": lambda c, k, t: sign(c, ATTACKER_KEY, kid="x' UNION SELECT 'key' --"),
    "jku header": lambda c, k, t: sign(c, ATTACKER_KEY, jku="http://127.0.0.1:9/jwks.json"),
    "jwk header": lambda c, k, t: sign(
        c, ATTACKER_KEY, jwk={"kty": "oct", "k": b64(ATTACKER_KEY.encode())}
    ),
}


@pytest.fixture
def user_token(logged_in_client: FlaskClient) -> tuple[dict[str, Any], str]:
    """A valid access token of `user` and its claims."""
    cookie = logged_in_client.get_cookie("access_token_cookie", path="/api/")
    assert cookie is not None
    return jwt.decode(cookie.value, options={"verify_signature": False}), cookie.value


@pytest.mark.parametrize("attack", ATTACKS.values(), ids=ATTACKS.keys())
def test_token_attack_is_401(
    app: Flask,
    user_token: tuple[dict[str, Any], str],
    vault_secrets: dict[str, Any],
    attack: Attack,
) -> None:
    claims, token = user_token
    REAL_KID["kid"] = jwt.get_unverified_header(token)["kid"]
    forged = attack(claims, vault_secrets["jwt_secret"], token)
    response = me_with_raw_cookie(app, forged)
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.is_json
    assert response.json["status"] == 401
    if forged:  # the token reached the check: it was refused, not overlooked
        assert response.json["error"] != 'Missing cookie "access_token_cookie"'


def me_with_raw_cookie(app: Flask, token: str) -> Any:
    """GET /api/auth/me with a raw Cookie header (the cookie jar would refuse some tokens).

    The string is the WSGI (latin-1) view of the header bytes, so any byte can be sent.
    """
    client = app.test_client(use_cookies=False)
    environ = {"HTTP_COOKIE": f"access_token_cookie={token}"}
    return client.get("/api/auth/me", environ_overrides=environ)


def test_the_untouched_token_works(app: Flask, user_token: tuple[dict[str, Any], str]) -> None:
    """The control: the same request with the real token is accepted."""
    assert me_with_raw_cookie(app, user_token[1]).status_code == 200


def test_raw_non_utf8_cookie_bytes_are_401(app: Flask) -> None:
    response = me_with_raw_cookie(app, "\xff\xfe\xc3(\xa0.e30.c2ln")
    assert response.status_code == 401
    assert response.json["error"] == "invalid token"


def test_non_ascii_csrf_header_is_401(logged_in_client: FlaskClient) -> None:
    response = logged_in_client.post("/api/auth/logout", headers={"X-CSRF-TOKEN": "\u00ff\u00e9"})
    assert response.status_code == 401


def test_refresh_cookie_with_an_access_token_is_401(
    app: Flask, logged_in_client: FlaskClient, user_token: tuple[dict[str, Any], str]
) -> None:
    """The CSRF header matches the access token's csrf claim: only its type is wrong."""
    claims, token = user_token
    headers = {"X-CSRF-TOKEN": claims["csrf"]}
    logged_in_client.set_cookie("refresh_token_cookie", token, path="/api/auth/")
    response = logged_in_client.post("/api/auth/refresh", headers=headers)
    # A CSRF mismatch would say "CSRF double submit tokens do not match".
    assert (response.status_code, response.json) == (401, {"error": "invalid token", "status": 401})


def test_the_real_token_re_signed_with_its_kid_works(
    app: Flask, user_token: tuple[dict[str, Any], str], vault_secrets: dict[str, Any]
) -> None:
    """The control of the attacks: sign() alone makes no token fail."""
    claims, token = user_token
    REAL_KID["kid"] = jwt.get_unverified_header(token)["kid"]
    assert me_with_raw_cookie(app, sign(claims, vault_secrets["jwt_secret"])).status_code == 200
