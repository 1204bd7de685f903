"""Issue 23 items 1 and 4, as an attacker with the backend's AppRole credentials tries them.

Dynamic mode against a real OpenBao configured by init-vault.sh and a scram PostgreSQL
cluster whose bootstrap superuser is set up like the Compose db container's.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import hvac
import hvac.exceptions
import psycopg
import pytest
from psycopg import errors

from tests.harness.app import remember_secrets
from tests.harness.dynamic_db import ADMIN_ROLE, DynamicSite

pytestmark = pytest.mark.timeout(120)

# Who an attacker would try to log in as, beside every username the app can read.
KNOWN_ROLES = ("app", "postgres", ADMIN_ROLE, "flask_owner", "flask_app")


@pytest.fixture
def app_vault(dynamic: DynamicSite) -> hvac.Client:
    """A Vault client logged in with the backend's role ID and secret ID."""
    client = dynamic.server.client()
    client.auth.approle.login(role_id=dynamic.server.role_id, secret_id=dynamic.server.secret_id)
    return client


def every_readable_version(client: hvac.Client, path: str) -> list[dict[str, Any]]:
    """Each version of a KV v2 secret the token may read (versions by number: no metadata)."""
    found: list[dict[str, Any]] = []
    misses = 0
    for version in itertools.count(1):
        try:
            response = client.secrets.kv.v2.read_secret_version(
                path=path, version=version, mount_point="secret", raise_on_deleted_version=False
            )
        except hvac.exceptions.Forbidden:
            return found
        except hvac.exceptions.InvalidPath:
            misses += 1
            if misses > 5:
                return found
            continue
        found.append(dict((response["data"] or {}).get("data") or {}))


def strings_in(data: list[dict[str, Any]]) -> set[str]:
    return {str(value) for entry in data for value in entry.values() if value}


def app_lease(client: hvac.Client) -> dict[str, Any]:
    response = client.read("database/creds/flask-app")
    remember_secrets(response["data"]["password"])
    return dict(response)


def connect(site: DynamicSite, user: str, password: str) -> psycopg.Connection:
    return psycopg.connect(
        site.postgres.dsn(user, password, site.database), connect_timeout=5, autocommit=True
    )


def test_nothing_the_app_can_read_logs_in_but_a_lease(
    dynamic: DynamicSite, app_vault: hvac.Client
) -> None:
    """Item 1: every KV value the app's identity reads, tried as the password of every role
    name it reads or could guess, logs into PostgreSQL as nobody."""
    readable = [
        entry
        for path in ("database/postgres", "app/flask", "database/bootstrap", "database/admin")
        for entry in every_readable_version(app_vault, path)
    ]
    assert readable, "the app reads nothing at all?"
    users = {str(entry["username"]) for entry in readable if entry.get("username")}
    users |= {*KNOWN_ROLES, dynamic.postgres.superuser}
    passwords = strings_in(readable)
    remember_secrets(*passwords)
    logged_in = []
    for user, password in itertools.product(sorted(users), sorted(passwords)):
        try:
            connect(dynamic, user, password).close()
        except psycopg.OperationalError:
            continue
        logged_in.append(user)
    assert logged_in == [], f"app-readable KV values log into PostgreSQL as {logged_in}"
    # What it may use instead: a short-lived login, neither superuser nor able to make roles.
    credentials = app_lease(app_vault)["data"]
    with connect(dynamic, credentials["username"], credentials["password"]) as connection:
        row = connection.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
    assert row == (False, False, False)


def test_the_app_login_cannot_become_the_owner(
    dynamic: DynamicSite, app_vault: hvac.Client
) -> None:
    """Item 4: a database/creds/flask-app login can neither SET ROLE to the table owner nor
    drop, alter or put a trigger on the owner's tables."""
    with dynamic.postgres.admin_connect(dynamic.database) as admin:
        admin.execute("SET ROLE flask_owner")
        admin.execute("CREATE TABLE IF NOT EXISTS owned_by_owner (id int)")
    credentials = app_lease(app_vault)["data"]
    attacks = [
        "SET ROLE flask_owner",
        "DROP TABLE owned_by_owner",
        "ALTER TABLE owned_by_owner ADD COLUMN evil int",
        "CREATE TRIGGER evil BEFORE INSERT ON owned_by_owner "
        "FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()",
    ]
    with connect(dynamic, credentials["username"], credentials["password"]) as connection:
        for attack in attacks:
            with pytest.raises(errors.InsufficientPrivilege):
                connection.execute(attack)
        member = connection.execute(
            "SELECT pg_has_role(current_user, 'flask_owner', 'MEMBER')"
        ).fetchone()
    assert member == (False,)


def test_a_revoked_lease_ends_its_open_session(
    dynamic: DynamicSite, app_vault: hvac.Client
) -> None:
    """Item 4: revoking the lease ends the connections of its login, not only future ones."""
    lease = app_lease(app_vault)
    credentials = lease["data"]
    connection = connect(dynamic, credentials["username"], credentials["password"])
    try:
        assert connection.execute("SELECT 1").fetchone() == (1,)
        dynamic.server.client(dynamic.server.root_token).sys.revoke_lease(lease["lease_id"])
        deadline = time.monotonic() + 5
        with pytest.raises(psycopg.OperationalError):
            while time.monotonic() < deadline:
                connection.execute("SELECT 1")
                time.sleep(0.1)
    finally:
        connection.close()
    with dynamic.postgres.admin_connect() as admin:
        gone = admin.execute(
            "SELECT count(*) FROM pg_roles WHERE rolname = %s", (credentials["username"],)
        ).fetchone()
    assert gone == (0,)
