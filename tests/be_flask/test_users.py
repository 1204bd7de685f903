"""User administration: admins only; disabling or changing a password ends sessions."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.harness.app import csrf_headers, login, random_name, user_table

PASSWORD = "a perfectly fine passphrase"
ENDED = "session is no longer valid"
ADMIN_ROUTES = [
    ("get", "/api/users"),
    ("post", "/api/users"),
    ("patch", "/api/users/1"),
    ("delete", "/api/users/1"),
    ("get", "/api/admin/vault/status"),
    ("post", "/api/admin/vault/refresh"),
]


def create_user(admin: FlaskClient, role: str = "user", password: str = PASSWORD) -> dict[str, Any]:
    body = {"username": random_name(), "password": password, "role": role}
    response = admin.post("/api/users", json=body, headers=csrf_headers(admin))
    assert response.status_code == 201, response.json
    return dict(response.json["user"])


def patch(admin: FlaskClient, user_id: int, **changes: Any) -> Any:
    return admin.patch(f"/api/users/{user_id}", json=changes, headers=csrf_headers(admin))


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_non_admin_gets_403(logged_in_client: FlaskClient, method: str, path: str) -> None:
    response = getattr(logged_in_client, method)(
        path, json={"enabled": False}, headers=csrf_headers(logged_in_client)
    )
    assert response.status_code == 403
    assert response.json["error"] == "admin role required"


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_anonymous_gets_401(app: Flask, client: FlaskClient, method: str, path: str) -> None:
    """With a body that an admin's request would apply: nothing of it may be written."""
    body = {"username": random_name(), "password": PASSWORD, "role": "admin", "enabled": False}
    before = user_table(app)
    response = getattr(client, method)(path, json=body)
    assert user_table(app) == before  # nothing written, whatever the answer
    assert response.status_code == 401
    assert response.json["error"] == 'Missing cookie "access_token_cookie"'


def test_admin_lists_the_default_users(admin_client: FlaskClient) -> None:
    response = admin_client.get("/api/users")
    assert response.status_code == 200
    roles = {u["username"]: u["role"] for u in response.json["users"]}
    assert roles["admin"] == "admin"
    assert roles["user"] == "user"
    assert all("password_hash" not in u for u in response.json["users"])


def test_create_login_and_delete(app: Flask, admin_client: FlaskClient) -> None:
    user = create_user(admin_client)
    client = app.test_client()
    assert login(client, user["username"], PASSWORD).status_code == 200
    response = admin_client.delete(f"/api/users/{user['id']}", headers=csrf_headers(admin_client))
    assert response.status_code == 204
    assert client.get("/api/auth/me").status_code == 401
    assert login(app.test_client(), user["username"], PASSWORD).status_code == 401
    assert (
        admin_client.delete(
            f"/api/users/{user['id']}", headers=csrf_headers(admin_client)
        ).status_code
        == 404
    )


def test_disabled_user_cannot_log_in_and_live_tokens_stop(
    app: Flask, admin_client: FlaskClient
) -> None:
    user = create_user(admin_client)
    client = app.test_client()
    assert login(client, user["username"], PASSWORD).status_code == 200
    refresh_csrf = csrf_headers(client, refresh=True)
    assert patch(admin_client, user["id"], enabled=False).json["user"]["enabled"] is False
    assert client.get("/api/auth/me").json["error"] == ENDED
    assert client.post("/api/auth/refresh", headers=refresh_csrf).json["error"] == ENDED
    denied = login(app.test_client(), user["username"], PASSWORD)
    assert denied.status_code == 401
    assert denied.json["error"] == "invalid username or password"
    patch(admin_client, user["id"], enabled=True)
    assert login(app.test_client(), user["username"], PASSWORD).status_code == 200


def test_password_change_ends_sessions(app: Flask, admin_client: FlaskClient) -> None:
    user = create_user(admin_client)
    client = app.test_client()
    assert login(client, user["username"], PASSWORD).status_code == 200
    new_password = "another fine passphrase"
    assert patch(admin_client, user["id"], password=new_password).status_code == 200
    assert client.get("/api/auth/me").json["error"] == ENDED
    assert login(app.test_client(), user["username"], PASSWORD).status_code == 401
    assert login(app.test_client(), user["username"], new_password).status_code == 200


