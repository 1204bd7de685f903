"""The real Debian apache2 with fe_apache/httpd.conf in front of a backend on a free port."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from fe_apache.ui_wsgi import with_ui
from werkzeug.test import Client

from tests.harness.apache import FE_DIR, Apache, running_apache
from tests.harness.servers import free_port

pytestmark = pytest.mark.timeout(60)

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class EchoBackend(BaseHTTPRequestHandler):
    """Answers every request with what it received, so tests see what Apache forwarded."""

    seen: list[str] = []

    def answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        EchoBackend.seen.append(self.path)
        payload = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body_length": len(body),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        # The front must replace, not duplicate, what the backend says.
        self.send_header("X-Content-Type-Options", "backend-value")
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PATCH = do_DELETE = answer

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def backend() -> Iterator[str]:
    yield from serve(EchoBackend)


@pytest.fixture(scope="module")
def front(backend: str) -> Iterator[Apache]:
    yield from running_apache(backend)


@pytest.fixture(scope="module")
def waf_front(backend: str) -> Iterator[Apache]:
    yield from running_apache(backend, modsecurity=True)


def assert_security_headers(response: requests.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (name, response.status_code)
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    # Plain http: no HSTS, and the Server header gives no version.
    assert "Strict-Transport-Security" not in response.headers
    assert response.headers.get("Server") == "Apache"


def raw_request(apache: Apache, method: str, path: str) -> int:
    """Send a path exactly as written (requests would normalize '..' away)."""
    conn = http.client.HTTPConnection("127.0.0.1", apache.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.endheaders()
        return conn.getresponse().status
    finally:
        conn.close()


def test_ui_is_served_with_security_headers(front: Apache) -> None:
    response = requests.get(front.url + "/", timeout=10)
    assert response.status_code == 200
    assert "<title>Flask + Vault</title>" in response.text
    assert '<script src="app.js" defer></script>' in response.text
    assert_security_headers(response)
    for asset in ("app.js", "style.css"):
        assert requests.get(f"{front.url}/{asset}", timeout=10).status_code == 200


def test_not_found_carries_security_headers(front: Apache) -> None:
    response = requests.get(front.url + "/no-such-page", timeout=10)
    assert response.status_code == 404
    assert_security_headers(response)
    assert "Apache/" not in response.text  # ServerSignature Off


def test_api_is_proxied_with_one_trusted_forwarded_hop(front: Apache) -> None:
    response = requests.get(
        front.url + "/api/health?x=1",
        headers={"X-Forwarded-For": "203.0.113.9, 10.0.0.1", "Forwarded": "for=203.0.113.9"},
        timeout=10,
    )
    assert response.status_code == 200
    seen = response.json()
    assert seen["path"] == "/api/health?x=1"
    assert seen["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert "forwarded" not in seen["headers"]
    assert seen["headers"]["x-forwarded-proto"] == "http"
    assert_security_headers(response)
    assert response.headers["X-Content-Type-Options"] == "nosniff"  # not "backend-value, ..."
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    "path",
    [
        "/metrics",
        "/server-status",
        "/server-info",
        "/apix/health",
        "/api/../metrics",
        "/api/%2e%2e/metrics",
        "/.env",
        "/../etc/passwd",
    ],
)
def test_only_api_reaches_the_backend(front: Apache, path: str) -> None:
    EchoBackend.seen.clear()
    status = raw_request(front, "GET", path)
    assert status in {400, 403, 404}, (path, status)
    assert EchoBackend.seen == []


def test_trace_is_disabled(front: Apache) -> None:
    assert raw_request(front, "TRACE", "/") == 405


def test_static_ui_refuses_writes(front: Apache) -> None:
    assert requests.post(front.url + "/index.html", data="x", timeout=10).status_code == 403


def test_oversize_api_body_is_refused_before_the_backend(front: Apache) -> None:
    EchoBackend.seen.clear()
    big = requests.post(front.url + "/api/users", data=b"x" * 150_000, timeout=10)
    assert big.status_code == 413
    assert_security_headers(big)
    assert EchoBackend.seen == []
    chunked = requests.post(front.url + "/api/users", data=iter([b"x" * 1000]), timeout=10)
    assert chunked.status_code == 411  # no declared length: cannot be checked up front
    assert EchoBackend.seen == []
    ok = requests.post(front.url + "/api/users", data=b"x" * 90_000, timeout=10)
    assert ok.status_code == 200
    assert ok.json()["body_length"] == 90_000


@pytest.mark.parametrize("size", [102_401, 999_999, 1_000_000, 2**32 + 100])
def test_declared_length_is_compared_as_a_number(front: Apache, size: int) -> None:
    """`1000000` sorts before `102400` as a string, and 2^32 + 100 is 100 as a C int: the
    pre-check must compare numbers, or a 1 MB body reaches the backend."""
    EchoBackend.seen.clear()
    conn = http.client.HTTPConnection("127.0.0.1", front.port, timeout=10)
    try:
        conn.putrequest("POST", "/api/users")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(size))
        conn.endheaders()
        # The whole body: a front that lets it through forwards it to the backend. An error
        # here means it was refused (and closed) before the body was read: what we want.
        with contextlib.suppress(OSError):
            conn.send(b"x" * min(size, 1_000_000))
        status = conn.getresponse().status
    finally:
        conn.close()
    assert status == 413
    assert EchoBackend.seen == []


def test_jwt_sized_cookies_fit_the_header_limits(front: Apache) -> None:
    cookie = "access_token_cookie=" + "a" * 6000 + "; refresh_token_cookie=" + "b" * 6000
    response = requests.get(front.url + "/api/auth/me", headers={"Cookie": cookie}, timeout=10)
    assert response.status_code == 200
    huge = requests.get(front.url + "/api/auth/me", headers={"Cookie": "c" * 20_000}, timeout=10)
    assert huge.status_code == 400


def test_backend_down_gives_503_with_headers() -> None:
    for apache in running_apache(f"http://127.0.0.1:{free_port()}"):
        response = requests.get(apache.url + "/api/health", timeout=10)
        assert response.status_code == 503
        assert_security_headers(response)


class SlammingBackend(BaseHTTPRequestHandler):
    """Accepts the request and closes the connection without an answer."""

    def do_GET(self) -> None:
        self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


def test_broken_backend_gives_502_with_headers() -> None:
    for backend_url in serve(SlammingBackend):
        for apache in running_apache(backend_url):
            response = requests.get(apache.url + "/api/health", timeout=10)
            assert response.status_code == 502
            assert_security_headers(response)


def test_waf_lets_an_ordinary_login_through(waf_front: Apache) -> None:
    body = {"username": "admin", "password": "k7Hq-2vNw_9xPz4LmR8s"}
    response = requests.post(waf_front.url + "/api/auth/login", json=body, timeout=10)
    assert response.status_code == 200
    assert requests.get(waf_front.url + "/", timeout=10).status_code == 200
    # The UI's other calls: cookies carrying JWTs, a bodyless POST (Content-Length: 0).
    jwt_like = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIiwiZnJlc2giOmZhbHNlfQ.c2lnbmF0dXJlLXZhbHVl"
    cookies = {"access_token_cookie": jwt_like, "csrf_access_token": "3f2a9c1e-6b7d"}
    me = requests.get(waf_front.url + "/api/auth/me", cookies=cookies, timeout=10)
    assert me.status_code == 200
    refresh = requests.post(
        waf_front.url + "/api/auth/refresh",
        cookies=cookies,
        headers={"X-CSRF-TOKEN": "3f2a9c1e-6b7d"},
        timeout=10,
    )
    assert refresh.status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/users?id=1' OR '1'='1", None),
        ("POST", "/api/auth/login", {"username": "admin' OR 1=1 --", "password": "x"}),
        ("GET", "/api/users?q=<script>alert(document.cookie)</script>", None),
        ("POST", "/api/users", {"username": "<img src=x onerror=alert(1)>", "password": "x"}),
    ],
    ids=["sqli-query", "sqli-json", "xss-query", "xss-json"],
)
def test_waf_blocks_injection_probes(
    waf_front: Apache, method: str, path: str, body: dict[str, str] | None
) -> None:
    EchoBackend.seen.clear()
    response = requests.request(method, waf_front.url + path, json=body, timeout=10)
    assert response.status_code == 403
    assert_security_headers(response)
    assert EchoBackend.seen == []


def httpd_security_headers() -> dict[str, str]:
    """The headers httpd.conf sets on every response (HSTS aside: https only)."""
    text = (FE_DIR / "httpd.conf").read_text()
    return dict(re.findall(r'^Header always set (\S+) "([^"]*)"$', text, re.M))


def test_gunicorn_ui_adds_the_headers_apache_adds(tmp_path: Path) -> None:
    """Without Apache (setup.sh --no-apache), fe_apache/ui_wsgi.py sets the same headers."""
    (tmp_path / "index.html").write_text("<p>ui</p>")

    def backend(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]

    client = Client(with_ui(backend, tmp_path))
    expected = httpd_security_headers()
    assert set(SECURITY_HEADERS) | {"Content-Security-Policy"} <= set(expected)
    for path in ("/", "/api/health"):
        headers = client.get(path, buffered=True).headers
        assert {name: headers.get(name) for name in expected} == expected, path


def test_waf_audit_log_holds_no_session_token(waf_front: Apache) -> None:
    """A blocked request (403) is audited, but its cookies, CSRF and bearer values are not."""
    access = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhdWRpdC1jb29raWUifQ.YXVkaXQtc2lnbmF0dXJl"
    refresh, csrf = "eyJhbGciOiJIUzI1NiJ9.cmVmcmVzaC1hdWRpdA.c2lnLXJlZnJlc2g", "9d1c0ffe-42aa"
    bearer = "eyJhbGciOiJIUzI1NiJ9.YmVhcmVyLWF1ZGl0.c2lnLWJlYXJlcg"
    response = requests.get(
        waf_front.url + "/api/users?id=1' OR '1'='1",
        cookies={"access_token_cookie": access, "refresh_token_cookie": refresh},
        headers={"X-CSRF-TOKEN": csrf, "Authorization": f"Bearer {bearer}"},
        timeout=10,
    )
    assert response.status_code == 403
    audit = waf_front.run_dir / "modsec_audit.log"
    deadline = time.monotonic() + 5
    text = ""
    while "--Z--" not in text and time.monotonic() < deadline:  # Z ends the entry
        time.sleep(0.1)
        text = audit.read_text(errors="replace") if audit.exists() else ""
    assert "/api/users?id=1" in text, "the blocked request was not audited at all"
    assert "x-csrf-token" in text.lower(), "the header is still listed, only its value hidden"
    for value in (access, refresh, csrf, bearer, "9d1c0ffe"):
        assert value not in text, "a session token value is in the ModSecurity audit log"


class NamedBackend(BaseHTTPRequestHandler):
    """Says which member it is; its /api/health answers `health` (set per server)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        server: Any = self.server
        status = server.health if self.path == "/api/health" else 200
        payload = json.dumps({"member": server.name}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


def named_backend(name: str, health: int) -> ThreadingHTTPServer:
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), NamedBackend)
    server.name, server.health = name, health
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server  # type: ignore[no-any-return]


