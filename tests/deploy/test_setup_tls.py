"""`./setup.sh --local --mtls`: Vault over mutual TLS, users over HTTPS with HSTS, --status
reporting the certificate, and --backup whose printed pg_restore command brings a row back."""

from __future__ import annotations

import re
import stat
import subprocess
from pathlib import Path

import hvac
import pytest
import requests

from tests.deploy.test_setup_local import (  # noqa: F401  (local_stack is a fixture)
    README,
    SETUP,
    LocalStack,
    csrf,
    local_stack,
)
from tests.harness.servers import free_port
from tests.harness.tls_scan import mozilla_intermediate_issues


def tls_files(stack: LocalStack) -> Path:
    return stack.data_dir / "vault" / "tls"


def vault_over_mtls(stack: LocalStack) -> hvac.Client:
    tls = tls_files(stack)
    return hvac.Client(
        url=f"https://127.0.0.1:{stack.env['VAULT_PORT']}",
        token=stack.operator_token(),
        verify=str(tls / "ca.pem"),
        cert=(str(tls / "client.pem"), str(tls / "client-key.pem")),
    )


def https_login(url: str, ca: str, username: str, password: str) -> requests.Session:
    session = requests.Session()
    # REQUESTS_CA_BUNDLE in the environment would override session.verify (requests #3829).
    session.trust_env = False
    session.verify = ca
    response = session.post(
        f"{url}/api/auth/login", json={"username": username, "password": password}, timeout=10
    )
    assert response.status_code == 200, response.text
    return session


