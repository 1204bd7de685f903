"""Every script on bad input: non-zero exit, one clear line on stderr, no file left behind."""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness.openbao import REPO, OpenBao, script_env
from tests.harness.servers import free_port, missing_server
from tests.vault.conftest import SCRIPTS, snapshot

pytestmark = pytest.mark.timeout(60)


@dataclass
class Servers:
    """The servers a case may point at: up (session), sealed, never initialized, not Vault."""

    up: OpenBao
    sealed: OpenBao
    uninitialized: OpenBao
    web_port: int


@dataclass
class Case:
    script: str
    expect: str  # part of the one error line a user reads
    prepare: Callable[[Servers, Path], dict[str, str]]  # sets up the project dir, returns env
    args: tuple[str, ...] = ()


def stopped(servers: Servers, project: Path) -> dict[str, str]:
    return {"VAULT_ADDR": f"http://127.0.0.1:{free_port()}", "VAULT_TOKEN": "s.unused"}


def wrong_scheme(servers: Servers, project: Path) -> dict[str, str]:
    return {"VAULT_ADDR": f"https://127.0.0.1:{servers.up.port}", "VAULT_TOKEN": "s.unused"}


def not_vault(servers: Servers, project: Path) -> dict[str, str]:
    return {"VAULT_ADDR": f"http://127.0.0.1:{servers.web_port}", "VAULT_TOKEN": "s.unused"}


def up_without_keys(servers: Servers, project: Path) -> dict[str, str]:
    return {"VAULT_ADDR": servers.up.addr}


def up_with_corrupt_keys(servers: Servers, project: Path) -> dict[str, str]:
    (project / "vault-keys.json").write_text('{"unseal_keys_b64": ["abc", ')
    return {"VAULT_ADDR": servers.up.addr}


def up_with_empty_operator_token(servers: Servers, project: Path) -> dict[str, str]:
    (project / "vault-operator-token").write_text("\n")
    return {"VAULT_ADDR": servers.up.addr}


def sealed_without_keys(servers: Servers, project: Path) -> dict[str, str]:
    return {"VAULT_ADDR": servers.sealed.addr}


def sealed_with_corrupt_keys(servers: Servers, project: Path) -> dict[str, str]:
    (project / "vault-keys.json").write_text("not json at all")
    return {"VAULT_ADDR": servers.sealed.addr}


def sealed_with_too_few_keys(servers: Servers, project: Path) -> dict[str, str]:
    keys = servers.sealed.keys()
    keys["unseal_keys_b64"] = keys["unseal_keys_b64"][:1]
    (project / "vault-keys.json").write_text(json.dumps(keys))
    return {"VAULT_ADDR": servers.sealed.addr}


def sealed_with_token(servers: Servers, project: Path) -> dict[str, str]:
    return {"VAULT_ADDR": servers.sealed.addr, "VAULT_TOKEN": servers.sealed.operator_token}


def not_initialized(servers: Servers, project: Path) -> dict[str, str]:
    return {"VAULT_ADDR": servers.uninitialized.addr}


def env_is_directory(servers: Servers, project: Path) -> dict[str, str]:
    # Tests run as root, which reads any mode: a directory is a .env no one can read as a file.
    (project / ".env").mkdir()
    (project / ".env" / "keep").write_text("x")
    return {"VAULT_ADDR": servers.up.addr, "VAULT_TOKEN": servers.up.operator_token}


def env_is_directory_root(servers: Servers, project: Path) -> dict[str, str]:
    return {**env_is_directory(servers, project), "VAULT_TOKEN": servers.up.root_token}


def up(servers: Servers, project: Path) -> dict[str, str]:
    return {"VAULT_ADDR": servers.up.addr, "VAULT_TOKEN": servers.up.operator_token}