def test_role_change_takes_effect(app: Flask, admin_client: FlaskClient) -> None:
    user = create_user(admin_client)
    client = app.test_client()
    assert login(client, user["username"], PASSWORD).status_code == 200
    assert client.get("/api/users").status_code == 403
    assert patch(admin_client, user["id"], role="admin").json["user"]["role"] == "admin"
    assert login(client, user["username"], PASSWORD).status_code == 200
    assert client.get("/api/users").status_code == 200


def test_admin_cannot_lock_themselves_out(admin_client: FlaskClient) -> None:
    me = admin_client.get("/api/auth/me").json["user"]
    assert patch(admin_client, me["id"], enabled=False).status_code == 409
    assert patch(admin_client, me["id"], role="user").status_code == 409
    response = admin_client.delete(f"/api/users/{me['id']}", headers=csrf_headers(admin_client))
    assert response.status_code == 409


def test_patch_unknown_user_is_404(admin_client: FlaskClient) -> None:
    assert patch(admin_client, 987654, enabled=False).status_code == 404


def test_long_passphrase_is_accepted_whole(app: Flask, admin_client: FlaskClient) -> None:
    """No truncation: a 1000-character passphrase must match in full, not by a prefix."""
    passphrase = "long passphrase " * 62
    user = create_user(admin_client, password=passphrase)
    assert login(app.test_client(), user["username"], passphrase).status_code == 200
    assert login(app.test_client(), user["username"], passphrase[:-1]).status_code == 401


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_deleted_users_session_never_passes_to_the_next_user(
    make_app: Any, vault_secrets: dict[str, Any], tmp_path: Any, backend: str
) -> None:
    """Attack: delete the highest-id user, create another; the old tokens must not follow."""
    settings = {"DATABASE_URL": f"sqlite:///{tmp_path / 'ids.db'}"} if backend == "sqlite" else {}
    app = make_app(**settings)
    admin = app.test_client()
    assert login(admin, "admin", vault_secrets["admin_password"]).status_code == 200
    victim = create_user(admin)
    old_session = app.test_client()
    assert login(old_session, victim["username"], PASSWORD).status_code == 200
    assert admin.delete(f"/api/users/{victim['id']}", headers=csrf_headers(admin)).status_code in (
        200,
        204,
    )
    newcomer = create_user(admin, role="admin")
    assert newcomer["id"] != victim["id"], "a deleted user's id was given out again"
    assert old_session.get("/api/auth/me").status_code == 401
    refreshed = old_session.post("/api/auth/refresh", headers=csrf_headers(old_session, True))
    assert refreshed.status_code == 401


def demote_each_other(app: Flask, admin: FlaskClient) -> tuple[list[int], list[str]]:
    """Two new admins demote each other at the same moment: (statuses, their roles after)."""
    pair = [create_user(admin, role="admin") for _ in range(2)]
    clients = [app.test_client() for _ in pair]
    for client, user in zip(clients, pair, strict=True):
        assert login(client, user["username"], PASSWORD).status_code == 200
    barrier = threading.Barrier(2)

    def demote(me: int) -> int:
        barrier.wait(timeout=10)
        return patch(clients[me], pair[1 - me]["id"], role="user").status_code

    with ThreadPoolExecutor(max_workers=2) as pool:
        statuses = sorted(pool.map(demote, range(2)))
    roles = {u["id"]: u["role"] for u in admin.get("/api/users").json["users"]}
    return statuses, [roles[user["id"]] for user in pair]


def test_two_admins_demoting_each_other_at_once_leave_one_admin(
    app: Flask, admin_client: FlaskClient
) -> None:
    """Race: each demotes the other at the same moment; never both (zero admins of the two)."""
    for _ in range(4):
        statuses, roles = demote_each_other(app, admin_client)
        assert "admin" in roles, statuses
        assert statuses[0] == 200 and statuses[1] in (401, 403), statuses
