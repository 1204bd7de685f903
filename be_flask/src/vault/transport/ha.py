"""An hvac adapter that tries Vault nodes in order, last good node first, with short timeouts.

A node is skipped on a connection error, a timeout, 503 (sealed) or 429 (standby): the same
signals Vault's own clients use to move on. Idempotent reads (GET) get a few more rounds
over all nodes with a doubling pause; writes (login, renew) get one round so they are never
sent twice by us. A timeout ends the retries, so a frozen node costs one timeout per node,
not one per round. The class keeps a count of HTTP attempts so tests and benchmarks can see
how many requests really left the process.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

import hvac.exceptions
import requests
from hvac.adapters import JSONAdapter

log = logging.getLogger(__name__)

# Errors after which the next node (or a later round) may succeed.
FAILOVER_ERRORS: tuple[type[BaseException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    hvac.exceptions.VaultDown,
    hvac.exceptions.RateLimitExceeded,
    hvac.exceptions.BadGateway,
)


class HAAdapter(JSONAdapter):
    """JSONAdapter over several base URLs; one shared requests.Session per process."""

    def __init__(
        self,
        addresses: tuple[str, ...],
        *,
        timeout: tuple[float, float],
        verify: bool | str = True,
        cert: tuple[str, str] | None = None,
        read_retries: int = 2,
        retry_delay: float = 0.2,
    ) -> None:
        session = requests.Session()
        session.verify, session.cert = verify, cert
        super().__init__(base_uri=addresses[0], timeout=timeout, session=session)
        self._kwargs.update(verify=verify, cert=cert)
        self.addresses = addresses
        # One plain adapter per node, all on the same session (one connection pool).
        self._nodes = [
            JSONAdapter(
                base_uri=address, timeout=timeout, session=session, verify=verify, cert=cert
            )
            for address in addresses
        ]
        self.read_retries = read_retries
        self.retry_delay = retry_delay
        self._preferred = 0
        self._sent_lock = threading.Lock()
        self.requests_sent = 0
        # The process's Vault token. hvac's own `token` stays None so a caller can send a
        # different one (a wrapping token to unwrap) in the X-Vault-Token header.
        self.vault_token: str | None = None

    @property
    def current_address(self) -> str:
        """The node tried first: the last one that answered."""
        return self.addresses[self._preferred]

    def _node_order(self) -> list[int]:
        first = self._preferred
        return [first] + [i for i in range(len(self.addresses)) if i != first]

    def _count(self) -> None:
        with self._sent_lock:
            self.requests_sent += 1

    def _send_once(
        self, index: int, method: str, url: str, headers: dict[str, str], **kw: Any
    ) -> Any:
        self._count()
        return self._nodes[index].request(method, url, headers=headers, **kw)

    def request(
        self, method: str, url: str, headers: dict[str, str] | None = None, **kw: Any
    ) -> Any:
        """Send to the preferred node, then the others; retry idempotent reads a few rounds."""
        rounds = 1 + (self.read_retries if method.lower() in ("get", "list") else 0)
        headers = dict(headers or {})
        if self.vault_token:
            headers.setdefault("X-Vault-Token", self.vault_token)
        last_error: BaseException | None = None
        for round_number in range(rounds):
            if isinstance(last_error, requests.Timeout):
                break  # a frozen node already cost a full timeout: don't multiply it
            if round_number:
                pause = self.retry_delay * 2 ** (round_number - 1)
                time.sleep(pause * (1 + random.random() / 4))
            for index in self._node_order():
                try:
                    response = self._send_once(index, method, url, headers, **kw)
                except FAILOVER_ERRORS as error:
                    last_error = error
                    log.debug("vault node %s failed: %s", self.addresses[index], describe(error))
                    continue
                self._preferred = index
                return response
        assert last_error is not None
        raise last_error


def describe(error: BaseException) -> str:
    """A short, secret-free reason for logs and status(): 'sealed', 'timeout', ..."""
    if isinstance(error, hvac.exceptions.VaultDown):
        return "sealed or unavailable (503)"
    if isinstance(error, hvac.exceptions.RateLimitExceeded):
        return "standby or rate limited (429)"
    if isinstance(error, hvac.exceptions.BadGateway):
        return "bad gateway (502)"
    if isinstance(error, hvac.exceptions.InternalServerError):
        return "internal server error (500)"
    if isinstance(error, requests.exceptions.SSLError):
        return "TLS handshake or certificate verification failed"
    if isinstance(error, requests.Timeout):
        return "timeout"
    if isinstance(error, requests.ConnectionError):
        return "connection refused or unreachable"
    if isinstance(error, hvac.exceptions.VaultError):
        return f"{type(error).__name__}: {error.args[0] if error.args else ''}"[:200]
    return type(error).__name__
