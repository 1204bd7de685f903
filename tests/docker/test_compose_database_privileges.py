"""Issue 23 items 1 and 4 in Compose: no credential the backend can obtain is a superuser.

In the db container `app` (POSTGRES_USER) is the bootstrap superuser, with the Docker secret
db_password.txt. From inside the backend container, with the backend's own AppRole identity,
an attacker reads every KV version the app may read and its database lease, and tries each
value as the password of every role named there or guessable. Only the lease logs in, and it
is neither a superuser nor a member of the table owner.
"""

from __future__ import annotations

import json

import pytest

from tests.docker.conftest import Project
from tests.docker.test_compose_stacks import APP, containers

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1200)]

# Runs inside the backend container, as the backend's user, with its environment. Prints the
# logins that worked (role name, superuser, owner member), never a password.
PROBE = """
import itertools, json
import hvac.exceptions, psycopg
from src.vault_client import get_vault_client

vc = get_vault_client()
readable = []
for path in ("database/postgres", "app/flask", "database/bootstrap", "database/admin"):
    misses = 0
    for version in range(1, 50):
        try:
            answer = vc.tokens.call(
                lambda: vc.adapter.get(f"/v1/secret/data/{path}?version={version}")
            )
        except hvac.exceptions.Forbidden:
            break
        except hvac.exceptions.InvalidPath:
            misses += 1
            if misses > 5:
                break
            continue
        readable.append(((answer or {}).get("data") or {}).get("data") or {})
lease = vc.tokens.call(lambda: vc.adapter.get("/v1/database/creds/flask-app"))["data"]
users = {"app", "postgres", "vault_db_admin", "flask_owner", lease["username"]}
users |= {str(e["username"]) for e in readable if e.get("username")}
passwords = {str(v) for e in readable for v in e.values() if v} | {lease["password"]}
worked = []
for user, password in itertools.product(sorted(users), sorted(passwords)):
    try:
        connection = psycopg.connect(
            host="db", user=user, password=password, dbname="appdb", connect_timeout=5
        )
    except psycopg.OperationalError:
        continue
    with connection:
        row = connection.execute(
            "SELECT rolsuper, pg_has_role(current_user, 'flask_owner', 'MEMBER')"
            " FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
    worked.append([user, row[0], row[1], user == lease["username"]])
print("WORKED " + json.dumps(worked))
"""


def test_no_credential_the_backend_can_obtain_is_a_superuser(project: Project) -> None:
    stack = project
    stack.sh("./setup.sh", "--docker", timeout=900)
    app = containers(stack, APP)
    # The premise: the db container's bootstrap login is a superuser, with the Docker secret.
    superuser = stack.sh(
        "docker", "exec", app["db"]["Id"], "sh", "-c",
        'PGPASSWORD="$(cat /run/secrets/db_password)" psql -X -qtA -h 127.0.0.1 '
        '-U "$POSTGRES_USER" -d "$POSTGRES_DB" -c "SELECT rolsuper FROM pg_roles '
        'WHERE rolname = current_user"',
    ).strip()  # fmt: skip
    assert superuser == "t"

    output = stack.compose(APP, "exec", "-T", "backend", "python3", "-c", PROBE)
    line = next(line for line in output.splitlines() if line.startswith("WORKED "))
    worked = json.loads(line.removeprefix("WORKED "))
    # Exactly the lease logs in: not a superuser, not a member of the owner role.
    assert [entry[1:] for entry in worked] == [[False, False, True]], worked
    assert worked[0][0].startswith("v-"), worked