def status_line(stack: LocalStack, prefix: str, **env: str) -> str:
    done = subprocess.run(
        [str(SETUP), "--status"],
        env={**stack.env, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return next((line for line in done.stdout.splitlines() if line.startswith(prefix)), done.stdout)


def assert_vault_refuses_plain_http_and_anonymous_tls(stack: LocalStack) -> None:
    port = stack.env["VAULT_PORT"]
    plain = requests.get(f"http://127.0.0.1:{port}/v1/sys/health", timeout=5)
    assert plain.status_code == 400 and "HTTP request to an HTTPS server" in plain.text
    # Mutual TLS: the right CA but no client certificate is refused in the handshake.
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(
            f"https://127.0.0.1:{port}/v1/sys/health",
            verify=str(tls_files(stack) / "ca.pem"),
            timeout=5,
        )


def assert_front_is_https_with_hsts(stack: LocalStack, url: str, ca: str) -> None:
    page = requests.get(url + "/", verify=ca, timeout=10)
    assert page.status_code == 200
    assert page.headers["Strict-Transport-Security"].startswith("max-age=63072000")
    redirect = requests.get(
        f"http://127.0.0.1:{stack.env['HTTP_PORT']}/api/ready", allow_redirects=False, timeout=10
    )
    assert redirect.status_code == 301 and redirect.headers["Location"] == url + "/api/ready"
    assert "Strict-Transport-Security" not in redirect.headers
    # A client that does not trust the project's CA is refused rather than silently accepted.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(url + "/", timeout=10)


def assert_every_listener_meets_mozilla_intermediate(stack: LocalStack) -> None:
    """sslyze, as an auditor runs it, finds nothing below Mozilla's intermediate profile on
    the users' https front or on Vault's listener (entered with the client certificate)."""
    tls = tls_files(stack)
    assert mozilla_intermediate_issues(int(stack.env["HTTPS_PORT"]), tls / "ca.pem") == {}
    client = (tls / "client.pem", tls / "client-key.pem")
    vault_port = int(stack.env["VAULT_PORT"])
    assert mozilla_intermediate_issues(vault_port, tls / "ca.pem", client) == {}


def test_setup_local_mtls_https_status_and_backup(local_stack: LocalStack) -> None:  # noqa: F811
    stack = local_stack
    # Certificates that expire within the 30 days --status warns about (the CA lives 5x longer).
    stack.env.update(HTTPS_PORT=str(free_port()), CERT_DAYS="20")
    output = stack.up("--mtls")
    url = f"https://127.0.0.1:{stack.env['HTTPS_PORT']}"
    ca = str(tls_files(stack) / "ca.pem")
    assert f"Ready: {url}" in output

    env_file = (stack.data_dir / ".env").read_text()
    assert f"VAULT_ADDR=https://127.0.0.1:{stack.env['VAULT_PORT']}\n" in env_file
    assert f"VAULT_CACERT={ca}\n" in env_file
    client_key = tls_files(stack) / "client-key.pem"
    assert f"VAULT_CLIENT_KEY={client_key}\n" in env_file
    assert stat.S_IMODE(client_key.stat().st_mode) == 0o600
    assert_vault_refuses_plain_http_and_anonymous_tls(stack)
    assert_front_is_https_with_hsts(stack, url, ca)
    assert_every_listener_meets_mozilla_intermediate(stack)

    # The backend reads its secrets from Vault over mutual TLS: the admin password works.
    password = vault_over_mtls(stack).secrets.kv.v2.read_secret_version(
        path="app/flask", mount_point="secret", raise_on_deleted_version=True
    )["data"]["data"]["admin_password"]
    admin = https_login(url, ca, "admin", password)
    assert all(cookie.secure for cookie in admin.cookies)
    assert admin.get(f"{url}/api/admin/vault/status", timeout=10).json()["source"] == "vault"
    created = admin.post(
        f"{url}/api/users",
        json={"username": "dora", "password": "dora-correct-horse-42", "role": "user"},
        headers=csrf(admin),
        timeout=10,
    )
    assert created.status_code == 201, created.text

    assert status_line(stack, "seal type:") == "seal type:  shamir"
    cert = status_line(stack, "vault TLS:")
    warning = "vault TLS:  mtls; certificate: !!! WARNING: expires within 30 days"
    assert cert.startswith(warning), cert
    cert = status_line(stack, "vault TLS:", CERT_WARN_DAYS="10")
    assert re.match(r"vault TLS:  mtls; certificate: valid until .* GMT", cert), cert
    assert "HTTP 200 from " + url in status_line(stack, "app ready:")
    # A running listener cannot change its TLS: the switch is refused with the way out.
    switch = stack.run("--local", "--no-tls")
    assert switch.returncode == 1 and "has TLS 'mtls'" in switch.stderr, switch.stderr
    assert "./setup.sh --stop first" in switch.stderr

    assert_backup_restores_a_deleted_row(stack, admin, url, int(created.json()["user"]["id"]))


def assert_backup_restores_a_deleted_row(
    stack: LocalStack, admin: requests.Session, url: str, user_id: int
) -> None:
    refused = stack.run("--backup", "/proc/no-such-dir")
    assert refused.returncode != 0 and "cannot create backup directory" in refused.stderr
    done = stack.run("--backup")
    assert done.returncode == 0, done.stdout + done.stderr
    where = re.search(r"^backup written to (\S+)$", done.stdout, re.M)
    assert where, done.stdout
    backup = Path(where.group(1))
    assert backup.parent == stack.data_dir / "backups"
    for name in ("app-db.dump", "vault.snap"):
        assert stat.S_IMODE((backup / name).stat().st_mode) == 0o600
    restore = re.search(r"^  restore: (.*pg_restore .*)$", done.stdout, re.M)
    assert restore, done.stdout
    # The README documents the same command.
    assert "pg_restore --clean --if-exists --single-transaction" in README

    deleted = admin.delete(f"{url}/api/users/{user_id}", headers=csrf(admin), timeout=10)
    assert deleted.status_code == 204, deleted.text
    names = [user["username"] for user in admin.get(f"{url}/api/users", timeout=10).json()["users"]]
    assert "dora" not in names
    restored = subprocess.run(
        ["bash", "-c", restore.group(1)], capture_output=True, text=True, timeout=60, check=False
    )
    assert restored.returncode == 0, restored.stderr
    names = [user["username"] for user in admin.get(f"{url}/api/users", timeout=10).json()["users"]]
    assert "dora" in names
    https_login(url, str(tls_files(stack) / "ca.pem"), "dora", "dora-correct-horse-42")
    # The same backup in one command, over mutual TLS to Vault: it ends every session.
    done = stack.run("--restore", str(backup), "--yes", timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert admin.get(f"{url}/api/users", timeout=10).status_code == 401
    https_login(url, str(tls_files(stack) / "ca.pem"), "dora", "dora-correct-horse-42")
