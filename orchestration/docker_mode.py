"""Docker mode: the two Compose stacks. Keys, .env and certificates stay in the checkout
(the scripts' defaults); node 1 is the published VAULT_PORT (nodes 2 and 3: +2, +4)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from orchestration import process, vault_config
from orchestration.backup import backup_target, snapshot
from orchestration.cluster import Cluster, read_token
from orchestration.compose import Compose
from orchestration.console import SetupError, say
from orchestration.context import Run
from orchestration.database import ADMIN_ROLE, converge_script, new_admin_password, roles_script
from orchestration.docker_restore import docker_restore
from orchestration.layout import docker_vault_addr, published_node_addrs
from orchestration.migrations import migrate_argv, run_migrations
from orchestration.restore import write_manifest
from orchestration.scripts import child_env, run_vault_script
from orchestration.summary import summary, wait_until_ready
from orchestration.tls import cert_state, make_certs
from orchestration.vault_api import node_role
from orchestration.vault_scripts import env_upsert

# Tables a static-mode backend created belong to `app`, the bootstrap superuser (REASSIGN
# OWNED cannot move its system objects): its tables go to the owner role.
REOWN_TABLES = """DO $$DECLARE r record; BEGIN
  FOR r IN SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
      AND c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
  LOOP EXECUTE format('ALTER TABLE public.%I OWNER TO flask_owner', r.relname); END LOOP;
