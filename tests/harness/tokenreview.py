"""A stand-in for the Kubernetes API server's TokenReview endpoint, on loopback, for tests.

THIS IS NOT KUBERNETES. It answers exactly one API, the one Vault's Kubernetes auth method
calls at each login: `POST /apis/authentication.k8s.io/v1/tokenreviews`, in the real
authentication.k8s.io/v1 shape (a TokenReview in, the same TokenReview with `status` out:
`authenticated`, `user.username` = system:serviceaccount:<namespace>:<name>, `user.uid`,
`groups`, `audiences`, or `authenticated: false` with an `error`). Like the real API server it
demands a bearer token allowed to create TokenReviews (the configured reviewer JWT) and answers
401 otherwise. Tokens are JWTs shaped like projected service-account tokens; their signature
is not checked by Vault (no pem_keys), only by "us", the issuer, through the tokens we know.
Revoking a token here is what deleting its pod or rotating it does in a cluster.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"
API_VERSION = "authentication.k8s.io/v1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class ServiceAccount:
    namespace: str
    name: str
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}"


API_SERVER_AUDIENCE = "https://kubernetes.default.svc"


def service_account_jwt(
    account: ServiceAccount, audience: str = API_SERVER_AUDIENCE, ttl: int = 3600
) -> str:
    """A JWT with the claims of a projected service-account token (random signature)."""
    now = int(time.time())
    header = {"alg": "RS256", "kid": "test", "typ": "JWT"}
    claims: dict[str, Any] = {
        "aud": [audience],
        "iss": "https://kubernetes.default.svc",
        "sub": account.username,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "jti": str(uuid.uuid4()),
        "kubernetes.io": {
            "namespace": account.namespace,
            "serviceaccount": {"name": account.name, "uid": account.uid},
        },
    }
    parts = [json.dumps(header).encode(), json.dumps(claims).encode(), secrets.token_bytes(256)]
    return ".".join(_b64(p) for p in parts)


class TokenReviewAPI:
    """The tokens we issued and which are still valid, plus the reviewer's own token."""

    def __init__(self) -> None:
        self.reviewer_jwt = service_account_jwt(ServiceAccount("openbao", "openbao"))
        self.valid: dict[str, tuple[ServiceAccount, str]] = {}  # token -> (account, audience)
        self.reviews: list[str] = []  # "authenticated" / "unauthenticated" / "401", in order
        self._lock = threading.Lock()

    def issue(self, account: ServiceAccount, audience: str = API_SERVER_AUDIENCE) -> str:
        """A token for `account` and `audience`, valid until revoked."""
        token = service_account_jwt(account, audience)
        with self._lock:
            self.valid[token] = (account, audience)
        return token

    def revoke(self, token: str) -> None:
        with self._lock:
            self.valid.pop(token, None)

    def review(self, authorization: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """The API server's answer (status code, JSON) to one TokenReview request."""
        if authorization != f"Bearer {self.reviewer_jwt}":
            self.reviews.append("401")
            return 401, {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "message": "Unauthorized",
                "reason": "Unauthorized",
                "code": 401,
            }
        spec = body.get("spec") or {}
        with self._lock:
            account, audience = self.valid.get(str(spec.get("token", "")), (None, ""))
        # As the API server: the token must carry one of the audiences asked for (default: its own).
        audiences = spec.get("audiences") or [API_SERVER_AUDIENCE]
        review = {"kind": "TokenReview", "apiVersion": API_VERSION, "metadata": {}, "spec": spec}
        if account is None or audience not in audiences:
            self.reviews.append("unauthenticated")
            review["status"] = {"authenticated": False, "error": "invalid bearer token"}
        else:
            self.reviews.append("authenticated")
            review["status"] = {
                "authenticated": True,
                "user": {
                    "username": account.username,
                    "uid": account.uid,
                    "groups": [
                        "system:serviceaccounts",
                        f"system:serviceaccounts:{account.namespace}",
                        "system:authenticated",
                    ],
                },
                "audiences": [audience],
            }
        return 201, review


def _handler(api: TokenReviewAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path.split("?")[0] != REVIEW_PATH:
                status, answer = 404, {"kind": "Status", "code": 404, "message": "not found"}
            else:
                status, answer = api.review(self.headers.get("Authorization", ""), body)
            payload = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the tests look at api.reviews

    return Handler


@contextmanager
def tokenreview_server() -> Iterator[tuple[TokenReviewAPI, str]]:
    """A running stand-in on 127.0.0.1 (free port); yields the API and its base URL."""
    api = TokenReviewAPI()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
