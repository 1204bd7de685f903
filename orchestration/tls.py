"""TLS of a run (--tls, --mtls, --no-tls): the files, who trusts what, certificate expiry."""

from __future__ import annotations

import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from orchestration.console import SetupError, say
from orchestration.scripts import run_indented


@dataclass(frozen=True)
class Tls:
    """mode "off", "tls" (Vault's listener and the front over TLS) or "mtls" (and Vault asks
    for the backend's client certificate); dir holds the project's CA and certificates."""

    mode: str
    dir: Path

    @property
    def on(self) -> bool:
        return self.mode != "off"

    @property
    def scheme(self) -> str:
        return "https" if self.on else "http"

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def client_cert(self) -> Path:
        return self.dir / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.dir / "client-key.pem"

    def client_env(self) -> dict[str, str]:
        """What every bao call and script of this run needs to reach Vault over TLS."""
        if not self.on:
            return {}
        env = {"VAULT_CACERT": str(self.ca)}
        if self.mode == "mtls":
            env.update(
                VAULT_CLIENT_CERT=str(self.client_cert), VAULT_CLIENT_KEY=str(self.client_key)
            )
        return env

    def context(self) -> ssl.SSLContext | None:
        """For urllib calls to our Vault and front: the project's CA (and client cert)."""
        if not self.on:
            return None
        context = ssl.create_default_context(cafile=str(self.ca) if self.ca.exists() else None)
        if self.mode == "mtls" and self.client_cert.exists():
            context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context


def make_certs(root: Path, project_dir: Path, tls: Tls) -> None:
    """The CA and certificates (vault/scripts/make-certs.sh keeps those present)."""
    if not tls.on:
        return
    say(f"certificates in {tls.dir} (vault/scripts/make-certs.sh)")
    env = {"PROJECT_DIR": str(project_dir), "VAULT_TLS_DIR": str(tls.dir)}
    run_indented([str(root / "vault" / "scripts" / "make-certs.sh")], env,
                 "make-certs.sh failed (its message is above)")  # fmt: skip


def _openssl(cert: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = ["openssl", "x509", "-noout", *args, "-in", str(cert)]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def cert_state(tls: Tls, warn_days_text: str, renew_hint: str) -> str:
    """When Vault's server certificate expires; a loud line within the warning days."""
    cert = tls.dir / "vault.pem"
    if not tls.on:
        return "none (plain HTTP; ./setup.sh --tls)"
    if not cert.exists() or cert.stat().st_size == 0:
        return f"missing ({cert})"
    if not warn_days_text.isdigit():
        raise SetupError(f"CERT_WARN_DAYS must be a number of days, got '{warn_days_text}'")
    end = _openssl(cert, "-enddate").stdout.strip().split("=", 1)[-1]
    if _openssl(cert, "-checkend", "0").returncode != 0:
        return f"!!! EXPIRED on {end} ({cert}): {renew_hint}"
    if _openssl(cert, "-checkend", str(int(warn_days_text) * 86400)).returncode != 0:
        return f"!!! WARNING: expires within {warn_days_text} days, on {end} ({cert}): {renew_hint}"
    return f"valid until {end} ({cert})"