CASES = {
    **{f"{s}-server-stopped": Case(s, "cannot reach Vault at", stopped) for s in SCRIPTS},
    **{f"{s}-https-to-http": Case(s, "cannot reach Vault at", wrong_scheme) for s in SCRIPTS},
    **{f"{s}-not-vault": Case(s, "answered HTTP 404 (wrong address?)", not_vault) for s in SCRIPTS},
    "init-initialized-no-keys-no-token": Case("init-vault.sh", "no VAULT_TOKEN", up_without_keys),
    "init-corrupt-keys": Case("init-vault.sh", "is corrupt", up_with_corrupt_keys),
    "init-sealed-no-keys": Case("init-vault.sh", "not found", sealed_without_keys),
    "init-env-unreadable": Case("init-vault.sh", "is a directory", env_is_directory_root),
    "init-bad-threshold": Case(
        "init-vault.sh", "threshold 9 > shares 5", up, ("--key-threshold", "9")
    ),
    "init-unknown-option": Case("init-vault.sh", "unknown option", up, ("--frobnicate",)),
    "init-database-engine-only-static": Case(
        "init-vault.sh", "needs VAULT_DB_MODE=dynamic", up, ("--database-engine-only",)
    ),
    "unseal-missing-keys": Case("unseal-vault.sh", "not found", sealed_without_keys),
    "unseal-corrupt-keys": Case("unseal-vault.sh", "is corrupt", sealed_with_corrupt_keys),
    "unseal-too-few-keys": Case("unseal-vault.sh", "needs 2", sealed_with_too_few_keys),
    "unseal-not-initialized": Case("unseal-vault.sh", "not initialized", not_initialized),
    "rotate-no-operator-token": Case(
        "rotate-secret-id.sh", "no operator token file", up_without_keys
    ),
    "rotate-empty-operator-token": Case(
        "rotate-secret-id.sh", "is empty", up_with_empty_operator_token
    ),
    "rotate-sealed": Case("rotate-secret-id.sh", "is sealed", sealed_with_token),
    "rotate-env-unreadable": Case("rotate-secret-id.sh", "is a directory", env_is_directory),
    "rotate-unknown-option": Case("rotate-secret-id.sh", "unknown option", up, ("-x",)),
    "jwt-key-sealed": Case("rotate-jwt-key.sh", "is sealed", sealed_with_token),
    "jwt-key-empty-operator-token": Case(
        "rotate-jwt-key.sh", "is empty", up_with_empty_operator_token
    ),
    "jwt-key-unknown-option": Case("rotate-jwt-key.sh", "unknown option", up, ("-x",)),
    "jwt-key-bad-rollback": Case(
        "rotate-jwt-key.sh", "positive version number", up, ("--rollback", "x")
    ),
}


@pytest.fixture(scope="module")
def web_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A plain web server on loopback: something answers, but it is not Vault."""
    root = str(tmp_path_factory.mktemp("web"))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=root, **kwargs)

        def log_message(self, format: str, *args: object) -> None:
            """No per-request log lines."""

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)
    assert not thread.is_alive(), "the HTTP server thread did not stop"


@pytest.fixture(scope="module")
def servers(
    openbao: OpenBao, spare_openbao: OpenBao, uninitialized_openbao: OpenBao, web_port: int
) -> Servers:
    return Servers(openbao, spare_openbao, uninitialized_openbao, web_port)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input_fails_with_one_line_and_leaves_nothing(
    case: Case, servers: Servers, sealed_openbao: OpenBao, tmp_path: Path
) -> None:
    project, scratch = tmp_path / "project", tmp_path / "tmp"
    project.mkdir()
    scratch.mkdir()
    env = case.prepare(servers, project)
    before = snapshot(project)

    result = subprocess.run(
        [str(REPO / "vault" / "scripts" / case.script), *case.args],
        env=script_env(env["VAULT_ADDR"], project, {**env, "TMPDIR": str(scratch)}),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one error line, got: {result.stderr!r}"
    assert lines[0].startswith(f"{case.script}: error: ")
    assert case.expect in lines[0]
    assert snapshot(project) == before, "the failed run left or changed files"
    assert list(scratch.iterdir()) == [], "the failed run left temp files"


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_prints_usage(script: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(REPO / "vault" / "scripts" / script), "--help"],
        env=script_env("http://127.0.0.1:1", tmp_path),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0
    assert result.stdout.startswith(f"Usage: {script}")
    assert list(tmp_path.iterdir()) == []


def test_shellcheck_passes_on_every_script() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        missing_server("shellcheck is not installed (apt-get install shellcheck)")
    scripts = sorted(str(p) for p in (REPO / "vault" / "scripts").glob("*.sh"))
    assert len(scripts) >= 5  # init, unseal, rotate-secret-id, rotate-jwt-key, lib
    result = subprocess.run([shellcheck, *scripts], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout
