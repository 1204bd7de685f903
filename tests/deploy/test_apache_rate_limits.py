"""End to end: the real apache2 in front of the real backend (gunicorn, Vault, PostgreSQL,
Redis), so the login limits count the address Apache saw, not what the client claims."""

from __future__ import annotations

import http.client
import json
import secrets
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis

from tests.harness.apache import Apache, require_apache, running_apache
from tests.harness.app import Gunicorn, gunicorn_env
from tests.harness.servers import missing_server

REDIS_URL = "redis://127.0.0.1:6379/0"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def rate_limited_backend(
    backend_openbao: Any, app_database: Any, start_gunicorn: Callable[..., Gunicorn]
) -> Gunicorn:
    require_apache()
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
    except redis.RedisError:
        missing_server("Redis is not running at 127.0.0.1:6379")
    env = gunicorn_env(
        backend_openbao,
        TRUSTED_PROXIES="1",  # as setup.sh runs it behind Apache
        RATELIMIT_ENABLED="true",
        REDIS_URL=REDIS_URL,
        RATELIMIT_KEY_PREFIX=f"test-apache-{secrets.token_hex(4)}",
        LOGIN_LIMITS="5/minute",
    )
    return start_gunicorn(env, workers=2, name="behind-apache")


@pytest.fixture(scope="module")
def front_of_backend(rate_limited_backend: Gunicorn) -> Iterator[Apache]:
    """The front as setup.sh and Compose run it: no trusted proxy (FE_TRUSTED_PROXIES unset)."""
    yield from running_apache(rate_limited_backend.url)


INGRESS = "127.0.0.5"


@pytest.fixture(scope="module")
def front_behind_ingress(rate_limited_backend: Gunicorn) -> Iterator[Apache]:
    """The front as Kubernetes runs it: the ingress's addresses in FE_TRUSTED_PROXIES (two
    blocks, as a cluster with more than one ingress range would list them)."""
    yield from running_apache(
        rate_limited_backend.url, trusted_proxies=f"192.0.2.0/24 {INGRESS}/32"
    )


class IngressProxy(BaseHTTPRequestHandler):
    """A minimal ingress: forwards each request to the front from INGRESS, appending the peer
    it saw to X-Forwarded-For as ingress-nginx and most load balancers do."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
        seen = self.headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = (
            f"{seen}, {self.client_address[0]}" if seen else self.client_address[0]
        )
        port: int = self.server.front_port  # type: ignore[attr-defined]
        conn = http.client.HTTPConnection(
            "127.0.0.1", port, timeout=10, source_address=(INGRESS, 0)
        )
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            answer = conn.getresponse()
            payload = answer.read()
        finally:
            conn.close()
        self.send_response(answer.status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


@pytest.fixture(scope="module")
def ingress(front_behind_ingress: Apache) -> Iterator[int]:
    """The port of an ingress on INGRESS in front of `front_behind_ingress`."""
    server: Any = ThreadingHTTPServer((INGRESS, 0), IngressProxy)
    server.front_port = front_behind_ingress.port
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def login_from(
    apache: Apache | int, source: str, username: str, host: str = "127.0.0.1", **headers: str
) -> int:
    """One failed login through Apache (or the port of a proxy before it), the TCP connection
    made from `source`."""
    port = apache if isinstance(apache, int) else apache.port
    conn = http.client.HTTPConnection(host, port, timeout=10, source_address=(source, 0))
    body = json.dumps({"username": username, "password": "wrong-password-42"})
    try:
        conn.request(
            "POST",
            "/api/auth/login",
            body=body,
            headers={"Content-Type": "application/json", **headers},
        )
        return conn.getresponse().status
    finally:
        conn.close()


def forged_logins(
    target: Apache | int, source: str, prefix: str, host: str = "127.0.0.1", real_ip: bool = False
) -> list[int]:
    """Six failed logins from `source`, each claiming another address in X-Forwarded-For
    (and X-Real-IP) for a new username: what a client resetting its budget would send."""
    statuses = []
    for n in range(6):
        forged = {"X-Forwarded-For": f"198.51.100.{n}"}
        if real_ip:
            forged["X-Real-IP"] = f"198.51.100.{n}"
        statuses.append(login_from(target, source, f"{prefix}-{n}", host, **forged))
    return statuses


def test_forged_forwarded_for_does_not_escape_the_per_address_limit_behind_apache(
    front_of_backend: Apache,
) -> None:
    # A new username and a new forged address each time: only the per-address budget of the
    # real address (127.0.0.1, as Apache saw it) is shared by these attempts.
    statuses = forged_logins(front_of_backend, "127.0.0.1", "nobody", real_ip=True)
    assert statuses == [401] * 5 + [429]
    # Another client address on the same machine has its own budget.
    assert login_from(front_of_backend, "127.0.0.2", "nobody-0") == 401


def test_clients_behind_the_ingress_have_their_own_login_limits(ingress: int) -> None:
    """Two users behind one ingress: the first one's failures lock out only the first one."""
    statuses = [login_from(ingress, "127.0.0.21", f"alice-{n}", host=INGRESS) for n in range(6)]
    assert statuses == [401] * 5 + [429]
    assert login_from(ingress, "127.0.0.22", "bob", host=INGRESS) == 401


def test_a_forwarded_for_sent_through_the_ingress_is_not_believed(ingress: int) -> None:
    """What the client itself puts in X-Forwarded-For stays left of the ingress's entry: the
    front takes the address the ingress saw, so forging it does not reset the budget."""
    statuses = forged_logins(ingress, "127.0.0.23", "carol", host=INGRESS)
    assert statuses == [401] * 5 + [429]


def test_a_forwarded_for_from_an_untrusted_peer_is_not_believed(
    front_behind_ingress: Apache,
) -> None:
    """Straight to a front that trusts an ingress: a direct client is not the ingress, so its
    X-Forwarded-For is ignored and every forged address shares the peer's one budget."""
    statuses = forged_logins(front_behind_ingress, "127.0.0.24", "dave")
    assert statuses == [401] * 5 + [429]
