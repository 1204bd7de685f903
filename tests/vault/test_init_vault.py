"""init-vault.sh against a real OpenBao: what it sets up, the files it writes, and a re-run."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import hvac.exceptions
import pytest

from tests.harness.openbao import OpenBao, read_env
from tests.vault.conftest import SPARE_DB, assert_no_secret, generated_secrets

pytestmark = pytest.mark.timeout(120)


def kv(server: OpenBao, path: str) -> dict:
    client = server.client(server.root_token)
    return client.secrets.kv.v2.read_secret_version(path=path, raise_on_deleted_version=True)[
        "data"
    ]["data"]


def current_version(server: OpenBao, path: str) -> int:
    client = server.client(server.root_token)
    return int(client.secrets.kv.v2.read_secret_metadata(path=path)["data"]["current_version"])


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_server_is_initialized_and_unsealed(openbao: OpenBao) -> None:
    client = openbao.client()
    assert client.sys.is_initialized()
    assert not client.sys.is_sealed()


def test_secret_mount_is_kv_version_2(openbao: OpenBao) -> None:
    mounts = openbao.client(openbao.root_token).sys.list_mounted_secrets_engines()["data"]
    assert mounts["secret/"]["type"] == "kv"
    assert mounts["secret/"]["options"]["version"] == "2"


def test_role_flask_app_has_the_designed_ttls_and_policy(openbao: OpenBao) -> None:
    role = openbao.client(openbao.root_token).auth.approle.read_role("flask-app")["data"]
    assert role["token_ttl"] == 3600
    assert role["token_max_ttl"] == 4 * 3600
    assert role["token_policies"] == ["app-policy"]


def test_both_secret_paths_hold_every_key_with_strong_values(openbao: OpenBao) -> None:
    app = kv(openbao, "app/flask")
    assert set(app) == {"jwt_secret", "admin_password", "user_password", "redis_password"}
    assert re.fullmatch(r"[0-9a-f]{64}", app["jwt_secret"]), "jwt_secret is not 256 random bits"
    assert len(app["admin_password"]) >= 20
    assert len(app["user_password"]) >= 20
    assert len(app["redis_password"]) >= 40  # 256 random bits, URL-safe (a redis.conf word)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", app["redis_password"])
    assert len({app["admin_password"], app["user_password"], app["redis_password"]}) == 3
    # The app's path says where the database is, never how to log in (issue 23 item 1): the
    # bootstrap login sits where only operators read.
    db = kv(openbao, "database/postgres")
    assert db == {"host": "db", "port": "5432", "database": "appdb"}
    bootstrap = kv(openbao, "database/bootstrap")
    assert set(bootstrap) == {"username", "password"} and bootstrap["username"] == "app"
    assert len(bootstrap["password"]) >= 20


def test_written_files_are_private_and_hold_only_what_was_asked(openbao: OpenBao) -> None:
    workdir = openbao.workdir
    keys_file, env_file = workdir / "vault-keys.json", workdir / ".env"
    db_file = workdir / "secrets" / "db_password.txt"
    redis_file = workdir / "secrets" / "redis_password.txt"
    sid_file = workdir / "secrets" / "approle" / "secret_id"
    token_file = workdir / "vault-operator-token"
    for path in (keys_file, env_file, token_file):
        assert mode(path) == 0o600, f"{path.name} is {oct(mode(path))}"
    # What a container reads: in our primary group (Compose group_add), never world-readable.
    for path in (db_file, redis_file, sid_file):
        assert mode(path) == 0o640, f"{path.name} is {oct(mode(path))}"
        assert path.stat().st_gid == os.getgid()
    assert sorted(p.name for p in workdir.rglob("*")) == sorted(
        [
            ".env",
            "vault-keys.json",
            "vault-operator-token",
            "secrets",
            "db_password.txt",
            "redis_password.txt",
            "approle",
            "secret_id",
        ]
    )
    env = read_env(env_file)
    assert set(env) == {"VAULT_ADDR", "VAULT_ROLE_ID", "VAULT_SECRET_ID", "SECRETS_GID"}
    assert env["SECRETS_GID"] == str(os.getgid())
    assert sid_file.read_text().strip() == env["VAULT_SECRET_ID"]
    assert read_env(env_file)["VAULT_ADDR"] == openbao.addr
    assert db_file.read_text() == kv(openbao, "database/bootstrap")["password"]
    assert redis_file.read_text() == kv(openbao, "app/flask")["redis_password"]
    keys = openbao.keys()
    assert set(keys) == {
        "unseal_keys_b64",
        "unseal_keys_hex",
        "unseal_shares",
        "unseal_threshold",
        "root_token",
    }
    assert len(keys["unseal_keys_b64"]) == keys["unseal_shares"] == 5
    assert keys["unseal_threshold"] == 3
    assert token_file.read_text().strip() == openbao.operator_token


def test_first_run_prints_no_secret(openbao: OpenBao) -> None:
    assert openbao.init_result is not None
    output = openbao.init_result.stdout + openbao.init_result.stderr
    assert "secret/app/flask: created" in output
    assert_no_secret(output, generated_secrets(openbao))


def test_second_run_changes_no_secret_and_keeps_other_env_lines(openbao: OpenBao) -> None:
    env_file = openbao.workdir / ".env"
    env_file.write_text("# operator notes\nFLASK_DEBUG=0\n" + env_file.read_text())
    paths = ("app/flask", "database/postgres", "database/bootstrap")
    before = {path: current_version(openbao, path) for path in paths}
    keys_before = openbao.keys()

    result = openbao.run_script("init-vault.sh")

    assert result.returncode == 0, result.stderr
    assert "secret/app/flask exists: kept" in result.stdout
    assert "secret/database/postgres exists: kept" in result.stdout
    assert "secret/database/bootstrap exists: kept" in result.stdout
    # No root token in the keys file works any more: the re-run made its own and revoked it.
    assert "root token for this run: generated from the unseal keys" in result.stdout
    assert "root token: revoked" in result.stdout
    assert {path: current_version(openbao, path) for path in before} == before
    assert openbao.keys() == keys_before
    env = env_file.read_text()
    assert env.startswith("# operator notes\nFLASK_DEBUG=0\n")
    assert read_env(env_file)["VAULT_SECRET_ID"] == openbao.secret_id
    assert mode(env_file) == 0o600
    assert_no_secret(result.stdout + result.stderr, generated_secrets(openbao))


def test_two_fresh_inits_make_different_secrets_and_honour_flags(
    openbao: OpenBao, spare_openbao: OpenBao
) -> None:
    other = spare_openbao  # made with --key-shares 3 --key-threshold 2 and DB_* set
    for path in ("app/flask", "database/bootstrap"):
        mine, theirs = kv(openbao, path), kv(other, path)
        for key in ("jwt_secret", "admin_password", "user_password", "password"):
            if key in mine:
                assert mine[key] != theirs[key], f"{path} {key} repeats across inits"
    assert other.root_token != openbao.root_token
    assert not set(other.keys()["unseal_keys_b64"]) & set(openbao.keys()["unseal_keys_b64"])
    assert len(other.keys()["unseal_keys_b64"]) == 3
    assert other.client().sys.read_seal_status()["t"] == 2
    # A re-run keeps the address the operator gave the app in .env.
    env_file = other.workdir / ".env"
    env_file.write_text(env_file.read_text().replace(other.addr, "http://vault:8200"))
    assert other.run_script("init-vault.sh").returncode == 0
    assert read_env(env_file)["VAULT_ADDR"] == "http://vault:8200"
    db = kv(other, "database/postgres")
    location = {"DB_HOST": db["host"], "DB_PORT": db["port"], "DB_NAME": db["database"]}
    user = kv(other, "database/bootstrap")["username"]
    assert {**location, "DB_USER": user} == SPARE_DB


def test_dev_server_with_token_and_no_keys_file_is_configured(dev_openbao: OpenBao) -> None:
    assert dev_openbao.init_result is not None
    assert "is initialized: kept" in dev_openbao.init_result.stdout
    assert not (dev_openbao.workdir / "vault-keys.json").exists()
    assert (dev_openbao.workdir / "vault-operator-token").read_text().strip()
    token = dev_openbao.client().auth.approle.login(
        role_id=dev_openbao.role_id, secret_id=dev_openbao.secret_id
    )["auth"]["client_token"]
    client = dev_openbao.client(token)
    assert (
        "jwt_secret"
        in client.secrets.kv.v2.read_secret_version(
            path="app/flask", raise_on_deleted_version=True
        )["data"]["data"]
    )
    assert dev_openbao.audit_entries(), "dev server with -config wrote no audit log"


def test_role_flags_bind_secret_ids_to_cidrs_and_limits(dev_openbao: OpenBao) -> None:
    flags = ("--cidr", "10.0.0.0/8", "--secret-id-num-uses", "1", "--secret-id-ttl", "10m")

    result = dev_openbao.run_script("init-vault.sh", *flags, env={"VAULT_TOKEN": "root"})

    assert result.returncode == 0, result.stderr
    role = dev_openbao.client("root").auth.approle.read_role("flask-app")["data"]
    assert role["secret_id_bound_cidrs"] == role["token_bound_cidrs"] == ["10.0.0.0/8"]
    assert (role["secret_id_num_uses"], role["secret_id_ttl"]) == (1, 600)
    with pytest.raises(hvac.exceptions.InvalidRequest, match="CIDR"):
        dev_openbao.client().auth.approle.login(
            role_id=dev_openbao.role_id, secret_id=dev_openbao.secret_id
        )


VAULT_CLI_SHIM = """#!/usr/bin/env bash
# Stands in for HashiCorp Vault's CLI: says it is Vault, has no audit device yet and records
# `audit enable`; every other command goes to the real bao.
case "$1 ${2:-}" in
  "version "*) echo "Vault v1.17.0 (test shim)"; exit 0 ;;
  "audit list") echo '{}'; exit 0 ;;
  "audit enable") echo "$*" >>"$SHIM_LOG"; exit 0 ;;
