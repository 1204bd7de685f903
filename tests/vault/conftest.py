"""Helpers shared by the tests of the Vault server side: secrets to look for, the app's login."""

from __future__ import annotations

import http.client
import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import hvac
import pytest

from tests.harness.openbao import OpenBao, read_env, running_openbao

SCRIPTS = ("init-vault.sh", "unseal-vault.sh", "rotate-secret-id.sh")


def generated_secrets(server: OpenBao, workdir: Path | None = None) -> list[str]:
    """Every secret value init-vault.sh made for this server: none may ever be printed."""
    workdir = workdir or server.workdir
    keys = server.keys()
    env = read_env(workdir / ".env")
    root = server.client(server.root_token)
    app = root.secrets.kv.v2.read_secret_version(path="app/flask", raise_on_deleted_version=True)
    db = root.secrets.kv.v2.read_secret_version(
        path="database/bootstrap", raise_on_deleted_version=True
    )
    values = [
        *keys.get("unseal_keys_b64", []),
        *keys.get("unseal_keys_hex", []),
        keys.get("root_token", ""),
        server.operator_token,
        env["VAULT_SECRET_ID"],
        *app["data"]["data"].values(),
        db["data"]["data"]["password"],
    ]
    return [value for value in values if value and value != "root"]


def assert_no_secret(text: str, secrets: list[str]) -> None:
    """Fail naming only the position of a leaked secret, not the secret itself."""
    leaked = [index for index, value in enumerate(secrets) if value in text]
    assert not leaked, f"secret values number {leaked} appear in the output"


def app_login(server: OpenBao, role_id: str | None = None, secret_id: str | None = None) -> str:
    """Log in with AppRole as the backend does and return its token."""
    client = server.client()
    result = client.auth.approle.login(
        role_id=role_id or server.role_id, secret_id=secret_id or server.secret_id
    )
    return str(result["auth"]["client_token"])


def app_client(server: OpenBao) -> hvac.Client:
    return server.client(app_login(server))


def snapshot(directory: Path) -> dict[str, bytes | None]:
    """Every entry under a dir with its bytes, to prove a failed script left nothing behind."""
    return {
        str(path.relative_to(directory)): path.read_bytes() if path.is_file() else None
        for path in sorted(directory.rglob("*"))
    }


def body_fields(body: bytes) -> str:
    """The field names of a JSON request body, comma-separated: what was sent, never a value."""
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        return "?"
    return ",".join(sorted(data)) if isinstance(data, dict) else "?"


class _Proxy(http.server.BaseHTTPRequestHandler):
    """Forward every request to the upstream server and remember its method and path."""

    upstream_port = 0
    seen: list[tuple[str, str, str]]

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append((self.command, self.path, body_fields(body)))
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=10)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        conn.request(self.command, self.path, body=body, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        conn.close()

    do_GET = do_PUT = do_POST = do_DELETE = _forward

    def log_message(self, format: str, *args: object) -> None:
        """Silence the per-request log lines."""


@contextmanager
def counting_proxy(upstream_port: int) -> Iterator[tuple[str, list[tuple[str, str, str]]]]:
    """A proxy on loopback in front of a server: its address, (method, path, body fields) seen."""
    seen: list[tuple[str, str, str]] = []
    handler = type("Handler", (_Proxy,), {"upstream_port": upstream_port, "seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        assert not thread.is_alive(), "the HTTP server thread did not stop"


SPARE_INIT_ARGS = ("--key-shares", "3", "--key-threshold", "2")
SPARE_DB = {"DB_HOST": "pg.internal", "DB_PORT": "6543", "DB_NAME": "x", "DB_USER": "y"}


@pytest.fixture(scope="package")
def spare_openbao() -> Iterator[OpenBao]:
    """A second full server, made with non-default flags, that tests may seal and restart."""
    with running_openbao(init_args=SPARE_INIT_ARGS, init_env=SPARE_DB) as server:
        yield server


@pytest.fixture
def sealed_openbao(spare_openbao: OpenBao) -> OpenBao:
    if not spare_openbao.client().sys.is_sealed():
        spare_openbao.seal()
    return spare_openbao


@pytest.fixture(scope="package")
def uninitialized_openbao() -> Iterator[OpenBao]:
    """A server started from the project config but never initialized."""
    with running_openbao(initialize=False) as server:
        yield server
