"""CSRF double submit on every state-changing admin route, not only logout and refresh."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.be_flask.test_users import PASSWORD, create_user, random_name

WRONG = {"X-CSRF-TOKEN": "not-the-cookie-value"}
REFUSALS = {"Missing CSRF token", "CSRF double submit tokens do not match"}


def requests_for(admin: FlaskClient) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """Each state-changing route with a body the admin is allowed to send."""
    victim = create_user(admin)
    return {
        "create": ("post", "/api/users", {"username": random_name(), "password": PASSWORD}),
        "update": ("patch", f"/api/users/{victim['id']}", {"enabled": False}),
        "delete": ("delete", f"/api/users/{victim['id']}", {}),
        "vault refresh": ("post", "/api/admin/vault/refresh", {}),
    }


@pytest.mark.parametrize("route", ["create", "update", "delete", "vault refresh"])
@pytest.mark.parametrize("headers", [{}, WRONG], ids=["no header", "wrong header"])
def test_state_changing_route_refuses_a_request_without_the_csrf_token(
    admin_client: FlaskClient, route: str, headers: dict[str, str]
) -> None:
    method, path, body = requests_for(admin_client)[route]
    before = admin_client.get("/api/users").json["users"]
    response = getattr(admin_client, method)(path, json=body, headers=headers)
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.json["error"] in REFUSALS
    assert admin_client.get("/api/users").json["users"] == before  # nothing written
