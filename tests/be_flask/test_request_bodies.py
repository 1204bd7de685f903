"""Bad request bodies get a clear 4xx JSON answer, never a 500."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.harness.app import csrf_headers, user_table

JSON = "application/json"
BAD_LOGIN_BODIES = [
    pytest.param("{}", JSON, 400, "missing field: username", id="empty object"),
    pytest.param('{"username": "admin"}', JSON, 400, "missing field: password", id="no password"),
    pytest.param('{"password": "x"}', JSON, 400, "missing field: username", id="no username"),
    pytest.param('{"username": 1, "password": "x"}', JSON, 400, "type str", id="number username"),
    pytest.param('{"username": "a", "password": ["x"]}', JSON, 400, "type str", id="list password"),
    pytest.param('{"username": null, "password": "x"}', JSON, 400, "type str", id="null username"),
    pytest.param('{"username": "a", "password": true}', JSON, 400, "type str", id="bool password"),
    pytest.param('["admin", "x"]', JSON, 400, "JSON object", id="array"),
    pytest.param('"admin"', JSON, 400, "JSON object", id="string"),
    pytest.param("null", JSON, 400, "JSON object", id="null"),
    pytest.param("{not json", JSON, 400, "JSON object", id="malformed"),
    pytest.param(b"\xff\xfe{}", JSON, 400, "JSON object", id="not UTF-8"),
    pytest.param("", JSON, 400, "JSON object", id="empty body"),
    pytest.param(
        '{"username": "ad\\ud800min", "password": "x"}',
        JSON,
        400,
        "username",
        id="lone surrogate username",
    ),
    pytest.param(
        '{"username": "admin", "password": "pa\\udfffss"}',
        JSON,
        400,
        "password",
        id="lone surrogate password",
    ),
    pytest.param(
        '{"username": "ad\\u0000min", "password": "x"}', JSON, 400, "username", id="NUL username"
    ),
    pytest.param(
        '{"username": "admin", "password": "p\\u0000w"}', JSON, 400, "password", id="NUL password"
    ),
    pytest.param(
        "username=admin&password=x", "application/x-www-form-urlencoded", 415, "JSON", id="form"
    ),
    pytest.param('{"username": "a", "password": "b"}', "text/plain", 415, "JSON", id="text/plain"),
    pytest.param(
        json.dumps({"username": "a", "password": "p" * 5000}),
        JSON,
        400,
        "at most",
        id="huge password",
    ),
    pytest.param(
        json.dumps({"username": "u" * 90_000, "password": "x"}),
        JSON,
        401,
        "invalid",
        id="huge username",
    ),
    pytest.param("x" * 200_000, JSON, 413, "exceeds the capacity limit", id="over the body limit"),
]


@pytest.mark.parametrize(("body", "content_type", "status", "message"), BAD_LOGIN_BODIES)
def test_bad_login_bodies(
    client: FlaskClient, body: str | bytes, content_type: str, status: int, message: str
) -> None:
    response = client.post("/api/auth/login", data=body, content_type=content_type)
    assert response.status_code == status
    assert response.is_json
    assert message in response.json["error"]


BAD_USER_BODIES: list[Any] = [
    pytest.param({"password": "a long enough passphrase"}, 400, id="no username"),
    pytest.param({"username": "new1"}, 400, id="no password"),
    pytest.param({"username": "new2", "password": "short"}, 400, id="short password"),
    pytest.param({"username": "new3", "password": "p" * 1025}, 400, id="password over 1024"),
    pytest.param({"username": "new4", "password": "Password1234"}, 400, id="common password"),
    pytest.param(
        {"username": "new5", "password": "correct horse battery staple"},
        400,
        id="famous passphrase",
    ),
    pytest.param(
        {"username": "new6", "password": "a long enough passphrase", "role": "root"},
        400,
        id="unknown role",
    ),
    pytest.param(
        {"username": "new7", "password": "a long enough passphrase", "role": 1},
        400,
        id="role not a string",
    ),
    pytest.param(
        {"username": "bad name!", "password": "a long enough passphrase"}, 400, id="bad username"
    ),
    pytest.param(
        {"username": "x" * 65, "password": "a long enough passphrase"}, 400, id="long username"
    ),
    pytest.param(
        {"username": "admin", "password": "a long enough passphrase"}, 409, id="existing username"
    ),
    pytest.param(
        {"username": "new8", "password": "a long enough \ud800 passphrase"},
        400,
        id="lone surrogate password",
    ),
    pytest.param(
        {"username": "new9", "password": "a long enough \x00 passphrase"}, 400, id="NUL password"
    ),
]


@pytest.mark.parametrize(("body", "status"), BAD_USER_BODIES)
def test_bad_user_bodies(admin_client: FlaskClient, body: dict[str, Any], status: int) -> None:
    response = admin_client.post("/api/users", json=body, headers=csrf_headers(admin_client))
    assert response.status_code == status, response.json
    assert response.is_json and response.json["error"]


BAD_USER_PATCHES = [
    pytest.param({}, id="nothing"),
    pytest.param({"enabled": "no"}, id="enabled string"),
    pytest.param({"role": "root"}, id="bad role"),
    pytest.param({"password": "short"}, id="short password"),
    pytest.param({"enabled": 0}, id="enabled int"),
    # A good change with a bad one: the good one must not be written either.
    pytest.param({"role": "admin", "password": "short"}, id="good role, short password"),
    pytest.param({"enabled": False, "role": "root"}, id="good enabled, bad role"),
    pytest.param({"role": "admin", "enabled": "no"}, id="good role, enabled string"),
]


@pytest.mark.parametrize("body", BAD_USER_PATCHES)
def test_bad_user_patches(app: Flask, admin_client: FlaskClient, body: dict[str, Any]) -> None:
    users = admin_client.get("/api/users").json["users"]
    user_id = next(u["id"] for u in users if u["username"] == "user")
    before = user_table(app)
    response = admin_client.patch(
        f"/api/users/{user_id}", json=body, headers=csrf_headers(admin_client)
    )
    assert response.status_code == 400
    assert response.is_json and response.json["error"]
    # role, enabled, token_version, password hash: the user as before, and everyone else too.
    assert user_table(app) == before