def members(apache: Apache, count: int) -> Counter[str]:
    """Which member answered each of `count` GETs on one kept-alive connection."""
    session = requests.Session()
    return Counter(
        session.get(f"{apache.url}/api/x", timeout=5).json()["member"] for _ in range(count)
    )


def test_balancer_spreads_over_members_and_health_check_takes_one_out() -> None:
    """Two TCP members: both serve until one's /api/health fails, then only the other does."""
    first, second = named_backend("first", 200), named_backend("second", 200)
    urls = [f"http://127.0.0.1:{s.server_address[1]}" for s in (first, second)]
    try:
        for apache in running_apache(urls[0], more_backends=tuple(urls[1:])):
            assert set(members(apache, 6)) == {"first", "second"}  # round robin, no stickiness
            second.health = 503  # type: ignore[attr-defined]
            deadline = time.monotonic() + 10  # hcinterval 2 s, hcfails 2
            while "DISABLING" not in apache.log() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert re.search(r"Health check DISABLING http://127\.0\.0\.1:\d+", apache.log())
            assert members(apache, 6) == Counter({"first": 6})
            second.health = 200  # type: ignore[attr-defined]
            deadline = time.monotonic() + 10
            while "ENABLING" not in apache.log() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert set(members(apache, 6)) == {"first", "second"}
    finally:
        for server in (first, second):
            server.shutdown()
            server.server_close()


