"""`auth.get_jwt_secret()`, the design document's name for the signing key in use."""

from __future__ import annotations

from typing import Any

import jwt
from flask import Flask
from flask.testing import FlaskClient

from src.auth import get_jwt_secret
from tests.harness.app import login, put_secret, read_secret


def test_get_jwt_secret_is_the_key_new_tokens_are_signed_with(
    app: Flask, backend_openbao: Any, vault_secrets: dict[str, Any]
) -> None:
    client: FlaskClient = app.test_client()
    assert login(client, "user", vault_secrets["user_password"]).status_code == 200
    cookie = client.get_cookie("access_token_cookie", path="/api/")
    assert cookie is not None
    with app.app_context():
        key = get_jwt_secret()
    assert key == read_secret(backend_openbao, "app/flask")["jwt_secret"]  # from Vault
    claims = jwt.decode(
        cookie.value, key, algorithms=["HS256"], audience=app.config["JWT_DECODE_AUDIENCE"]
    )
    assert claims["type"] == "access"


def test_get_jwt_secret_follows_a_key_changed_in_vault(app: Flask, backend_openbao: Any) -> None:
    original = read_secret(backend_openbao, "app/flask")
    rotated = "rotated-get-jwt-secret-" + "k" * 48
    put_secret(backend_openbao, "app/flask", {**original, "jwt_secret": rotated})
    try:
        # One app context a request: the key is chosen once per request, so it matches its kid.
        with app.app_context():
            assert get_jwt_secret() == original["jwt_secret"]  # the cache is still fresh
        app.extensions["vault"].invalidate_cache()
        with app.app_context():
            assert get_jwt_secret() == rotated
    finally:
        put_secret(backend_openbao, "app/flask", original)
        app.extensions["vault"].invalidate_cache()
