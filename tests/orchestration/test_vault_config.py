"""Config and overlay rendering, and the node layout and its ports."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestration import vault_config as vc
from orchestration.console import SetupError
from orchestration.layout import Layout, docker_vault_addr, nodes
from orchestration.vault_api import count_voters, role_line

CONFIG = (vc.CONFIG_DIR / "vault-config.hcl").read_text()
HA = (vc.CONFIG_DIR / "vault-ha.hcl").read_text()


def test_rewrite_points_at_private_paths_and_ports() -> None:
    text = vc.rewrite_config(CONFIG, data=Path("/d"), audit=Path("/a.log"), port=9000,
                             cluster_port=9001, api_addr="https://127.0.0.1:9000")  # fmt: skip
    for line in ('path    = "/d"', 'file_path = "/a.log"', 'address         = "127.0.0.1:9000"',
                 'cluster_address = "127.0.0.1:9001"', 'api_addr     = "https://127.0.0.1:9000"',
                 'cluster_addr = "http://127.0.0.1:9001"'):  # fmt: skip
        assert line in text


def test_rewrite_refuses_a_config_it_no_longer_understands() -> None:
    with pytest.raises(SetupError, match="expected one match"):
        vc.rewrite_config("ui = true", data=Path("/d"), audit=Path("/a"), port=1, cluster_port=2)


@pytest.mark.parametrize("mode", ["tls", "mtls"])
def test_listener_tls(mode: str) -> None:
    text = vc.listener_tls(CONFIG, "/t", mode)
    assert 'tls_cert_file   = "/t/vault.pem"' in text and "tls_disable" not in text.split("#")[0]
    assert ("tls_require_and_verify_client_cert = true" in text) == (mode == "mtls")
    assert vc.running_tls(text) == mode
    assert vc.running_tls(CONFIG) == "off"


def test_ha_overlay_per_node_joins_over_tls() -> None:
    addresses = ["https://127.0.0.1:1", "https://127.0.0.1:3", "https://127.0.0.1:5"]
    text = vc.render_ha(HA, data="/n2", node_id="vault-2", addresses=addresses)
    assert 'node_id = "vault-2"' in text and '"/n2"' in text
    assert all(f'"{a}"' in text for a in addresses) and "vault-1:8200" not in text
    joined = vc.ha_join_tls(text, "/t", "mtls")
    assert joined.count('leader_ca_cert_file = "/t/ca.pem"') == 3
    assert joined.count("leader_client_key_file") == 3
    assert vc.ha_join_tls(text, "/t", "off") == text


def test_seal_overlay_and_compose_tls_configs() -> None:
    seal = vc.render_seal((vc.CONFIG_DIR / "seal-transit.hcl").read_text(), "http://127.0.0.1:7")
    assert '"http://127.0.0.1:7"' in seal
    rendered = vc.compose_tls_configs("tls")
    assert 'api_addr     = "https://vault:8200"' in rendered["vault-config.hcl"]
    assert '"/vault/tls/vault.pem"' in rendered["vault-config.hcl"]
    assert rendered["vault-ha.hcl"].count('leader_ca_cert_file = "/vault/tls/ca.pem"') == 3


def test_node_ports_and_addresses() -> None:
    layout = Layout(Path("/data"))
    three = nodes(layout, True, 8200, 8201, "https")
    assert [(n.port, n.cluster_port) for n in three] == [(8200, 8201), (8202, 8203), (8204, 8205)]
    assert three[0].pid_file == Path("/data/run/vault.pid") and three[0].dir == Path("/data/vault")
    assert three[2].addr == "https://127.0.0.1:8204" and three[2].dir == Path("/data/vault-3")
    assert len(nodes(layout, False, 8200, 9999, "http")) == 1
    assert docker_vault_addr(False, "http") == "http://vault:8200"


def test_status_pieces() -> None:
    answer = {"data": {"config": {"servers": [{"voter": True}, {"voter": False}, {"voter": True}]}}}
    assert count_voters(answer) == 2 and count_voters({}) is None
    assert role_line({}, None) == "unreachable"
    assert role_line({"sealed": True, "type": "shamir"}, None) == "seal shamir, sealed"
    assert role_line({"sealed": False, "type": "transit"}, True) == "seal transit, unsealed, leader"
