"""Local mode: the topology as processes under the data dir (no Docker)."""

from __future__ import annotations

import os
import subprocess
import sys

from orchestration import apache, backends, database, local_vault, migrations, process, redis
from orchestration.backup import local_backup
from orchestration.console import SetupError, say
from orchestration.context import Run
from orchestration.database import Postgres
from orchestration.local_restore import local_restore
from orchestration.local_status import status
from orchestration.process import Supervised
from orchestration.reload import reload_app
from orchestration.summary import summary, wait_until_ready
from orchestration.tls import make_certs
from orchestration.vault_scripts import env_upsert


class LocalMode:
    """The commands of local mode; each verb of the CLI is a method of the same name."""

    def __init__(self, run: Run) -> None:
        self.run = run

    def _prepare(self) -> None:
        run, layout = self.run, self.run.layout
        layout.run_dir.mkdir(parents=True, exist_ok=True)
        layout.log_dir.mkdir(parents=True, exist_ok=True)
        # Straight to the final mode (a running front must keep passing through on a re-run):
        # as root, postgres and www-data pass through (sockets under run/, postgres.log) and
        # list nothing.
        for directory in (run.data_dir, layout.run_dir, layout.log_dir):
            directory.chmod(0o711 if os.geteuid() == 0 else 0o700)
        # Logs written before the umask (appended to, so they keep their mode) close too.
        for log in layout.log_dir.iterdir():
            if log.is_file():
                log.chmod(log.stat().st_mode & 0o700)
        run.state.mode, run.state.replicas = "local", run.replicas
        run.state.ha, run.state.auto_unseal = run.ha, run.auto_unseal
        run.save_state()
        run.require_bao()

    def _vault(self) -> None:
        run = self.run
        make_certs(run.root, run.data_dir, run.tls)
        local_vault.start_nodes(run)
        local_vault.init_vault(run)
        local_vault.cluster(run).join()
        self._record_tls()

    def _record_tls(self) -> None:
        """Once Vault runs with it, the data dir keeps the choice, and .env says how to reach
        Vault over TLS (absolute paths: the backend runs from be_flask/)."""
        run = self.run
        run.state.tls = run.tls.mode
        run.save_state()
        if not run.tls.on:
            return
        addr = local_vault.app_vault_addr(run)
        env_upsert(run.layout.env_file, {"VAULT_ADDR": addr, **run.tls.client_env()})
        client = ", VAULT_CLIENT_CERT/KEY" if run.tls.mode == "mtls" else ""
        say(f".env: VAULT_ADDR={addr}, VAULT_CACERT{client} set")

    def _database(self) -> dict[str, str]:
        """PostgreSQL with dynamic credentials, else SQLite (once on SQLite, stay there)."""
        run, layout = self.run, self.run.layout
        bin_dir = database.find_postgres()
        on_sqlite = layout.sqlite_db.exists() and not (layout.pg_data / "PG_VERSION").exists()
        if bin_dir is not None and not (run.options.sqlite or on_sqlite):
            postgres = Postgres(run, bin_dir)
            database.sync_location(run)
            postgres.start()
            database.ensure_database(run, postgres)
            database.ensure_dynamic_credentials(run, postgres)
            migrations.local_migrations(run)
            return {"VAULT_DB_MODE": "dynamic"}
        say(
            "!!! No PostgreSQL (binaries not found, or --sqlite): using SQLite at "
            f"{layout.sqlite_db}."
        )
        say(
            "!!! Install PostgreSQL for the real topology; the app's database secret is "
            "then unused."
        )
        return {"DATABASE_URL": f"sqlite:///{layout.sqlite_db}"}

    def _app(self, env: dict[str, str]) -> str:
        run, settings = self.run, self.run.settings
        env = {**env, "VAULT_ADDR": local_vault.app_vault_addr(run)}
        binary = "" if run.options.no_apache else apache.binary()
        if binary:
            https = run.tls.on
            env.update(TRUSTED_PROXIES="1", JWT_COOKIE_SECURE="true" if https else "false")
            backends.start_all(run, env)
            apache.start(run, binary)
            return (
                f"https://127.0.0.1:{settings.https_port}"
                if https
                else f"http://127.0.0.1:{settings.http_port}"
            )
        if run.replicas != 1:
            raise SetupError(f"--replicas {run.replicas} needs the Apache front (apt-get install "
                             "apache2, no --no-apache), or --replicas 1")  # fmt: skip
        # gunicorn faces the browser itself and serves the UI (fe_apache/ui_wsgi.py); no
        # client-sent X-Forwarded-For is trusted.
        env.update(TRUSTED_PROXIES="0", JWT_COOKIE_SECURE="false")
        say(f"no Apache front (apache2 not installed, or --no-apache): gunicorn serves the UI "
            f"and /api on {settings.http_port}")  # fmt: skip
        process.stop(apache.supervised(run))  # it held HTTP_PORT, which gunicorn takes now
        if run.tls.on:
            say("!!! users reach the app over plain HTTP (TLS for users needs the Apache front); "
                "Vault is on TLS")  # fmt: skip
        backends.stop_above(run, 1)
        bind = f"127.0.0.1:{settings.http_port}"
        backends.launch(run, 1, bind, "ui_wsgi:create_app_with_ui()", env)
        backends.wait(run, 1, bind)
        return f"http://127.0.0.1:{settings.http_port}"

    def up(self) -> None:
        run, layout = self.run, self.run.layout
        self._prepare()
        self._vault()
        env = self._database()
        env.update(redis.choose(run).env())
        url = self._app(env)
        run.state.front_url = url
        run.save_state()

        def tail() -> None:
            log = layout.log_dir / "backend-1.log"
            if log.exists():
                sys.stdout.write(
                    "\n".join(log.read_text(errors="replace").splitlines()[-20:]) + "\n"
                )

        wait_until_ready(run, url, f"see {layout.log_dir}, fix, and re-run ./setup.sh", tail)
        local_vault.cluster(run).wait_for_voters(local_vault.read_token(layout.operator_token_file))
        files = (layout.keys_file, layout.operator_token_file)
        say(summary(run, url, run.nodes[0].addr, files, str(layout.log_dir)))

    def stop(self) -> None:
        run = self.run
        if run.options.stop_vault_only:
            local_vault.stop_nodes(run)
            say("Vault stopped; the app keeps serving from its cache. Back: ./setup.sh (starts "
                "and unseals it)")  # fmt: skip
            return
        backends.stop_all(run, apache.supervised(run))
        process.stop(redis.supervised(run))
        bin_dir = database.find_postgres()
        if bin_dir is not None:
            Postgres(run, bin_dir).stop()
        local_vault.stop_nodes(run)
        process.stop(Supervised(run.layout.run_dir / "unsealer.pid", "server", "the unsealer"))
        say(f"stopped (data kept in {run.data_dir})")

    def restart_app(self) -> None:
        """Gapless when everything runs (reload.py); else stop and start the app."""
        if (self.run.layout.pg_data / "PG_VERSION").exists():
            # New code may bring a migration, and the backend never migrates with its own
            # login; a Vault that cannot give the migration login (sealed) leaves the reload
            # to go on: the backend says so in /api/ready if its schema is behind.
            try:
                migrations.local_migrations(self.run)
            except SetupError as failure:
                say(f"!!! not migrated: {failure}")
        if reload_app(self.run):
            wait_until_ready(self.run, self.run.state.front_url, "see the backend logs")
            return
        backends.stop_all(self.run, apache.supervised(self.run))
        self.up()

    def reset(self) -> None:
        run = self.run
        if not run.options.yes:
            if not sys.stdin.isatty():
                raise SetupError(f"--reset deletes {run.data_dir}: add --yes to confirm")
            answer = input(
                f"Delete {run.data_dir} (unseal keys, secrets, database)? Type 'reset': "
            )
            if answer != "reset":
                raise SetupError("not confirmed: nothing deleted")
        self.stop()
        subprocess.run(["rm", "-rf", str(run.data_dir)], check=True)
        say(f"deleted {run.data_dir}: ./setup.sh starts from scratch")

    def status(self) -> None:
        status(self.run)

    def backup(self) -> None:
        local_backup(self.run)

    def restore(self) -> None:
        local_restore(self.run, self.up)
