"""The Vault client against a real OpenBao set up by init-vault.sh (the shared server)."""

from __future__ import annotations

import threading
import time
import uuid

import hvac
import psycopg
import pytest
from sqlalchemy import create_engine, text

from src.vault_client import (
    PermissionDeniedError,
    SecretIdWrappingError,
    SecretNotFoundError,
    VaultClientError,
)
from tests.harness.openbao import OpenBao
from tests.harness.postgres import PostgresCluster

from .vault_support import FAST, SecretWatch, audit_paths, secret_watch, settings_for

__all__ = ["secret_watch"]  # the fixture, imported for pytest

pytestmark = pytest.mark.timeout(60)


def kv_read(server: OpenBao, path: str) -> dict:
    root = server.client(server.root_token)
    secret = root.secrets.kv.v2.read_secret_version(
        path=path, mount_point="secret", raise_on_deleted_version=True
    )
    return secret["data"]["data"]


def kv_write(server: OpenBao, path: str, data: dict) -> None:
    server.client(server.root_token).secrets.kv.v2.create_or_update_secret(
        path=path, secret=data, mount_point="secret"
    )


def test_approle_reads_what_init_vault_wrote(openbao: OpenBao, secret_watch: SecretWatch) -> None:
    secret_watch.add_server(openbao)
    client = secret_watch.client(settings_for(openbao))
    assert client.get_app_secrets() == kv_read(openbao, "app/flask")
    database = client.get_database_config()
    stored = kv_read(openbao, "database/postgres")
    assert {k: str(database[k]) for k in stored} == {k: str(v) for k, v in stored.items()}
    assert database["url"].startswith("postgresql+psycopg://")
    assert client.source == "vault" and client.is_available()
    status = client.status()
    assert status["authenticated"] and status["paths"]["app/flask"]["source"] == "vault"
    assert status["paths"]["app/flask"]["version"] >= 1
    assert status["token"]["ttl_left"] > 3000 and status["token"]["renewable"]
    text_of_status = str(status)
    assert not [v for v in secret_watch.values if v in text_of_status], "status() leaks"


def test_database_url_connects_to_postgres(
    dev_openbao: OpenBao, postgres: PostgresCluster, secret_watch: SecretWatch
) -> None:
    # A password full of URL syntax proves URL.create escapes it.
    password = "p@ss:/w%rd?#" + uuid.uuid4().hex
    user, database = f"app_{uuid.uuid4().hex[:8]}", f"appdb_{uuid.uuid4().hex[:8]}"
    postgres.create_role(user, password)
    postgres.create_database(database, owner=user)
    secret = {
        "host": postgres.host,
        "port": str(postgres.port),
        "database": database,
        "username": user,
        "password": password,
    }
    kv_write(dev_openbao, "database/postgres", secret)
    secret_watch.add_server(dev_openbao)
    client = secret_watch.client(settings_for(dev_openbao))
    engine = create_engine(client.get_database_config()["url"])
    try:
        with engine.connect() as conn:
            assert conn.execute(text("select current_user")).scalar() == user
    finally:
        engine.dispose()
    with pytest.raises(psycopg.OperationalError):  # the server really checks the password
        psycopg.connect(postgres.dsn(user, "wrong", database)).close()


def test_200_threads_at_start_make_one_login_and_one_read_per_path(
    openbao: OpenBao, secret_watch: SecretWatch
) -> None:
    secret_watch.add_server(openbao)
    client = secret_watch.client(settings_for(openbao))
    mark = len(openbao.audit_entries())
    barrier = threading.Barrier(200)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        barrier.wait()
        try:
            if index % 2:
                client.get_app_secrets()
            else:
                client.get_database_config()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive(), "a worker is still running after 30 s"
    assert errors == []
    paths = audit_paths(openbao, since=mark)
    assert paths["auth/approle/login"] == 1
    assert paths["secret/data/app/flask"] == 1
    assert paths["secret/data/database/postgres"] == 1


