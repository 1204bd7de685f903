"""Run the project's fe_apache/httpd.conf with Debian's real apache2 on a free loopback port."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.servers import free_port, missing_server, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
FE_DIR = ROOT / "fe_apache"
APACHE_BIN = "/usr/sbin/apache2"
MODSECURITY_SO = Path("/usr/lib/apache2/modules/mod_security2.so")
CRS_RULES = Path("/usr/share/modsecurity-crs/rules")


@dataclass
class Apache:
    """A foreground apache2 serving the UI and balancing /api over `backend_url` and any
    `more_backends` (http://HOST:PORT or unix:/PATH), listed by fe_apache/balancer-members.sh."""

    run_dir: Path
    backend_url: str
    more_backends: list[str] = field(default_factory=list)
    html_dir: Path = FE_DIR / "html"
    modsecurity: bool = False
    # FE_TRUSTED_PROXIES: the ingress/load balancer addresses whose X-Forwarded-For is believed.
    trusted_proxies: str = ""
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        return {
            **os.environ,
            "FE_LISTEN": f"127.0.0.1:{self.port}",
            "FE_BALANCER_MEMBERS": str(self.run_dir / "balancer-members.conf"),
            "FE_HTML_DIR": str(self.html_dir),
            "FE_CONF_DIR": str(FE_DIR),
            "FE_RUN_DIR": str(self.run_dir),
            "FE_SERVER_NAME": "localhost",
            "FE_TRUSTED_PROXIES": self.trusted_proxies,
        }

    def command(self) -> list[str]:
        cmd = [APACHE_BIN, "-f", str(FE_DIR / "httpd.conf"), "-d", str(self.run_dir)]
        cmd += ["-D", "FOREGROUND"]
        cmd += ["-D", "TRUSTED_PROXIES"] if self.trusted_proxies else []
        return cmd + (["-D", "MODSECURITY"] if self.modsecurity else [])

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # Workers run as www-data, which may not traverse the checkout (CI clones anywhere).
        served = self.run_dir / "html"
        shutil.copytree(self.html_dir, served, dirs_exist_ok=True)
        self.html_dir = served
        self.write_members()
        with (self.run_dir / "apache.log").open("ab") as log:
            self.process = subprocess.Popen(
                self.command(), env=self.environment(), stdout=log, stderr=subprocess.STDOUT
            )
        try:
            wait_for_port(self.port, timeout=15)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"apache2 did not start: {self.log()[-2000:]}") from None

    def write_members(self) -> None:
        members = subprocess.run(
            [str(FE_DIR / "balancer-members.sh"), self.backend_url, *self.more_backends],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        (self.run_dir / "balancer-members.conf").write_text(members)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            # SIGTERM is apache2's "stop now"; its children follow the parent.
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    def log(self) -> str:
        path = self.run_dir / "apache.log"
        return path.read_text(errors="replace") if path.exists() else ""


def require_apache(modsecurity: bool = False) -> None:
    """Skip (or fail under CI) when the Debian apache2 or ModSecurity is not installed."""
    if not Path(APACHE_BIN).exists():
        missing_server("Debian apache2 not installed (apt-get install apache2)")
    if modsecurity and not (MODSECURITY_SO.exists() and CRS_RULES.is_dir()):
        missing_server("ModSecurity/CRS not installed (libapache2-mod-security2 modsecurity-crs)")


def writable_run_dir() -> Path:
    """A run dir apache2's children can write to after dropping root to www-data."""
    run_dir = Path(tempfile.mkdtemp(prefix="fe-apache-"))
    run_dir.chmod(0o1777)  # sticky, like /tmp: pytest's own tmp_path is 0700 root
    return run_dir


def running_apache(
    backend_url: str,
    modsecurity: bool = False,
    more_backends: tuple[str, ...] = (),
    trusted_proxies: str = "",
) -> Iterator[Apache]:
    """A started front for `backend_url` (and any more balancer members); stopped and its
    run dir removed afterwards."""
    require_apache(modsecurity)
    apache = Apache(
        run_dir=writable_run_dir(),
        backend_url=backend_url,
        more_backends=list(more_backends),
        trusted_proxies=trusted_proxies,
    )
    apache.modsecurity = modsecurity
    apache.start()
    try:
        yield apache
    finally:
        apache.stop()
        shutil.rmtree(apache.run_dir, ignore_errors=True)
