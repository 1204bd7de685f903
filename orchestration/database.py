"""The app's database: a private PostgreSQL cluster (local mode), the roles of dynamic
credentials (both modes, and the tests), SQLite when there is no PostgreSQL."""

from __future__ import annotations

import os
import pwd
import re
import secrets
import subprocess
from pathlib import Path
from shutil import which

from orchestration.cluster import read_token
from orchestration.console import SetupError, say
from orchestration.context import Run
from orchestration.local_vault import script_env
from orchestration.process import require_free_port
from orchestration.scripts import run_vault_script

VAULT_CONFIG = Path(__file__).resolve().parents[1] / "vault" / "config"
ROLES_SQL = VAULT_CONFIG / "postgres-dynamic-roles.sql"
# Brings roles made by an older ROLES_SQL to what it creates now (issue 23); harmless on a
# current cluster, so every run applies it to a database that was configured before.
CONVERGE_SQL = VAULT_CONFIG / "postgres-dynamic-roles-converge.sql"
ADMIN_ROLE = "vault_db_admin"
SQL_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def roles_script(admin_password: str, then: str = "") -> str:
    """psql input for vault/config/postgres-dynamic-roles.sql: the roles once, or on a run
    that stopped half-way only the admin's new password; the password travels on stdin,
    never in argv. `then`: SQL run after it either way."""
    return "\n".join([
        f"\\set admin_password '{admin_password}'",
        "SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'flask_owner') AS fresh \\gset",
        "\\if :fresh",
        ROLES_SQL.read_text(encoding="utf-8"),
        "\\else",
        f"ALTER ROLE {ADMIN_ROLE} PASSWORD :'admin_password';",
        "\\endif",
        then,
    ])  # fmt: skip


def converge_script() -> str:
    """psql input bringing the roles of an already configured database up to date."""
    return CONVERGE_SQL.read_text(encoding="utf-8")


def new_admin_password() -> str:
    return secrets.token_urlsafe(24)


def find_postgres() -> Path | None:
    """The newest installed PostgreSQL's bin dir with initdb and pg_ctl, else PATH's."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                        key=lambda p: [int(x) for x in re.findall(r"\d+", p.parent.name)],
                        reverse=True)  # fmt: skip
    for directory in candidates:
        if os.access(directory / "initdb", os.X_OK) and os.access(directory / "pg_ctl", os.X_OK):
            return directory
    initdb, pg_ctl = which("initdb"), which("pg_ctl")
    return Path(initdb).parent if initdb and pg_ctl else None


def as_pg_owner(argv: list[str]) -> list[str]:
    """initdb and pg_ctl refuse root: as root they run as the postgres OS user."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