@pytest.mark.parametrize(
    "args, error",
    [
        ([], "no backend URL given"),
        (["backend:8000"], "not a backend URL (http://HOST:PORT or unix:/PATH): backend:8000"),
        (["--dns", "backend"], "usage: --dns HOST PORT"),
        (["--follow", "members.conf", "1"], "usage: --follow FILE PID HOST PORT"),
    ],
)
def test_balancer_members_refuses_bad_input(args: list[str], error: str) -> None:
    done = subprocess.run(
        ["sh", str(FE_DIR / "balancer-members.sh"), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"balancer-members.sh: error: {error}\n"


def test_balancer_members_follow_rewrites_the_members_and_restarts_apache(tmp_path: Path) -> None:
    """--follow (the Compose front's watcher): an address the members lack (here localhost's,
    as a replica back with another address) rewrites the file and sends the graceful-restart
    signal (SIGUSR1) to the process it watches; the watcher ends with that process."""
    members = tmp_path / "balancer-members.conf"
    members.write_text('BalancerMember "http://192.0.2.7:8000" ${BACKEND_MEMBER}\n')
    stand_in = (  # for Apache: says when it listens for SIGUSR1, reports it, then exits
        "import signal; signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1});"
        "print('ready', flush=True); signal.sigwait({signal.SIGUSR1}); print('USR1')"
    )
    script = str(FE_DIR / "balancer-members.sh")
    with subprocess.Popen(["python3", "-c", stand_in], stdout=subprocess.PIPE, text=True) as apache:
        assert apache.stdout is not None and apache.stdout.readline() == "ready\n"
        follow = ["--follow", str(members), str(apache.pid), "localhost", "8000"]
        with subprocess.Popen(
            ["sh", script, *follow], stderr=subprocess.PIPE, text=True
        ) as watcher:
            try:
                assert apache.communicate(timeout=20)[0] == "USR1\n"
                said = watcher.communicate(timeout=20)[1]  # its process gone: it stops too
            finally:
                apache.kill()
                watcher.kill()
    assert watcher.returncode == 0
    assert "graceful restart of Apache" in said
    expected = 'BalancerMember "http://127.0.0.1:8000" ${BACKEND_MEMBER} ${BACKEND_HCHECK}\n'
    assert members.read_text() == expected
