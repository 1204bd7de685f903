"""The private PostgreSQL cluster really checks passwords (what credential tests rely on)."""

import psycopg
import pytest


def test_right_password_connects(postgres):
    database, user, password = postgres.create_app_database()
    with psycopg.connect(postgres.dsn(user, password, database)) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (user,)


def test_wrong_password_is_refused(postgres):
    database, user, _ = postgres.create_app_database()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(postgres.dsn(user, "not-the-password", database))


def test_auth_method_is_scram(postgres):
    with postgres.admin_connect() as conn:
        methods = {row[0] for row in conn.execute("SELECT auth_method FROM pg_hba_file_rules")}
    assert methods == {"scram-sha-256"}