def test_kv_change_visible_after_ttl_or_at_once_after_invalidate(
    openbao: OpenBao, secret_watch: SecretWatch
) -> None:
    # app-policy reads exactly app/flask and database/postgres: change app/flask (an extra key
    # beside the real ones) and put it back, so the shared server's other tests keep working.
    path = "app/flask"
    root = openbao.client(openbao.root_token).secrets.kv.v2
    original = root.read_secret_version(path=path, raise_on_deleted_version=True)["data"]
    base, start = original["data"], original["metadata"]["version"]
    probe = f"probe-{uuid.uuid4().hex[:8]}"
    try:
        kv_write(openbao, path, {**base, probe: "one"})
        client = secret_watch.client(settings_for(openbao, cache_ttl=1.0))
        assert client.read_secret(path)[probe] == "one"
        kv_write(openbao, path, {**base, probe: "two"})
        assert client.read_secret(path)[probe] == "one", "served from cache within the TTL"
        client.invalidate_cache(path)
        assert client.read_secret(path)[probe] == "two"
        kv_write(openbao, path, {**base, probe: "three"})
        assert client.status()["paths"][path]["version"] == start + 2
        deadline_reads = 0
        while client.read_secret(path)[probe] != "three":
            deadline_reads += 1
            assert deadline_reads < 400, "change not visible after the cache TTL"
            threading.Event().wait(0.01)
        assert client.status()["paths"][path]["version"] == start + 3
        # Any other path, present or not, is outside the policy.
        with pytest.raises(PermissionDeniedError):
            client.read_secret("app/never-written")
    finally:
        kv_write(openbao, path, base)


def test_cache_ttl_zero_reads_vault_every_time(openbao: OpenBao, secret_watch: SecretWatch) -> None:
    client = secret_watch.client(settings_for(openbao, cache_ttl=0))
    client.get_app_secrets()
    mark = len(openbao.audit_entries())
    for _ in range(5):
        client.get_app_secrets()
    assert audit_paths(openbao, since=mark)["secret/data/app/flask"] == 5


def test_revoked_token_means_a_new_login(openbao: OpenBao, secret_watch: SecretWatch) -> None:
    client = secret_watch.client(settings_for(openbao))
    client.get_app_secrets()
    accessor = client.status()["token"]["accessor"]
    openbao.client(openbao.root_token).auth.token.revoke_accessor(accessor)
    client.invalidate_cache()
    assert client.get_app_secrets() == kv_read(openbao, "app/flask")
    status = client.status()
    assert status["logins"] == 2 and status["token"]["accessor"] != accessor
    assert status["source"] == "vault"


def test_second_node_serves_when_the_first_is_down(
    openbao: OpenBao, secret_watch: SecretWatch
) -> None:
    from tests.harness.servers import free_port

    closed = f"http://127.0.0.1:{free_port()}"
    client = secret_watch.client(settings_for(openbao, addresses=(closed, openbao.addr)))
    assert client.get_app_secrets() == kv_read(openbao, "app/flask")
    assert client.status()["current_address"] == openbao.addr
    sent = client.adapter.requests_sent
    client.invalidate_cache()
    client.get_app_secrets()
    assert client.adapter.requests_sent == sent + 1, "the last good node is tried first"


def wrapped_secret_id(server: OpenBao) -> str:
    root = server.client(server.root_token)
    response = root.write_data("auth/approle/role/flask-app/secret-id", wrap_ttl="120s")
    return response["wrap_info"]["token"]


