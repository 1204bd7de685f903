"""Issue 23 items 1 and 4, as an attacker with the backend's credentials tries them.

Dynamic mode against a real OpenBao configured by init-vault.sh and a scram PostgreSQL
cluster whose bootstrap superuser is set up like the Compose db container's.
"""

from __future__ import annotations

import itertools
import secrets
import time
from typing import Any

import hvac
import hvac.exceptions
import psycopg
import pytest
from psycopg import errors

from tests.be_flask.test_database_dynamic import dynamic_app
from tests.harness.app import login, put_secret, read_secret, remember_secrets, vault_client_for
from tests.harness.dynamic_db import (
    ADMIN_ROLE,
    CONVERGE_SQL,
    DynamicSite,
    apply_roles_sql,
    dynamic_site,
)
from tests.harness.openbao import OpenBao, every_readable_version
from tests.harness.postgres import PostgresCluster, running_postgres

pytestmark = pytest.mark.timeout(120)

LOCATION_KEYS = ("host", "port", "database", "username")
# Who an attacker would try to log in as, beside every username the app can read.
KNOWN_ROLES = ("app", "postgres", ADMIN_ROLE, "flask_owner", "flask_app")


@pytest.fixture
def app_vault(dynamic: DynamicSite) -> hvac.Client:
    """A Vault client logged in with the backend's role ID and secret ID."""
    client = dynamic.server.client()
    client.auth.approle.login(role_id=dynamic.server.role_id, secret_id=dynamic.server.secret_id)
    return client


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
    # Only the secret values (where the database is appears in ordinary log lines).
    remember_secrets(*(v for e in readable for k, v in e.items() if k not in LOCATION_KEYS))
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


def test_a_rerun_moves_an_older_deployments_login_out_of_the_apps_reach() -> None:
    """A deployment from before: its bootstrap login in secret/database/postgres (versions
    1 and 2), its connection allowing flask-app alone. setup.sh's re-run of init-vault.sh
    (no VAULT_DB_MODE) keeps that login for operators and the Docker secret, removes it from
    every version the app reads, and makes migration logins available to the operator."""
    # A cluster of its own: the roles of dynamic credentials are cluster-wide.
    with running_postgres() as postgres, dynamic_site(postgres) as site:
        root = site.server.client(site.server.root_token)
        kv = root.secrets.kv.v2
        old = {"username": "app", "password": secrets.token_urlsafe(24)}
        remember_secrets(old["password"])
        location = kv.read_secret_version(
            path="database/postgres", mount_point="secret", raise_on_deleted_version=True
        )["data"]["data"]
        for _ in range(2):
            kv.create_or_update_secret(
                path="database/postgres", secret={**location, **old}, mount_point="secret"
            )
        kv.delete_metadata_and_all_versions(path="database/bootstrap", mount_point="secret")
        root.write("database/config/app-postgres", allowed_roles="flask-app")
        with postgres.admin_connect(site.database) as admin:  # the roles as they were made
            admin.execute(f"GRANT flask_owner TO flask_app; REVOKE flask_owner FROM {ADMIN_ROLE}")
            admin.execute(f"REVOKE pg_signal_backend FROM {ADMIN_ROLE}")

        rerun = site.server.run_script("init-vault.sh")
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr

        bootstrap = kv.read_secret_version(
            path="database/bootstrap", mount_point="secret", raise_on_deleted_version=True
        )["data"]["data"]
        assert bootstrap == old
        assert (site.server.workdir / "secrets" / "db_password.txt").read_text() == old["password"]
        app = site.server.client()
        app.auth.approle.login(role_id=site.server.role_id, secret_id=site.server.secret_id)
        readable = every_readable_version(app, "database/postgres")
        assert readable and all(set(entry) == {"host", "port", "database"} for entry in readable)
        # setup.sh's converge SQL on the cluster: then migrations work, and the app's logins
        # reach no owner.
        apply_roles_sql(postgres, site.database, "unused", CONVERGE_SQL)
        site.migrate()  # the operator's flask-migrate login works on the kept connection
        credentials = app_lease(app)["data"]
        with (
            connect(site, credentials["username"], credentials["password"]) as connection,
            pytest.raises(errors.InsufficientPrivilege),
        ):
            connection.execute("SET ROLE flask_owner")


