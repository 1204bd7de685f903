"""The floor of the benchmark: bare Flask + PyJWT verifying the same kind of access cookie.

Same gunicorn config, same key, algorithm, issuer and audience as the backend's tokens; no
database, no revocation, no CSRF, no logging, no metrics. Whatever the backend spends above
this is the cost of its features.
"""

from __future__ import annotations

import os
from contextlib import suppress
from typing import Any

import jwt
from argon2 import PasswordHasher, Type
from argon2.exceptions import VerificationError
from flask import Flask, jsonify, request

from src.settings import DEFAULTS

ISSUER = "flask-vault-backend"
AUDIENCE = "flask-vault-backend-api"


def create_app() -> Flask:
    """GET /api/auth/me answering the token's subject, POST /api/auth/login doing only the
    argon2id verify at the backend's parameters, and /api/ready for the harness."""
    app = Flask(__name__)
    key = os.environ["BENCH_JWT_SECRET"]
    hasher = PasswordHasher(
        time_cost=int(DEFAULTS["ARGON2_TIME_COST"]),
        memory_cost=int(DEFAULTS["ARGON2_MEMORY_COST"]),
        parallelism=int(DEFAULTS["ARGON2_PARALLELISM"]),
        type=Type.ID,
    )
    hashed = hasher.hash("the bare login's own password")

    @app.post("/api/auth/login")
    def login() -> Any:
        # The same work whether the password matches or not: the verify is the cost measured.
        password = str((request.get_json(silent=True) or {}).get("password", ""))
        with suppress(VerificationError):
            hasher.verify(hashed, password)
        return jsonify(status="verified")

    @app.get("/api/auth/me")
    def me() -> Any:
        token = request.cookies.get("access_token_cookie", "")
        try:
            claims = jwt.decode(token, key, algorithms=["HS256"], audience=AUDIENCE, issuer=ISSUER)
        except jwt.InvalidTokenError:
            return jsonify(error="invalid token"), 401
        return jsonify(user={"id": claims["sub"], "role": claims.get("role")}, exp=claims["exp"])

    @app.get("/api/ready")
    def ready() -> Any:
        return jsonify(status="ready")

    return app
