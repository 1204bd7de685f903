"""Benchmark baseline: the same app, but the JWT key comes from an environment variable."""

from __future__ import annotations

import os

from flask import Flask

from src.be import create_app as create_backend
from src.extensions import jwt


def create_app() -> Flask:
    """The backend with Vault out of the token path (BENCH_JWT_SECRET signs and verifies)."""
    app = create_backend()
    key = os.environ["BENCH_JWT_SECRET"]
    jwt.encode_key_loader(lambda _identity: key)
    jwt.decode_key_loader(lambda _header, _payload: key)
    return app
