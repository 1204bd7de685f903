"""The Compose argv for each flag set, as setup.sh has always given it."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestration.compose import Compose, stack_files

ROOT = Path("/repo")


def compose(name: str = "", ha: bool = False, tls: bool = False) -> Compose:
    return Compose(ROOT, ("docker", "compose"), name, ha, tls, 8200, 8443)


@pytest.mark.parametrize(
    ("stack", "ha", "tls", "files"),
    [
        ("vault", False, False, ["docker-compose.vault.yaml"]),
        ("vault", False, True, ["docker-compose.vault.yaml", "docker-compose.vault-tls.yaml"]),
        ("vault", True, False, ["docker-compose.vault-ha.yaml"]),
        ("vault", True, True, ["docker-compose.vault-ha.yaml", "docker-compose.vault-ha-tls.yaml"]),
        ("app", True, False, ["docker-compose.yaml"]),
        ("app", False, True, ["docker-compose.yaml", "docker-compose.tls.yaml"]),
    ],
)
def test_files_per_flag_set(stack: str, ha: bool, tls: bool, files: list[str]) -> None:
    assert stack_files(stack, ha, tls) == files


def test_argv_of_the_default_projects() -> None:
    assert compose().argv("vault", "up", "-d") == [
        "docker", "compose", "--project-directory", "/repo", "-p", "vault",
        "-f", "/repo/docker-compose.vault.yaml", "up", "-d",
    ]  # fmt: skip
    assert compose(tls=True).argv("app", "ps") == [
        "docker", "compose", "--project-directory", "/repo", "-p", "flask-vault-app",
        "-f", "/repo/docker-compose.yaml", "-f", "/repo/docker-compose.tls.yaml", "ps",
    ]  # fmt: skip


def test_a_project_name_names_both_stacks() -> None:
    named = compose("two", ha=True)
    assert named.argv("vault", "stop")[4:6] == ["-p", "two-vault"]
    assert named.argv("app", "down")[4:6] == ["-p", "two"]
    assert named.env()["VAULT_STACK"] == "two-vault"


def test_substitutions_give_node_ports_and_backend_addresses() -> None:
    env = compose(ha=True, tls=True).env(HTTP_PORT="8080")
    assert (env["VAULT_PORT_1"], env["VAULT_PORT_2"], env["VAULT_PORT_3"]) == (
        "8200",
        "8202",
        "8204",
    )
    assert env["BACKEND_VAULT_ADDR"] == (
        "https://vault-1:8200,https://vault-2:8200,https://vault-3:8200"
    )
    assert env["HTTP_PORT"] == "8080" and env["HTTPS_PORT"] == "8443"
    assert compose().env()["BACKEND_VAULT_ADDR"] == "http://vault:8200"
    assert compose().vault_files_label() == "docker-compose.vault.yaml"
    assert compose(ha=True, tls=True).vault_files_label() == (
        "docker-compose.vault-ha.yaml + docker-compose.vault-ha-tls.yaml"
    )
