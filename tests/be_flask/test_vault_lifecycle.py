"""Token renewal and re-login at max TTL, and secret ID rotation, against a real OpenBao."""

from __future__ import annotations

import time
from pathlib import Path

import hvac
import hvac.exceptions
import pytest

from tests.harness.openbao import OpenBao, read_env

from .vault_support import SecretWatch, audit_paths, secret_watch, settings_for

__all__ = ["secret_watch"]


def app_secrets(server: OpenBao) -> dict:
    root = server.client(server.root_token)
    return root.secrets.kv.v2.read_secret_version(
        path="app/flask", mount_point="secret", raise_on_deleted_version=True
    )["data"]["data"]


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_short_token_ttl_renews_then_logs_in_again_without_a_failed_read(
    dev_openbao: OpenBao, secret_watch: SecretWatch
) -> None:
    root = dev_openbao.client(dev_openbao.root_token)
    root.write_data(
        "auth/approle/role/flask-app",
        data={"token_policies": "app-policy", "token_ttl": "3s", "token_max_ttl": "6s"},
    )
    secret_watch.add_server(dev_openbao)
    expected = app_secrets(dev_openbao)
    client = secret_watch.client(settings_for(dev_openbao, cache_ttl=0.3))
    mark = len(dev_openbao.audit_entries())
    deadline = time.monotonic() + 16  # almost three max-TTL periods
    reads = 0
    while time.monotonic() < deadline:
        assert client.get_app_secrets() == expected
        assert client.source == "vault"
        reads += 1
        time.sleep(0.05)
    entries = dev_openbao.audit_entries()[mark:]
    paths = audit_paths(dev_openbao, since=mark)
    assert paths["auth/token/renew-self"] >= 4, paths
    assert paths["auth/approle/login"] >= 3, paths  # a re-login at each max TTL, before expiry
    assert paths["auth/approle/login"] <= 6, paths  # ...and no login storm
    failed = [e["request"]["path"] for e in entries if e["type"] == "response" and e.get("error")]
    assert failed == [], "every request the client sent succeeded"
    assert reads > 100


def test_rotated_secret_id_is_used_at_the_next_login(
    dev_openbao: OpenBao, secret_watch: SecretWatch, tmp_path: Path
) -> None:
    secret_file = tmp_path / "secret_id"
    secret_file.write_text(dev_openbao.secret_id)
    settings = settings_for(dev_openbao, secret_id=None, secret_id_file=str(secret_file))
    client = secret_watch.client(settings)
    secret_watch.add_server(dev_openbao)
    assert client.get_app_secrets() == app_secrets(dev_openbao)
    root = dev_openbao.client(dev_openbao.root_token)

    dev_openbao.run_script("rotate-secret-id.sh", check=True)
    new_secret_id = read_env(dev_openbao.workdir / ".env")["VAULT_SECRET_ID"]
    secret_watch.add(new_secret_id)
    assert new_secret_id != dev_openbao.secret_id
    secret_file.write_text(new_secret_id)
    root.auth.token.revoke_accessor(client.status()["token"]["accessor"])
    client.invalidate_cache()
    assert client.get_app_secrets() == app_secrets(dev_openbao)
    assert client.status()["logins"] == 2
    with pytest.raises(hvac.exceptions.InvalidRequest):  # the old one really is destroyed
        hvac.Client(url=dev_openbao.addr).auth.approle.login(
            role_id=dev_openbao.role_id, secret_id=dev_openbao.secret_id, use_token=False
        )

    # A wrapped rotation: the script writes a wrapping token into the file; we unwrap it.
    dev_openbao.run_script(
        "rotate-secret-id.sh",
        "--wrap-ttl",
        "5m",
        env={"VAULT_SECRET_ID_FILE": str(secret_file)},
        check=True,
    )
    wrapped = secret_file.read_text().strip()
    secret_watch.add(wrapped)
    assert wrapped != new_secret_id
    root.auth.token.revoke_accessor(client.status()["token"]["accessor"])
    client.invalidate_cache()
    assert client.get_app_secrets() == app_secrets(dev_openbao)
    assert client.status()["logins"] == 3
    secret_watch.add(client.approle._unwrapped[1] if client.approle._unwrapped else "")