END$$;
"""
# Inside the db container, as its superuser with the Docker secret's password (read there).
DB_SHELL = ('PGPASSWORD="$(cat /run/secrets/db_password)" exec psql -X -q -v ON_ERROR_STOP=1 '
            '-h 127.0.0.1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" -v admin_role=vault_db_admin '
            '-v database="$POSTGRES_DB"')  # fmt: skip
DUMP_SHELL = ('PGPASSWORD="$(cat /run/secrets/db_password)" exec pg_dump -Fc -h 127.0.0.1 '
              '-U "$POSTGRES_USER" "$POSTGRES_DB"')  # fmt: skip


class DockerMode:
    """The commands of Docker mode; each verb of the CLI is a method of the same name."""

    def __init__(self, run: Run, compose: Compose) -> None:
        self.run, self.compose = run, compose
        self.addrs = published_node_addrs(run.ha, run.settings.vault_port, run.tls.scheme)

    def call(self, stack: str, *args: str, stdin: str | None = None, **env: str) -> None:
        self.compose_run(stack, args, env, stdin)

    def compose_run(
        self,
        stack: str,
        args: Sequence[str],
        env: Mapping[str, str],
        stdin: str | None = None,
        quiet: bool = False,
    ) -> None:
        """Compose on a stack; `quiet`: its stdout is dropped (stderr still shows)."""
        argv = self.compose.argv(stack, *args)
        done = subprocess.run(argv, env=child_env(self.compose.env(**env)), input=stdin,
                              stdout=subprocess.DEVNULL if quiet else None, text=True,
                              check=False)  # fmt: skip
        if done.returncode != 0:
            raise SetupError(f"{' '.join(argv[:2])} {' '.join(args)} failed (output above)")

    def app_env(self) -> dict[str, str]:
        modsecurity = "MODSECURITY" if self.run.options.modsecurity else "NO_MODSECURITY"
        return {"FE_MODSECURITY": modsecurity,
                "HTTP_PORT": str(self.run.settings.http_port),
                "BACKEND_REPLICAS": str(self.run.replicas)}  # fmt: skip

    def front_url(self) -> str:
        if self.run.tls.on:
            return f"https://127.0.0.1:{self.run.settings.https_port}"
        return f"http://localhost:{self.run.settings.http_port}"

    def script_env(self, **extra: str) -> dict[str, str]:
        return {"VAULT_BIN": self.run.require_bao(), "PROJECT_DIR": str(self.run.root),
                "VAULT_ADDR": self.addrs[0],
                "APP_VAULT_ADDR": docker_vault_addr(self.run.ha, self.run.tls.scheme),
                "DB_HOST": "db", "DB_PORT": "5432", **extra}  # fmt: skip

    def render_tls(self) -> None:
        """The configs the TLS overlays mount (vault/tls/compose/), on every up."""
        if not self.run.tls.on:
            return
        directory = self.run.tls.dir / "compose"
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in vault_config.compose_tls_configs(self.run.tls.mode).items():
            (directory / name).write_text(text, encoding="utf-8")
            (directory / name).chmod(0o644)

    def wait_for_vault_api(self) -> None:
        """Docker's proxy accepts connections before the server inside listens."""
        for _ in range(60):
            if self.run.vault(self.addrs[0]).seal_status():
                return
            time.sleep(1)
        raise SetupError(f"the Vault container does not answer at {self.addrs[0]}: see docker "
                         f"compose -p {self.compose.vault_project} -f docker-compose.vault.yaml "
                         "logs vault")  # fmt: skip

    def cluster(self) -> Cluster:
        root = self.run.root
        return Cluster(self.run, self.addrs, root / "vault-keys.json", root)

    def up(self) -> None:
        """Everything up: a list of steps, each a method of its own."""
        for step in (self.remember, self.start_vault_stack, self.init_vault,
                     self.dynamic_credentials, self.migrations, self.start_app_stack,
                     self.wait_ready, self.print_summary):  # fmt: skip
            step()

    def remember(self) -> None:
        run = self.run
        run.state.mode, run.state.replicas, run.state.tls = "docker", run.replicas, run.tls.mode
        run.state.ha = run.ha
        run.save_state()
        run.require_bao()

    def start_vault_stack(self) -> None:
        run, root = self.run, self.run.root
        make_certs(root, root, run.tls)
        self.render_tls()
        say(f"starting the Vault stack ({self.compose.vault_files_label()})")
        self.call("vault", "up", "-d")
        process.wait_for_port(run.settings.vault_port, "the Vault container (docker compose -f "
                              "docker-compose.vault.yaml logs vault)",
                              run.layout.log_dir)  # fmt: skip
        self.wait_for_vault_api()

    def init_vault(self) -> None:
        run, root = self.run, self.run.root
        say("initializing/unsealing Vault (vault/scripts/init-vault.sh)")
        run_vault_script(str(root), "init-vault.sh", self.script_env())
        self.cluster().join()
        # Compose reads .env for substitution too: a later `docker compose up` by hand keeps
        # the backend's Vault address(es).
        env_upsert(root / ".env", {"BACKEND_VAULT_ADDR": docker_vault_addr(run.ha, run.tls.scheme)})
        # The containers read secrets through the group SECRETS_GID; secrets/ stays 0700.
        (root / "secrets").chmod(0o700)

    def start_app_stack(self) -> None:
        replicas = self.run.replicas
        say(f"starting the app stack (docker-compose.yaml), {replicas} backend replica(s)")
        self.call("app", "up", "-d", "--build", "--scale", f"backend={replicas}", **self.app_env())
        self.recreate_front()

    def print_summary(self) -> None:
        root = self.run.root
        files = (root / "vault-keys.json", root / "vault-operator-token")
        say(summary(self.run, self.front_url(), self.addrs[0], files, "docker compose logs -f"))

    def wait_ready(self) -> None:
        def logs() -> None:
            subprocess.run(self.compose.argv("app", "logs", "--tail", "20", "backend"),
                           env=child_env(self.compose.env()), check=False)  # fmt: skip

        wait_until_ready(self.run, self.front_url(), "see docker compose logs, fix, and re-run "
                         "./setup.sh", logs)  # fmt: skip

    def recreate_front(self) -> None:
        """The front lists the replicas' addresses when it starts: recreated after them."""
        self.call("app", "up", "-d", "--no-deps", "--force-recreate", "frontend", **self.app_env())

    def dynamic_credentials(self) -> None:
        """VAULT_DB_MODE=dynamic as locally: the roles once in the db container, then
        init-vault.sh points the engine at it with an admin password Vault rotates at once."""
        run, root = self.run, self.run.root
        token = read_token(root / "vault-operator-token")
        say("starting PostgreSQL (docker-compose.yaml: db) for the roles of dynamic credentials")
        self.call("app", "up", "-d", "db", HTTP_PORT=str(run.settings.http_port))
        self.wait_for_db()
        if run.vault(self.addrs[0], token).ok("GET", "database/config/app-postgres"):
            # A database set up before the roles changed (issue 23): same grants as a fresh one.
            self.db_psql(converge_script(), "updating the roles of dynamic credentials in the "
                         "db container failed (output above)")  # fmt: skip
            say("dynamic database credentials: configured (kept)")
            return
        admin_password = new_admin_password()
        self.db_psql(roles_script(admin_password, REOWN_TABLES), "creating the roles of dynamic "
                     "credentials in the db container failed (output above)")  # fmt: skip
        say("roles flask_owner, flask_app and vault_db_admin: ready")
        env = self.script_env(DB_ADMIN_PASSWORD=admin_password, VAULT_DB_MODE="dynamic",
                              DB_ADMIN_USER=ADMIN_ROLE, DB_SSLMODE="disable")  # fmt: skip
        run_vault_script(str(root), "init-vault.sh", env, "--database-engine-only")
        say("dynamic database credentials: configured (admin password rotated by Vault)")

    def db_psql(self, sql: str, failure: str) -> None:
        """SQL on stdin, in the db container as its bootstrap superuser with the Docker
        secret's password (read there, never passed in)."""
        try:
            self.compose_run("app", ["exec", "-T", "db", "sh", "-c", DB_SHELL], {}, sql, quiet=True)
        except SetupError:
            raise SetupError(failure) from None

    def migrations(self) -> None:
        """As locally, in a one-off backend container (the database is only on the stack's
        networks; dynamic_credentials has started it). Docker mode keeps the operator token in
        the checkout."""
        operator = self.run.vault(self.addrs[0], read_token(self.run.root / "vault-operator-token"))
        say("migrating the database (a one-off backend container, a flask-migrate login)")
        port = {"HTTP_PORT": str(self.run.settings.http_port)}
        self.compose_run("app", ["build", "backend"], port, quiet=True)
        name = str(operator.kv_get("database/postgres").get("database") or "")
        backend = self.compose.argv("app", "run", "--rm", "-T", "--no-deps", "backend", "python")
        run_migrations(operator, migrate_argv(backend, "db", "5432", name), self.compose.env())

    def wait_for_db(self) -> None:
        argv = self.compose.argv("app", "exec", "-T", "db", "pg_isready", "-q", "-h", "127.0.0.1")
        for _ in range(90):
            done = subprocess.run(argv, env=child_env(self.compose.env()), capture_output=True,
                                  check=False)  # fmt: skip
            if done.returncode == 0:
                return
            time.sleep(1)
        raise SetupError("the db container did not accept connections within 90 s: see docker "
                         "compose logs db")  # fmt: skip

    def stop(self) -> None:
        if self.run.options.stop_vault_only:
            self.call("vault", "stop")
            say("Vault stopped; the app keeps serving from its cache. Back: ./setup.sh (starts "
                "and unseals it)")  # fmt: skip
            return
        self.call("app", "down")
        self.call("vault", "down")
        say("stopped (volumes kept)")

    def restart_app(self) -> None:
        """Recreated: a new container reads .env (env_file) again."""
        run = self.run
        run.state.replicas = run.replicas
        run.save_state()
        self.call("app", "up", "-d", "--force-recreate", "--scale", f"backend={run.replicas}",
                  "backend", HTTP_PORT=str(run.settings.http_port),
                  BACKEND_REPLICAS=str(run.replicas))  # fmt: skip
        self.recreate_front()
        self.wait_ready()

    def reset(self) -> None:
        raise SetupError("--reset is for local mode; with Docker: docker compose down -v "
                         "(deletes volumes)")  # fmt: skip

    def status(self) -> None:
        run = self.run
        say(f"mode: docker ({self.compose.vault_files_label()})")
        self.call("vault", "ps")
        for number, addr in enumerate(self.addrs, start=1):
            say(f"  vault-{number}: {addr}, {node_role(run.vault(addr))}")
        hint = (f"renew with PROJECT_DIR={run.root} vault/scripts/make-certs.sh --force, then "
                "./setup.sh --stop and ./setup.sh")  # fmt: skip
        say(
            "Vault certificate: "
            + cert_state(run.tls, os.environ.get("CERT_WARN_DAYS") or "30", hint)
        )
        self.call("app", "ps")

    def backup(self) -> None:
        run = self.run
        run.require_bao()
        target = backup_target(Path(run.options.backup_dir or str(run.root / "backups")))
        temporary = target / "app-db.dump.tmp"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            argv = self.compose.argv("app", "exec", "-T", "db", "sh", "-c", DUMP_SHELL)
            done = subprocess.run(argv, env=child_env(self.compose.env()), stdout=out, check=False)
        if done.returncode != 0:
            temporary.unlink(missing_ok=True)
            raise SetupError("pg_dump in the db container failed (docker compose logs db)")
        temporary.rename(target / "app-db.dump")
        say(f"database: pg_dump (custom format) in {target / 'app-db.dump'} (mode 0600); restore: "
            'README.md, "With Docker"')  # fmt: skip
        snapshot(run, target, {"PROJECT_DIR": str(run.root), "VAULT_ADDR": self.addrs[0]})
        write_manifest(target, run.root / "vault-keys.json")
        say(f"backup written to {target}")

    def restore(self) -> None:
        docker_restore(self, DB_SHELL)
