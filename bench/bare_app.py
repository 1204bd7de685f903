"""The floor of the benchmark: bare Flask + PyJWT verifying the same kind of access cookie.

Same gunicorn config, same key, algorithm, issuer and audience as the backend's tokens; no
database, no revocation, no CSRF, no logging, no metrics. Whatever the backend spends above
this is the cost of its features.
"""

from __future__ import annotations

import os
from typing import Any

import jwt
from flask import Flask, jsonify, request

ISSUER = "flask-vault-backend"
AUDIENCE = "flask-vault-backend-api"


def create_app() -> Flask:
    """GET /api/auth/me answering the token's subject; /api/ready for the harness."""
    app = Flask(__name__)
    key = os.environ["BENCH_JWT_SECRET"]

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