esac
exec bao "$@"
"""


def test_hashicorp_vault_gets_its_audit_device_over_the_api(
    dev_openbao: OpenBao, tmp_path: Path
) -> None:
    # Only the CLI seam is faked: no HashiCorp Vault binary here; the server is a real OpenBao.
    shim, log = tmp_path / "vault", tmp_path / "calls.log"
    shim.write_text(VAULT_CLI_SHIM)
    shim.chmod(0o700)
    env = {"VAULT_BIN": str(shim), "SHIM_LOG": str(log), "VAULT_TOKEN": "root"}
    env["AUDIT_FILE_PATH"] = "/vault/logs/audit.log"

    result = dev_openbao.run_script("init-vault.sh", env=env)

    assert result.returncode == 0, result.stderr
    assert "audit device file/: enabled" in result.stdout
    assert log.read_text().split() == ["audit", "enable", "file", "file_path=/vault/logs/audit.log"]
    assert "audit: declared in the server config (OpenBao)" in dev_openbao.init_result.stdout


def test_rerun_adds_only_the_keys_a_secret_lacks(dev_openbao: OpenBao) -> None:
    root = dev_openbao.client("root")
    before = kv(dev_openbao, "app/flask")
    partial = {"jwt_secret": before["jwt_secret"], "admin_password": before["admin_password"]}
    root.secrets.kv.v2.create_or_update_secret(path="app/flask", secret=partial)
    version = current_version(dev_openbao, "app/flask")

    result = dev_openbao.run_script("init-vault.sh", env={"VAULT_TOKEN": "root"})

    assert result.returncode == 0, result.stderr
    assert "secret/app/flask exists: kept, added missing keys user_password" in result.stdout
    after = kv(dev_openbao, "app/flask")
    assert {k: after[k] for k in partial} == partial
    assert len(after["user_password"]) >= 20 and after["user_password"] != before["user_password"]
    assert current_version(dev_openbao, "app/flask") == version + 1
    assert_no_secret(result.stdout + result.stderr, list(after.values()))
