"""The backend's token decode (src/jwt_decode.py) accepts and refuses exactly what PyJWT does."""

from __future__ import annotations

import jwt
import pytest
from flask_jwt_extended.exceptions import CSRFError

from src.jwt_decode import decode_jwt

KEY = "k" * 64
ISSUER, AUDIENCE = "issuer", "audience"
CLAIMS = {"sub": "1", "iss": ISSUER, "aud": AUDIENCE, "exp": 4102444800, "csrf": "c", "jti": "j"}
GOOD = jwt.encode(CLAIMS, KEY, algorithm="HS256", headers={"kid": "1"})
HEADER, PAYLOAD, SIGNATURE = GOOD.split(".")


def ours(token: str, csrf_value: str | None = None) -> dict[str, object]:
    return decode_jwt(
        algorithms=["HS256"],
        allow_expired=False,
        audience=AUDIENCE,
        csrf_value=csrf_value,
        encoded_token=token,
        identity_claim_key="sub",
        issuer=ISSUER,
        leeway=0,
        secret=KEY,
        verify_aud=True,
        verify_sub=True,
    )


def pyjwt(token: str) -> dict[str, object]:
    return dict(jwt.decode(token, KEY, algorithms=["HS256"], audience=AUDIENCE, issuer=ISSUER))


@pytest.mark.parametrize(
    "token",
    [
        GOOD,
        f"{HEADER}.{PAYLOAD}.{SIGNATURE}=",  # padding where none belongs
        f"{HEADER}.{PAYLOAD}.{SIGNATURE}===",  # three padding characters
        f"{HEADER}.{PAYLOAD}!.{SIGNATURE}",  # outside the alphabet
        f"{HEADER}.{PAYLOAD}.{SIGNATURE[:-1]}!",
        f"{HEADER}+.{PAYLOAD}.{SIGNATURE}",  # base64, not base64url
        f"{HEADER}.{PAYLOAD}A.{SIGNATURE}",  # length 1 modulo 4
        f"{HEADER}.{PAYLOAD[:-1]}{chr(ord(PAYLOAD[-1]) + 1)}.{SIGNATURE}",  # non-canonical
        f"{HEADER}.{PAYLOAD}.{SIGNATURE[:-2]}",  # signature cut
        f"{HEADER}.{PAYLOAD}",  # two segments
        f"{HEADER}.{PAYLOAD}.{SIGNATURE}.{SIGNATURE}",
        f"{HEADER}.{PAYLOAD}.{SIGNATURE}\n",
        "",
    ],
)
def test_same_answer_as_pyjwt(token: str) -> None:
    try:
        expected: object = pyjwt(token)
    except jwt.InvalidTokenError as error:
        expected = type(error)
    try:
        got: object = ours(token)
    except jwt.InvalidTokenError as error:
        got = type(error)
    if isinstance(expected, dict):
        assert isinstance(got, dict) and {k: got[k] for k in expected} == expected
    else:
        assert got is expected, (token, got, expected)


def test_defaults_and_csrf_as_the_library() -> None:
    decoded = ours(GOOD, csrf_value="c")
    assert decoded["type"] == "access" and decoded["fresh"] is False
    with pytest.raises(CSRFError):
        ours(GOOD, csrf_value="not c")
