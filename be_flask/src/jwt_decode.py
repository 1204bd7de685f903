"""Flask-JWT-Extended's token decode, on a PyJWT whose segment check is one regex per segment.

PyJWT refuses a segment holding anything but the base64url alphabet (GHSA-hxm8-2xgr-2p9m) by
testing every character in a Python loop: about 45 us of the CPU of each request for our
tokens of ~500 characters, the largest single cost of an authenticated request. The same rules
checked by one compiled regex cost about 1 us. Everything else is PyJWT's and the library's.
"""

from __future__ import annotations

import binascii
import re
from hmac import compare_digest
from typing import Any

from flask_jwt_extended.exceptions import CSRFError, JWTDecodeError
from jwt import PyJWS, PyJWT
from jwt.exceptions import DecodeError
from jwt.utils import base64url_decode, base64url_encode

_BASE64URL = re.compile(rb"[A-Za-z0-9_-]*")


class _RegexCheckedJWS(PyJWS):
    @staticmethod
    def _decode_base64url_segment(segment: bytes, name: str) -> bytes:
        """PyJWS's own checks (padding, alphabet, canonical encoding), the alphabet by regex."""
        stripped = segment.rstrip(b"=")
        padding = len(segment) - len(stripped)
        if padding > 2 or (padding and len(segment) % 4 != 0):
            raise DecodeError(f"Invalid {name} padding")
        if len(stripped) % 4 == 1 or not _BASE64URL.fullmatch(stripped):
            raise DecodeError(f"Invalid {name} padding")
        try:
            decoded = base64url_decode(stripped)
        except (TypeError, binascii.Error) as err:
            raise DecodeError(f"Invalid {name} padding") from err
        if base64url_encode(decoded) != stripped:
            raise DecodeError(f"Invalid {name} padding")
        return decoded


class _Decoder(PyJWT):
    def __init__(self) -> None:
        super().__init__()
        self._jws = _RegexCheckedJWS(options=self._get_sig_options())


_decoder = _Decoder()


def decode_jwt(
    *,
    algorithms: list[str],
    allow_expired: bool,
    audience: Any,
    csrf_value: str | None,
    encoded_token: str,
    identity_claim_key: str,
    issuer: str,
    leeway: int,
    secret: str,
    verify_aud: bool,
    verify_sub: bool,
) -> dict[str, Any]:
    """flask_jwt_extended.tokens._decode_jwt, line for line, on the decoder above."""
    options: dict[str, Any] = {"verify_aud": verify_aud, "verify_sub": verify_sub}
    if allow_expired:
        options["verify_exp"] = False
    decoded: dict[str, Any] = _decoder.decode(
        encoded_token,
        secret,
        algorithms=algorithms,
        audience=audience,
        issuer=issuer,
        leeway=leeway,
        options=options,  # type: ignore[arg-type]
    )
    if identity_claim_key not in decoded:
        raise JWTDecodeError(f"Missing claim: {identity_claim_key}")
    decoded.setdefault("type", "access")
    decoded.setdefault("fresh", False)
    decoded.setdefault("jti", None)
    if csrf_value:
        if "csrf" not in decoded:
            raise JWTDecodeError("Missing claim: csrf")
        if not compare_digest(decoded["csrf"], csrf_value):
            raise CSRFError("CSRF double submit tokens do not match")
    return decoded
