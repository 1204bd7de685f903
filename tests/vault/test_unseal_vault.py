"""unseal-vault.sh against a real OpenBao restarted from disk."""

from __future__ import annotations

import pytest

from tests.harness.openbao import OpenBao
from tests.vault.conftest import assert_no_secret, counting_proxy, generated_secrets

pytestmark = pytest.mark.timeout(120)


def unseal_requests(seen: list[tuple[str, str, str]]) -> list[str]:
    """Body field names of the unseal calls the server received, in order."""
    return [fields for method, path, fields in seen if (method, path) == ("PUT", "/v1/sys/unseal")]


def test_restart_seals_and_script_unseals_with_exactly_threshold_keys(
    spare_openbao: OpenBao,
) -> None:
    spare_openbao.restart()
    assert spare_openbao.client().sys.is_sealed()

    # Count the unseal requests the server really receives, not what the script says it did.
    with counting_proxy(spare_openbao.port) as (proxy_addr, seen):
        result = spare_openbao.run_script("unseal-vault.sh", env={"VAULT_ADDR": proxy_addr})

    assert result.returncode == 0, result.stderr
    # The spare server was made with 3 key shares and a threshold of 2.
    assert unseal_requests(seen) == ["key", "key"]
    assert not spare_openbao.client().sys.is_sealed()
    spare_openbao.wait_active()
    token = spare_openbao.client(spare_openbao.root_token)
    assert token.secrets.kv.v2.read_secret_version(path="app/flask", raise_on_deleted_version=True)[
        "data"
    ]["data"]["jwt_secret"], "secrets did not survive the restart"
    assert_no_secret(result.stdout + result.stderr, generated_secrets(spare_openbao))


def test_partial_unseal_by_someone_else_is_reset_first(sealed_openbao: OpenBao) -> None:
    sealed_openbao.client().sys.submit_unseal_key(sealed_openbao.keys()["unseal_keys_b64"][2])
    assert sealed_openbao.client().sys.read_seal_status()["progress"] == 1

    with counting_proxy(sealed_openbao.port) as (proxy_addr, seen):
        result = sealed_openbao.run_script("unseal-vault.sh", env={"VAULT_ADDR": proxy_addr})

    assert result.returncode == 0, result.stderr
    assert unseal_requests(seen) == ["reset", "key", "key"]
    assert not sealed_openbao.client().sys.is_sealed()
    sealed_openbao.wait_active()


def test_already_unsealed_server_is_left_alone(openbao: OpenBao) -> None:
    with counting_proxy(openbao.port) as (proxy_addr, seen):
        result = openbao.run_script("unseal-vault.sh", env={"VAULT_ADDR": proxy_addr})
    assert result.returncode == 0, result.stderr
    assert "already unsealed" in result.stdout
    assert unseal_requests(seen) == []
