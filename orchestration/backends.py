"""The backend replicas: each its own gunicorn (master and workers) with a pid file, log,
socket, metrics dir and control socket of its own, so one can die or restart alone."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from orchestration import process
from orchestration.console import SetupError, say
from orchestration.context import Run
from orchestration.http_checks import socket_health, socket_listens
from orchestration.process import Supervised

# local: production rules for secrets (never the public development defaults, also while
# Vault is sealed); cookies Secure only when users come over https (--tls).
BACKEND_ENV = {"APP_ENV": "local"}


def shared_with_apache(directory: Path, mode: int) -> None:
    """Private to us, opened to Apache's workers (group www-data, mode) when we run as root:
    one chmod to the final mode, so a re-run never closes it to Apache even for a moment."""
    directory.mkdir(mode=0o700, exist_ok=True)
    if (
        os.geteuid() == 0
        and subprocess.run(["id", "www-data"], capture_output=True).returncode == 0
    ):
        shutil.chown(directory, group="www-data")
        directory.chmod(mode)
    else:
        directory.chmod(0o700)


class Replica:
    def __init__(self, run: Run, index: int) -> None:
        run_dir = run.layout.run_dir
        self.run, self.index = run, index
        self.pid_file = run_dir / f"backend-{index}.pid"
        self.socket = run_dir / "backend" / f"backend-{index}.sock"
        self.log = run.layout.log_dir / f"backend-{index}.log"
        self.bind_file = run_dir / f"backend-{index}.bind"
        self.supervised = Supervised(self.pid_file, "gunicorn", f"backend replica {index}")

    def status_line(self) -> str:
        where = "no socket"
        if self.socket.is_socket():
            where = f"{self.socket}, /api/health HTTP {socket_health(self.socket)}"
        return f"backend-{self.index}:  {process.state_line(self.pid_file, 'gunicorn')}, {where}"


def known_replicas(run: Run) -> list[int]:
    """Indexes of the replicas that have a pid file, running or not."""
    found = (re.fullmatch(r"backend-(\d+)\.pid", p.name) for p in run.layout.run_dir.glob("*.pid"))
    return sorted(int(match.group(1)) for match in found if match)


def stop_above(run: Run, count: int) -> None:
    """Replicas above the count asked for: stopped, not left behind."""
    for index in known_replicas(run):
        if index > count:
            process.stop(Replica(run, index).supervised)


def backend_env(run: Run, index: int, extra: dict[str, str]) -> dict[str, str]:
    """How to reach Vault (.env as init-vault.sh wrote it, this run's address winning)."""
    from orchestration.vault_scripts import lib

    env = dict(os.environ)
    text = run.layout.env_file.read_text(encoding="utf-8")
    env.update({key: line.split("=", 1)[1] for key, line in lib.parse_env_lines(text) if key})
    run_dir = run.layout.run_dir
    metrics = run_dir / f"metrics-{index}"
    shutil.rmtree(metrics, ignore_errors=True)
    metrics.mkdir(parents=True)
    env.update(extra)
    env.update(
        # Re-read at each login: rotate-secret-id.sh reaches the running backend.
        VAULT_SECRET_ID_FILE=str(run.layout.secrets_dir / "approle" / "secret_id"),
        UI_DIR=str(run.root / "fe_apache" / "html"),
        PROMETHEUS_MULTIPROC_DIR=str(metrics),
        GUNICORN_CONTROL_SOCKET=str(run_dir / f"gunicorn-{index}.ctl"),
        **BACKEND_ENV,
    )
    return env


def launch(run: Run, index: int, bind: str, app_spec: str, env: dict[str, str]) -> None:
    replica = Replica(run, index)
    if process.alive(replica.pid_file, "gunicorn"):
        recorded = replica.bind_file.read_text().strip() if replica.bind_file.exists() else ""
        if recorded == bind:
            say(f"backend replica {index}: already running on {bind}")
            return
        # Apache added or dropped since it started (--no-apache): it listens elsewhere now.
        process.stop(Supervised(replica.pid_file, "gunicorn",
                                f"backend replica {index} (moving to {bind})"))  # fmt: skip
    if bind.startswith("unix:"):
        shared_with_apache(run.layout.run_dir / "backend", 0o750)
        Path(bind[5:]).unlink(missing_ok=True)
    else:
        process.require_free_port(int(bind.rsplit(":", 1)[1]), "HTTP_PORT")
    say(f"starting backend replica {index} (gunicorn) on {bind}")
    argv = [str(run.settings.venv / "bin" / "gunicorn"), "--bind", bind,
            "--pythonpath", str(run.root / "fe_apache"), app_spec]  # fmt: skip
    process.start_detached(replica.pid_file, replica.log, argv,
                           backend_env(run, index, env), cwd=run.root / "be_flask")  # fmt: skip
    replica.bind_file.write_text(f"{bind}\n", encoding="utf-8")


def wait(run: Run, index: int, bind: str) -> None:
    replica = Replica(run, index)
    if bind.startswith("unix:"):
        deadline = time.monotonic() + 30
        while not socket_listens(Path(bind[5:])):
            if time.monotonic() > deadline:
                raise SetupError(f"the backend did not listen on {bind[5:]} within 30 s: "
                                 f"see {replica.log}")  # fmt: skip
            time.sleep(0.1)
    else:
        process.wait_for_port(int(bind.rsplit(":", 1)[1]), "the backend", run.layout.log_dir)
    say(f"backend replica {index}: ok")


def start_all(run: Run, env: dict[str, str]) -> None:
    """All launched first, then waited for: the replicas boot side by side."""
    stop_above(run, run.replicas)
    binds = {i: f"unix:{Replica(run, i).socket}" for i in range(1, run.replicas + 1)}
    for index, bind in binds.items():
        launch(run, index, bind, "src.be:create_app()", env)
    for index, bind in binds.items():
        wait(run, index, bind)


def stop_all(run: Run, *also: Supervised) -> None:
    """The front and every replica at once (each drains for up to 20 s in parallel);
    backend.pid is where a single backend ran before replicas existed."""
    run_dir = run.layout.run_dir
    replicas = [Replica(run, index).supervised for index in known_replicas(run)]
    process.stop(*also, Supervised(run_dir / "backend.pid", "gunicorn", "backend (gunicorn)"),
                 *replicas)  # fmt: skip
    for leftover in [*run_dir.glob("metrics*"), *run_dir.glob("gunicorn*.ctl")]:
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
