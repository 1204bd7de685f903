"""Local mode's Apache front: the UI, /api balanced over the replicas' Unix sockets."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from orchestration import process
from orchestration.backends import Replica, shared_with_apache
from orchestration.console import SetupError, say
from orchestration.context import Run
from orchestration.process import Supervised

MODSECURITY_FILES = (Path("/usr/lib/apache2/modules/mod_security2.so"),
                     Path("/usr/share/modsecurity-crs/rules"))  # fmt: skip


def binary() -> str:
    for candidate in ("/usr/sbin/apache2", shutil.which("apache2")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return ""


def supervised(run: Run) -> Supervised:
    return Supervised(run.layout.run_dir / "apache.pid", "apache2", "Apache front")


def write_members(run: Run) -> None:
    """One BalancerMember per replica (fe_apache/balancer-members.sh); a running Apache whose
    members changed is restarted: the balancer's shared memory is sized at start."""
    members = run.layout.run_dir / "apache" / "balancer-members.conf"
    sockets = [f"unix:{Replica(run, i).socket}" for i in range(1, run.replicas + 1)]
    script = str(run.root / "fe_apache" / "balancer-members.sh")
    text = subprocess.run(["sh", script, *sockets], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip
    if members.exists() and members.read_text() == text:
        return
    members.write_text(text)
    if process.alive(supervised(run).pid_file, "apache2"):
        say(f"the replicas changed to {run.replicas}: restarting the Apache front")
        process.stop(supervised(run))


def html_dir(run: Run) -> Path:
    """The UI; when www-data cannot read the checkout (private to root), a copy."""
    html = run.root / "fe_apache" / "html"
    if os.geteuid() != 0:
        return html
    check = ["runuser", "-u", "www-data", "--", "test", "-r", str(html / "index.html")]
    if subprocess.run(check, capture_output=True, check=False).returncode == 0:
        return html
    copy = run.layout.run_dir / "apache" / "html"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(html, copy)
    subprocess.run(["chmod", "-R", "a+rX", str(copy)], check=True)
    say(f"www-data cannot read {html}: serving a copy from {copy}")
    return copy


def defines(run: Run) -> list[str]:
    flags = []
    if run.options.modsecurity:
        if not all(path.exists() for path in MODSECURITY_FILES):
            raise SetupError("--modsecurity needs the Debian packages libapache2-mod-security2 "
                             "and modsecurity-crs")  # fmt: skip
        flags += ["-D", "MODSECURITY"]
    if run.tls.on:
        flags += ["-D", "TLS"]
    return flags


def start(run: Run, apache: str) -> None:
    settings, run_dir = run.settings, run.layout.run_dir
    shared_with_apache(run_dir / "apache", 0o770)
    write_members(run)
    if process.alive(supervised(run).pid_file, "apache2"):
        say(f"Apache front: already running on 127.0.0.1:{settings.http_port}")
        return
    process.require_free_port(settings.http_port, "HTTP_PORT")
    if run.tls.on:
        process.require_free_port(settings.https_port, "HTTPS_PORT")
    flags = defines(run)
    html = html_dir(run)
    extras = (" with ModSecurity" if "MODSECURITY" in flags else "") + (
        f", https on 127.0.0.1:{settings.https_port}" if run.tls.on else ""
    )
    say(f"starting Apache front on 127.0.0.1:{settings.http_port}{extras}, balancing over "
        f"{run.replicas} backend replica(s)")  # fmt: skip
    env = {**os.environ,
           "FE_LISTEN": f"127.0.0.1:{settings.http_port}",
           "FE_BALANCER_MEMBERS": str(run_dir / "apache" / "balancer-members.conf"),
           "FE_HTML_DIR": str(html), "FE_CONF_DIR": str(run.root / "fe_apache"),
           "FE_RUN_DIR": str(run_dir / "apache"), "FE_SERVER_NAME": "localhost",
           "FE_TLS_LISTEN": f"127.0.0.1:{settings.https_port}",
           "FE_TLS_URL": f"https://127.0.0.1:{settings.https_port}",
           "FE_TLS_CERT": str(run.tls.dir / "front.pem"),
           "FE_TLS_KEY": str(run.tls.dir / "front-key.pem")}  # fmt: skip
    argv = [apache, "-f", str(run.root / "fe_apache" / "httpd.conf"), "-d",
            str(run_dir / "apache"), "-D", "FOREGROUND", *flags]  # fmt: skip
    process.start_detached(supervised(run).pid_file, run.layout.log_dir / "apache.log", argv, env)
    process.wait_for_port(settings.http_port, "Apache", run.layout.log_dir)
    if run.tls.on:
        process.wait_for_port(settings.https_port, "Apache (https)", run.layout.log_dir)
    say("starting Apache front: ok")