def test_wrapped_secret_id_is_unwrapped_once_and_reused(
    openbao: OpenBao, secret_watch: SecretWatch, tmp_path
) -> None:
    token = wrapped_secret_id(openbao)
    secret_watch.add(token)
    secret_file = tmp_path / "secret_id"
    secret_file.write_text(token + "\n")
    settings = settings_for(openbao, secret_id=None, secret_id_file=str(secret_file))
    client = secret_watch.client(settings)
    assert client.get_app_secrets() == kv_read(openbao, "app/flask")
    secret_watch.add(client.approle._unwrapped[1] if client.approle._unwrapped else "")
    # A re-login must not unwrap again (single use): the unwrapped secret ID is remembered.
    client.tokens.token_rejected(client.tokens.state.generation)
    client.invalidate_cache()
    assert client.get_app_secrets() == kv_read(openbao, "app/flask")
    assert client.status()["logins"] == 2


def test_wrapping_token_from_another_path_is_refused(
    openbao: OpenBao, secret_watch: SecretWatch, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    root = openbao.client(openbao.root_token)
    forged = root.sys.wrap(payload={"secret_id": str(uuid.uuid4())}, ttl="120s")
    token = forged["wrap_info"]["token"]
    secret_watch.add(token)
    secret_file = tmp_path / "secret_id"
    secret_file.write_text(token)
    client = secret_watch.client(
        settings_for(openbao, secret_id=None, secret_id_file=str(secret_file))
    )
    with pytest.raises(SecretIdWrappingError):
        client.approle.secret_id()
    assert not client.is_available()
    assert "ALERT" in caplog.text and "sys/wrapping/wrap" in caplog.text
    # The token was not unwrapped: it is still usable by whoever made it.
    assert hvac.Client(url=openbao.addr, token=token).sys.unwrap()["data"]["secret_id"]


def test_policy_denial_is_an_error_not_a_login_loop(
    openbao: OpenBao, secret_watch: SecretWatch
) -> None:
    client = secret_watch.client(settings_for(openbao))
    client.get_app_secrets()
    for _ in range(3):
        with pytest.raises(PermissionDeniedError):
            client.read_secret("admin/not-for-the-app")
    assert client.status()["logins"] == 1
    assert client.get_app_secrets() == kv_read(openbao, "app/flask")


def test_sealed_first_node_is_skipped(
    openbao: OpenBao, dev_openbao: OpenBao, secret_watch: SecretWatch
) -> None:
    dev_openbao.client(dev_openbao.root_token).sys.seal()  # answers 503 from now on
    client = secret_watch.client(settings_for(openbao, addresses=(dev_openbao.addr, openbao.addr)))
    assert client.get_app_secrets() == kv_read(openbao, "app/flask")
    assert client.status()["current_address"] == openbao.addr
    assert client.status()["outage"] is None
    # login: sealed node (503), then the good one; the KV read goes straight to the good one
    assert client.adapter.requests_sent == 3


def test_a_destroyed_version_is_never_served_stale(
    dev_openbao: OpenBao, secret_watch: SecretWatch
) -> None:
    """Once Vault said a version is destroyed (a compromised JWT key), the cached copy is gone:
    not served while the refresh runs, nor as stale-if-error when Vault goes down after."""
    secret_watch.add_server(dev_openbao)
    client = secret_watch.client(settings_for(dev_openbao, **FAST, cache_ttl=1.0))
    root = dev_openbao.client(dev_openbao.root_token)
    metadata = root.secrets.kv.v2.read_secret_metadata(path="app/flask", mount_point="secret")
    version = int(metadata["data"]["current_version"])
    path = f"app/flask?version={version}"
    assert client.read_secret_entry(path).version == version
    root.secrets.kv.v2.destroy_secret_versions(
        path="app/flask", versions=[version], mount_point="secret"
    )
    client.invalidate_cache()  # what POST /api/admin/vault/refresh does in every worker
    with pytest.raises(SecretNotFoundError):
        client.read_secret_entry(path)
    dev_openbao.stop()
    with pytest.raises(VaultClientError):
        client.read_secret_entry(path)  # within the TTL: Vault's last word was "destroyed"
    time.sleep(1.1)
    with pytest.raises(VaultClientError):
        client.read_secret_entry(path)  # past it: Vault is down, and nothing stale to serve