class Postgres:
    """The private cluster under the data dir, on 127.0.0.1:PG_PORT and a private socket."""

    def __init__(self, run: Run, bin_dir: Path) -> None:
        self.run, self.bin = run, bin_dir
        self.data, self.sockets = run.layout.pg_data, run.layout.pg_socket_dir
        self.port, self.log = run.settings.pg_port, run.layout.log_dir / "postgres.log"

    def tool(self, name: str, *args: str) -> list[str]:
        return as_pg_owner([str(self.bin / name), *args])

    def psql(self, database: str, *args: str) -> list[str]:
        return self.tool("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.sockets),
                          "-p", str(self.port), "-d", database, *args)  # fmt: skip

    def logged(self, argv: list[str], stdin: str | None = None) -> bool:
        with self.log.open("ab") as log:
            done = subprocess.run(argv, input=None if stdin is None else stdin.encode(),
                                  stdout=log, stderr=log, check=False)  # fmt: skip
        return done.returncode == 0

    def running(self) -> bool:
        if not (self.data / "PG_VERSION").exists():
            return False
        argv = self.tool("pg_ctl", "-D", str(self.data), "status")
        return subprocess.run(argv, capture_output=True, check=False).returncode == 0

    def _prepare_dirs(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            if subprocess.run(["id", "postgres"], capture_output=True).returncode != 0:
                raise SetupError("running as root needs the postgres OS user (PostgreSQL package)")
            self.log.touch()
            for path in (self.data, self.sockets, self.log):
                os.chown(path, *_postgres_ids())
            reach = ["runuser", "-u", "postgres", "--", "test", "-x", str(self.run.data_dir)]
            if subprocess.run(reach, check=False).returncode != 0:
                raise SetupError(
                    f"the postgres user cannot reach {self.run.data_dir}: make its parent "
                    "directories world-executable (chmod o+x) or set DATA_DIR elsewhere"
                )
        self.data.chmod(0o700)

    def start(self) -> None:
        self._prepare_dirs()
        if not (self.data / "PG_VERSION").exists():
            say(f"creating PostgreSQL cluster in {self.data} (scram-sha-256 over TCP)")
            initdb = self.tool("initdb", "-D", str(self.data), "--auth-local=peer",
                                "--auth-host=scram-sha-256", "--encoding=UTF8",
                                "--no-instructions")  # fmt: skip
            if not self.logged(initdb):
                raise SetupError(f"initdb failed (see {self.log})")
            say("creating PostgreSQL cluster: ok")
        if self.running():
            say(f"PostgreSQL: already running on 127.0.0.1:{self.port}")
            return
        require_free_port(self.port, "PG_PORT")
        say(f"starting PostgreSQL on 127.0.0.1:{self.port}")
        options = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1"
        argv = self.tool("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                          "-o", options, "start")  # fmt: skip
        if subprocess.run(argv, stdout=subprocess.DEVNULL, check=False).returncode != 0:
            raise SetupError(f"PostgreSQL did not start (see {self.log})")
        say("starting PostgreSQL: ok")

    def stop(self) -> None:
        if self.running():
            say("stopping PostgreSQL")
            argv = self.tool("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
            subprocess.run(argv, stdout=subprocess.DEVNULL, check=False)
            say("stopping PostgreSQL: ok")


def _postgres_ids() -> tuple[int, int]:
    entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid


def db_settings(run: Run) -> dict[str, str]:
    """secret/database/postgres as the operator reads it."""
    token = read_token(run.layout.operator_token_file)
    return {k: str(v) for k, v in run.vault(token=token).kv_get("database/postgres").items()}


def bootstrap_user(run: Run) -> str:
    """The database's bootstrap login (secret/database/bootstrap, operators only; the backend
    reads database/postgres, which holds no login)."""
    token = read_token(run.layout.operator_token_file)
    return str(run.vault(token=token).kv_get("database/bootstrap").get("username") or "")


def sync_location(run: Run) -> None:
    """Ports are overridable: keep Vault's idea of where the database is in step."""
    settings = db_settings(run)
    port = str(run.settings.pg_port)
    if settings.get("host") == "127.0.0.1" and settings.get("port") == port:
        return
    env = {**os.environ, "VAULT_ADDR": run.vault().addr,
           "VAULT_TOKEN": read_token(run.layout.operator_token_file)}  # fmt: skip
    argv = [run.require_bao(), "kv", "patch", "-mount=secret", "database/postgres",
            "host=127.0.0.1", f"port={port}"]  # fmt: skip
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
    say(f"secret/database/postgres: host/port set to 127.0.0.1:{port}")


def ensure_database(run: Run, postgres: Postgres) -> None:
    """The database secret/database/postgres names, owned by the bootstrap role of
    secret/database/bootstrap with the password Vault holds for operators (init-vault.sh's
    secrets/db_password.txt), passed on stdin, never in argv. The backend never logs in as it."""
    user, name = bootstrap_user(run), db_settings(run).get("database", "")
    if not (SQL_NAME.match(user) and SQL_NAME.match(name)):
        raise SetupError("secret/database/bootstrap and secret/database/postgres name an unusual "
                         f"role/database ('{user}'/'{name}'): create them by hand")  # fmt: skip
    password_file = run.layout.secrets_dir / "db_password.txt"
    password = password_file.read_text(encoding="utf-8").strip() if password_file.exists() else ""
    if not password:
        raise SetupError(f"{password_file} is missing: re-run ./setup.sh (init-vault.sh writes it)")
    if "$pw$" in password:
        raise SetupError("the database password contains $pw$: rotate it")
    sql = (
        "SET password_encryption = 'scram-sha-256';\n"  # noqa: S608 - names checked, password in $pw$
        f"SELECT 'CREATE ROLE {user} LOGIN' WHERE NOT EXISTS "
        f"(SELECT FROM pg_roles WHERE rolname = '{user}')\\gexec\n"
        f"ALTER ROLE {user} WITH LOGIN PASSWORD $pw${password}$pw$;\n"
        f"SELECT 'CREATE DATABASE {name} OWNER {user}' WHERE NOT EXISTS "
        f"(SELECT FROM pg_database WHERE datname = '{name}')\\gexec\n"
    )
    if not postgres.logged(postgres.psql("postgres"), sql):
        raise SetupError(f"creating role/database failed (see {postgres.log})")
    say(f"database {name} and role {user}: ready (password from Vault)")


def ensure_dynamic_credentials(run: Run, postgres: Postgres) -> None:
    """VAULT_DB_MODE=dynamic: the roles once (tables of the static role move to the owner
    role), then init-vault.sh configures the engine with a fresh admin password that Vault
    rotates at once, so it is stored nowhere."""
    token = read_token(run.layout.operator_token_file)
    name = db_settings(run).get("database", "")
    if run.vault(token=token).ok("GET", "database/config/app-postgres"):
        # A cluster set up before the roles changed (issue 23): same grants as a fresh one.
        argv = postgres.psql(name, "-v", f"admin_role={ADMIN_ROLE}")
        if not postgres.logged(argv, converge_script()):
            raise SetupError("updating the roles of dynamic credentials failed "
                             f"(see {postgres.log})")  # fmt: skip
        say("dynamic database credentials: configured (kept)")
        return
    user = bootstrap_user(run)
    admin_password = new_admin_password()
    script = roles_script(admin_password, f"REASSIGN OWNED BY {user} TO flask_owner;")
    argv = postgres.psql(name, "-v", f"admin_role={ADMIN_ROLE}", "-v", f"database={name}")
    if not postgres.logged(argv, script):
        raise SetupError(f"creating the roles of dynamic credentials failed (see {postgres.log})")
    say("roles flask_owner, flask_app and vault_db_admin: ready")
    env = {**script_env(run), "DB_ADMIN_PASSWORD": admin_password, "VAULT_DB_MODE": "dynamic",
           "DB_ADMIN_USER": ADMIN_ROLE, "DB_SSLMODE": "disable"}  # fmt: skip
    run_vault_script(str(run.root), "init-vault.sh", env)
    say("dynamic database credentials: configured (admin password rotated by Vault)")