def test_the_backend_never_migrates_with_its_own_login(app_log_dir: Any) -> None:
    """Item 4: the backend's login changes no schema. On a database nobody migrated it says
    so (readiness 503, one clear log line) and creates nothing; after the operator's
    migration (python -m src.migrate, a flask-migrate login) it serves."""
    from src.extensions import db

    with running_postgres() as postgres, dynamic_site(postgres) as site:
        app = dynamic_app(site, app_log_dir, DATABASE_PREPARE_RETRY_SECONDS=0)
        try:
            response = app.test_client().get("/api/ready")
            assert response.status_code == 503, response.get_json()
            assert response.get_json()["reason"] == "database schema not migrated"
            with postgres.admin_connect(site.database) as admin:
                tables = admin.execute(
                    "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
                ).fetchone()
            assert tables == (0,)
            log = (app_log_dir / "in-process.log").read_text()
            assert "run the migrations with a flask-migrate login" in log

            result = site.migrate()
            assert "migrating database: ok" in result.stdout
            assert app.test_client().get("/api/ready").status_code == 200
            password = read_secret(site.server, "app/flask")["user_password"]
            assert login(app.test_client(), "user", password).status_code == 200
        finally:
            db.dispose(app)


def test_a_static_login_that_is_a_superuser_is_refused(
    dev_openbao: OpenBao, postgres: PostgresCluster, app_log_dir: Any
) -> None:
    """Item 1, static mode: a superuser in secret/database/postgres (the Compose bootstrap's
    login, as older versions of init-vault.sh wrote it) is not used: readiness and every
    request say why (503), and nothing is created in the database as that superuser."""
    from src.be import create_app
    from src.extensions import db

    database = postgres.create_database(f"su_{secrets.token_hex(4)}")
    location = {"host": postgres.host, "port": str(postgres.port), "database": database}
    superuser = {"username": postgres.superuser, "password": postgres.superuser_password}
    put_secret(dev_openbao, "database/postgres", {**location, **superuser})
    app = create_app(
        {
            "VAULT_CLIENT": vault_client_for(dev_openbao),
            "DATABASE_PREPARE_RETRY_SECONDS": 0,
            "LOG_FILE": str(app_log_dir / "in-process.log"),
            "RATELIMIT_ENABLED": False,
            "REDIS_URL": "",
            "TESTING": True,
        }
    )
    try:
        client = app.test_client()
        ready = client.get("/api/ready")
        assert ready.status_code == 503, ready.get_json()
        assert ready.get_json()["reason"] == "database login is a superuser"
        password = read_secret(dev_openbao, "app/flask")["user_password"]
        refused = login(client, "user", password)
        assert refused.status_code == 503
        assert refused.get_json()["error"] == "database login is a superuser"
        with postgres.admin_connect(database) as admin:
            tables = admin.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            assert tables.fetchone() == (0,)

        # The operator gives it a login of its own: served after a cache refresh, no restart.
        own, own_password = f"own_{secrets.token_hex(4)}", secrets.token_urlsafe(24)
        postgres.create_role(own, own_password)
        with postgres.admin_connect() as admin:
            admin.execute(f'ALTER DATABASE "{database}" OWNER TO "{own}"')
        put_secret(
            dev_openbao,
            "database/postgres",
            {**location, "username": own, "password": own_password},
        )
        app.extensions["vault"].invalidate_cache()
        assert client.get("/api/ready").status_code == 200
        assert login(client, "user", password).status_code == 200
    finally:
        db.dispose(app)
