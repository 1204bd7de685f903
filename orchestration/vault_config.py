"""Vault server configs rendered from vault/config/: the one place that rewrites them.

The project's files are written for the Compose containers (/vault/data, vault-1:8200...);
local mode and the test harness point them at private dirs and loopback ports, and turn the
listener to TLS. Each rewrite must match exactly once: a config change that a rewrite no
longer understands fails loudly instead of starting a server on the wrong address.
"""

from __future__ import annotations

import re
from pathlib import Path

from orchestration.console import SetupError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "vault" / "config"


def _sub_once(pattern: str, replacement: str, text: str, what: str) -> str:
    new, count = re.subn(pattern, lambda _match: replacement, text, flags=re.M)
    if count != 1:
        raise SetupError(f"{what}: expected one match of {pattern}, got {count}")
    return new


def _setting(name: str, value: str, text: str, what: str) -> str:
    """`name = "..."` set to value (name as a whole word: `path` is not `file_path`)."""
    pattern = rf'(\b{name}\s*=\s*)"[^"]*"'
    new, count = re.subn(pattern, lambda match: f'{match.group(1)}"{value}"', text)
    if count != 1:
        raise SetupError(f"{what}: expected one match of {pattern}, got {count}")
    return new


def rewrite_config(
    text: str, *, data: Path, audit: Path, port: int, cluster_port: int, api_addr: str = ""
) -> str:
    """Point a server config (vault-config.hcl, vault-unsealer.hcl) at a private dir and
    loopback ports; api_addr defaults to plain http on the port."""
    what = "vault config"
    for name, value in (
        ("path", str(data)),
        ("file_path", str(audit)),
        ("address", f"127.0.0.1:{port}"),
        ("cluster_address", f"127.0.0.1:{cluster_port}"),
        ("api_addr", api_addr or f"http://127.0.0.1:{port}"),
        ("cluster_addr", f"http://127.0.0.1:{cluster_port}"),
    ):
        text = _setting(name, value, text, what)
    return text


def listener_tls(text: str, tls_dir: Path | str, mode: str) -> str:
    """The listener's `tls_disable = true` replaced by the certificate files (and, for mutual
    TLS, the CA that client certificates must chain to)."""
    if mode == "off":
        return text
    lines = [
        f'  tls_cert_file   = "{tls_dir}/vault.pem"',
        f'  tls_key_file    = "{tls_dir}/vault-key.pem"',
    ]
    if mode == "mtls":
        lines += [
            f'  tls_client_ca_file                 = "{tls_dir}/ca.pem"',
            "  tls_require_and_verify_client_cert = true",
        ]
    stanza = "\n".join(lines)
    new, count = re.subn(r"^[ \t]*tls_disable[ \t]*=.*$", lambda _m: stanza, text, flags=re.M)
    if count == 0:
        raise SetupError("could not turn on TLS in the Vault config (no tls_disable line)")
    return new


def generate_root_listener(socket: Path) -> str:
    """A second listener on a private Unix socket with OpenBao's unauthenticated
    generate-root endpoints on: the way back to a root token when the operator token expired
    or was lost. Only the data dir's owner (who holds the unseal keys anyway) may enter."""
    return f"""
# setup.sh --local: generate-root without a token, for the data dir's owner only.
listener "unix" {{
  address                                  = "{socket}"
  socket_mode                              = "0600"
  disable_unauthed_generate_root_endpoints = false
}}
"""


def render_ha(text: str, *, data: Path | str, node_id: str, addresses: list[str]) -> str:
    """vault-ha.hcl for one node: its data dir and id, the retry_join list."""
    what = "vault-ha.hcl"
    text = _setting("path", str(data), text, what)
    text = _setting("node_id", node_id, text, what)
    for number, address in enumerate(addresses, start=1):
        text = _sub_once(rf'"http://vault-{number}:8200"', f'"{address}"', text, what)
    return text


def ha_join_tls(text: str, tls_dir: Path | str, mode: str) -> str:
    """Every retry_join trusts our CA (and, with mutual TLS, shows the client certificate):
    a joining node reaches the leader's API over TLS."""
    if mode == "off":
        return text
    lines = [f'    leader_ca_cert_file = "{tls_dir}/ca.pem"']
    if mode == "mtls":
        lines += [
            f'    leader_client_cert_file = "{tls_dir}/client.pem"',
            f'    leader_client_key_file = "{tls_dir}/client-key.pem"',
        ]
    extra = "\n".join(lines)
    return re.sub(
        r"^([ \t]*leader_api_addr[ \t]*=.*)$", lambda m: f"{m.group(1)}\n{extra}", text, flags=re.M
    )


def render_seal(text: str, unsealer_addr: str) -> str:
    """seal-transit.hcl pointing at the unsealer."""
    return _setting("address", unsealer_addr, text, "seal-transit.hcl")


def compose_tls_configs(mode: str) -> dict[str, str]:
    """The configs the Compose TLS overlays mount: the listener on TLS with the containers'
    paths, api_addr and the retry_join list over https."""
    config = (CONFIG_DIR / "vault-config.hcl").read_text(encoding="utf-8")
    config = re.sub(r'^(api_addr\s*=\s*)"http://', r'\1"https://', config, flags=re.M)
    ha = (CONFIG_DIR / "vault-ha.hcl").read_text(encoding="utf-8")
    ha = re.sub(r'"http://(vault-[1-3]:8200)"', r'"https://\1"', ha)
    return {
        "vault-config.hcl": listener_tls(config, "/vault/tls", mode),
        "vault-ha.hcl": ha_join_tls(ha, "/vault/tls", mode),
    }


def running_tls(config: str) -> str:
    """What TLS a rendered config's listener has (settings only: comments name them too)."""
    if re.search(r"^\s*tls_require_and_verify_client_cert\s*=", config, re.M):
        return "mtls"
    if re.search(r"^\s*tls_cert_file\s*=", config, re.M):
        return "tls"
    return "off"
