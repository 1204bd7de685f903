"""Config properties read through the Vault client; the Flask extension registers the client."""

from __future__ import annotations

import pytest
from flask import Flask

from src.config import get_config
from src.vault_client import Vault, VaultClient, get_vault_client, reset_vault_client
from tests.harness.openbao import OpenBao

from .vault_support import SecretWatch, secret_watch, settings_for

__all__ = ["secret_watch"]


@pytest.fixture
def vault_env(openbao: OpenBao, monkeypatch: pytest.MonkeyPatch) -> OpenBao:
    """The process environment of a backend deployed against the shared server."""
    for name, value in {
        "VAULT_ADDR": openbao.addr,
        "VAULT_ROLE_ID": openbao.role_id,
        "VAULT_SECRET_ID": openbao.secret_id,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("VAULT_SECRET_ID_FILE", raising=False)
    reset_vault_client()
    yield openbao
    reset_vault_client()


def test_config_properties_come_from_vault(vault_env: OpenBao, secret_watch: SecretWatch) -> None:
    secret_watch.add_server(vault_env)
    config = get_config()
    assert config.vault_client is get_vault_client()
    stored = vault_env.client(vault_env.root_token).secrets.kv.v2.read_secret_version(
        path="app/flask", mount_point="secret", raise_on_deleted_version=True
    )["data"]["data"]
    # Compared with what Vault holds: the development fallback would agree with itself.
    assert config.SECRET_KEY == config.JWT_SECRET_KEY == stored["jwt_secret"]
    assert config.vault_client.source == "vault"
    assert config.vault_client.get_database_config()["url"] == config.SQLALCHEMY_DATABASE_URI
    assert config.SQLALCHEMY_DATABASE_URI.startswith("postgresql+psycopg://")


def test_extension_stores_the_given_or_process_client(
    openbao: OpenBao, secret_watch: SecretWatch, vault_env: OpenBao
) -> None:
    given = secret_watch.client(settings_for(openbao))
    app = Flask(__name__)
    app.config["VAULT_CLIENT"] = given
    Vault().init_app(app)
    assert app.extensions["vault"] is given
    other = Flask(__name__)
    extension = Vault(other)
    assert other.extensions["vault"] is get_vault_client()
    with other.app_context():
        assert extension.client is get_vault_client()


def test_app_env_is_read_as_the_vault_client_reads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", " Production ")
    config = get_config(VaultClient.from_env())
    assert config.APP_ENV == "production" and not config.vault_client.settings.is_development
