"""The operator token runs day-2 operations only, and no root token survives init-vault.sh.

Attacks from issue 8 (must-fix 5): whoever holds the operator token must not be able to
rewrite a policy, mint a token with another policy, or switch the audit log off; and the root
token that `operator init` printed must be dead once the bootstrap is over.
"""

from __future__ import annotations

import hvac
import pytest

from tests.harness.openbao import OpenBao

DENIED = (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest)


def operator(server: OpenBao) -> hvac.Client:
    return server.client(server.operator_token)


def test_operator_token_cannot_write_a_policy(openbao: OpenBao) -> None:
    with pytest.raises(hvac.exceptions.Forbidden):
        operator(openbao).sys.create_or_update_acl_policy(
            name="admin-policy", policy='path "*" { capabilities = ["sudo", "read"] }'
        )
    with pytest.raises(hvac.exceptions.Forbidden):
        operator(openbao).sys.create_or_update_acl_policy(
            name="evil", policy='path "*" { capabilities = ["sudo", "read"] }'
        )


def test_operator_token_cannot_create_a_token_with_another_policy(openbao: OpenBao) -> None:
    for policy in ("app-policy", "root"):
        with pytest.raises(hvac.exceptions.Forbidden):
            operator(openbao).auth.token.create(policies=[policy], ttl="1h")


def test_operator_token_cannot_disable_audit_or_change_auth_methods(openbao: OpenBao) -> None:
    with pytest.raises(hvac.exceptions.Forbidden):
        operator(openbao).sys.disable_audit_device("file")
    with pytest.raises(hvac.exceptions.Forbidden):
        operator(openbao).sys.enable_auth_method("userpass", path="backdoor")
    with pytest.raises(hvac.exceptions.Forbidden):
        operator(openbao).sys.disable_auth_method("approle")
    with pytest.raises(hvac.exceptions.Forbidden):
        operator(openbao).auth.approle.create_or_update_approle(
            "flask-app", token_policies=["admin-policy"]
        )


def test_root_token_in_keys_file_no_longer_works(openbao: OpenBao) -> None:
    root = openbao.keys().get("root_token", "")
    assert root, "operator init's root token is kept as a record"
    assert not openbao.client(root).is_authenticated()


def test_operator_token_still_runs_day_two_operations(openbao: OpenBao) -> None:
    client = operator(openbao)
    client.secrets.kv.v2.create_or_update_secret(path="ops-check/item", secret={"k": "v"})
    client.secrets.kv.v2.delete_metadata_and_all_versions(path="ops-check/item")
    assert client.auth.approle.read_role_id("flask-app")["data"]["role_id"] == openbao.role_id
    secret_id = client.auth.approle.generate_secret_id("flask-app")["data"]
    client.auth.approle.destroy_secret_id_accessor("flask-app", secret_id["secret_id_accessor"])
    assert client.adapter.get("/v1/sys/health")["sealed"] is False
    info = client.auth.token.lookup_self()["data"]
    assert info["policies"] == ["admin-policy"]
    # Raft peers: listed (setup.sh --ha waits for three voters with it), never removed.
    servers = client.sys.read_raft_config()["data"]["config"]["servers"]
    assert [server["voter"] for server in servers] == [True]
    with pytest.raises(hvac.exceptions.Forbidden):
        client.sys.remove_raft_node(servers[0]["node_id"])
