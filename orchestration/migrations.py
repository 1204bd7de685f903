"""Schema migrations by the operator, not the backend (issue 23): the schema changes as the
table owner with a login of Vault's flask-migrate role, which the operator token reads and the
backend's cannot: fetched, piped to `python -m src.migrate` (stdin, never argv), revoked. The
backend only checks that the schema is current."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from orchestration.cluster import read_token
from orchestration.console import SetupError, say
from orchestration.context import Run
from orchestration.database import db_settings
from orchestration.scripts import run_indented
from orchestration.vault_api import Vault, VaultUnreachable

MIGRATE_CREDS = "database/creds/flask-migrate"


def migrate_argv(python: Sequence[str], host: str, port: str, database: str) -> list[str]:
    """`python -m src.migrate` for the database at host:port, run by `python` (a command line:
    the venv's interpreter, or `compose run ... backend python`)."""
    return [*python, "-m", "src.migrate", "--host", host, "--port", port, "--database", database]


def flask_migrate_login(operator: Vault) -> dict[str, object]:
    """A fresh lease of the flask-migrate role (the whole answer: src.migrate reads it)."""
    try:
        answer = operator.call("GET", MIGRATE_CREDS)
    except VaultUnreachable:
        answer = {}
    if "status" in answer or not answer.get("lease_id"):
        raise SetupError(f"no migration login from Vault ({MIGRATE_CREDS}): re-run ./setup.sh "
                         "to configure it")  # fmt: skip
    return answer


def run_migrations(
    operator: Vault,
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: Path | None = None,
) -> None:
    """argv (migrate_argv) with a flask-migrate login on stdin; the lease revoked after, the
    migration failed or not."""
    answer = flask_migrate_login(operator)
    try:
        run_indented(argv, env, "migrating the database failed (its message is above)",
                     stdin=json.dumps(answer), cwd=cwd)  # fmt: skip
    finally:
        if not operator.ok("PUT", "sys/leases/revoke", {"lease_id": answer["lease_id"]}):
            say("warning: could not revoke the migration lease (it ends by itself within 1h)")


def local_migrations(run: Run) -> None:
    """From be_flask/ with the venv's Python, against the private cluster."""
    say("migrating the database (python -m src.migrate, a flask-migrate login)")
    operator = run.vault(token=read_token(run.layout.operator_token_file))
    venv_bin = run.settings.venv / "bin"
    argv = migrate_argv([str(venv_bin / "python")], "127.0.0.1", str(run.settings.pg_port),
                        db_settings(run).get("database", ""))  # fmt: skip
    path = f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"
    run_migrations(operator, argv, {"PATH": path}, cwd=run.root / "be_flask")
