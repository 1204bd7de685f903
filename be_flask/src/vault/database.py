"""Dynamic PostgreSQL credentials (VAULT_DB_MODE=dynamic): one lease at a time, kept alive.

Lazy, like the token: the pool asks at each checkout, a monotonic compare while nothing is
due. At 2/3 of the lease the lease is renewed; when renewal is refused, capped by max_ttl,
or the token that owns the lease was replaced by a re-login (revoking a token revokes its
child leases), new credentials are fetched and get a new generation. Connections of an
older generation are retired at checkout, never mid-query, and the old lease is revoked
once its last connection closed. When PostgreSQL refuses a lease's login (its role was dropped:
the lease was revoked, e.g. with the token that owned it) the lease is marked stale and new
credentials are fetched, after a new login if Vault says the token is gone. While Vault is
down the current lease serves until it ends; then VaultUnavailableError (readiness says 503)
until Vault answers again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import hvac.exceptions

from .errors import VaultUnavailableError
from .failures import LOGIN_ERRORS, OUTAGE_ERRORS, failure_reason

if TYPE_CHECKING:
    from .client import VaultClient

log = logging.getLogger(__name__)

RENEW_AT = 2 / 3  # of the lease duration
RETRY_SECONDS = 1.0  # after a failed renewal or fetch while the lease still serves
# At most one fetch per this many seconds for PostgreSQL's refusals: a grant missing from the
# group role refuses every lease, and must not turn each request into a new lease.
REFUSED_REFETCH_SECONDS = 2.0
# Vault answered but gives no credentials (engine not configured, policy): fail closed too.
REFUSALS = (hvac.exceptions.InvalidPath, hvac.exceptions.Forbidden)


@dataclass(frozen=True)
class DatabaseCredentialsLease:
    """One PostgreSQL login handed out by Vault; replaced as a whole, never mutated."""

    lease_id: str
    username: str
    password: str = field(repr=False)
    generation: int
    ttl: float  # seconds the lease had at obtained_at
    obtained_at: float
    renewable: bool
    token_accessor: str | None
    act_at: float  # monotonic: renew (or fetch anew, when `refetch`) from then on
    refetch: bool = False

    @property
    def expires_at(self) -> float:
        return self.obtained_at + self.ttl


class DatabaseCredentials:
    """The process's lease on database/creds/<role> and the connections using each lease."""

    def __init__(self, client: VaultClient, role: str = "flask-app", mount: str = "database"):
        self.client = client
        self.path = f"{mount}/creds/{role}"
        self.lease: DatabaseCredentialsLease | None = None
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._generation = 0
        self._open: Counter[int] = Counter()
        self._retired: dict[int, DatabaseCredentialsLease] = {}
        self.created = self.renewed = self.revoked = 0
        self._refused_at = -REFUSED_REFETCH_SECONDS

    def current(self) -> DatabaseCredentialsLease:
        """A lease usable now; renews or fetches first when due (one thread does it)."""
        lease = self.lease
        now = time.monotonic()
        if lease is not None and now < lease.act_at and self._same_token(lease):
            return lease
        with self._lock:
            lease = self.lease
            now = time.monotonic()
            if lease is not None and now < lease.act_at and self._same_token(lease):
                return lease
            return self._maintain(lease, now)

    def opened(self, generation: int) -> None:
        """A connection logged in with the credentials of this generation."""
        with self._lock:
            self._open[generation] += 1

    def closed(self, generation: int) -> None:
        """A connection closed; revoke a replaced lease when it was its last one."""
        with self._lock:
            self._open[generation] -= 1
            retired = self._retired.get(generation)
            if retired is None or self._open[generation] > 0:
                return
            del self._retired[generation]
        self._revoke_later(retired)

    def refused(self, generation: int, reason: str) -> None:
        """PostgreSQL refused the login of this generation: fetch new credentials at once.

        The connections already open finish what they do; they are retired at their next
        checkout, when the generation has moved on.
        """
        with self._lock:
            lease = self.lease
            now = time.monotonic()
            if lease is None or lease.generation != generation:
                return  # replaced already
            if lease.refetch and now >= lease.act_at:
                return  # being replaced
            if now - self._refused_at < REFUSED_REFETCH_SECONDS:
                return
            self._refused_at = now
            self.last_error = f"PostgreSQL refused lease {lease.lease_id} ({reason})"
            log.warning("database credentials: %s, fetching new", self.last_error)
            self.lease = replace(lease, act_at=now, refetch=True)

    def status(self) -> dict[str, Any]:
        """Lease state for the admin status page (never the password)."""
        lease = self.lease
        now = time.monotonic()
        return {
            "username": lease.username if lease else None,
            "lease_ttl_left": round(max(0.0, lease.expires_at - now), 1) if lease else None,
            "generation": self._generation,
            "created": self.created,
            "renewed": self.renewed,
            "revoked": self.revoked,
            "last_error": self.last_error,
        }

    def _same_token(self, lease: DatabaseCredentialsLease) -> bool:
        state = self.client.tokens.state
        return state is None or state.accessor == lease.token_accessor

    def _maintain(
        self, lease: DatabaseCredentialsLease | None, now: float
    ) -> DatabaseCredentialsLease:
        self.client.check_fork()
        try:
            self.client.tokens.current()
            if lease is not None and not lease.refetch and self._same_token(lease):
                renewed = self._renew(lease)
                if renewed is not None:
                    return renewed
            return self._fetch(lease)
        except (*OUTAGE_ERRORS, *LOGIN_ERRORS, *REFUSALS) as error:
            self.last_error = failure_reason(error)
            if lease is None or now >= lease.expires_at - RETRY_SECONDS:
                raise VaultUnavailableError(
                    f"database credentials lease ended and Vault is unavailable ({self.last_error})"
                ) from None
            log.warning("database credentials: keeping the current lease (%s)", self.last_error)
            self.lease = replace(lease, act_at=now + RETRY_SECONDS)
            return self.lease

    def _renew(self, lease: DatabaseCredentialsLease) -> DatabaseCredentialsLease | None:
        log.info("renewing database lease %s", lease.lease_id)
        try:
            response = self.client.adapter.put(
                f"/v1/sys/leases/renew/{lease.lease_id}", json={"increment": int(lease.ttl)}
            )
        except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest):
            log.warning("renewing database lease %s: refused, fetching new", lease.lease_id)
            return None
        now = time.monotonic()
        ttl = float(response["lease_duration"])
        # Capped by max_ttl: serve the rest, but fetch new credentials well before it ends.
        capped = ttl < lease.ttl - 1
        self.renewed += 1
        log.info("renewing database lease %s: ok (ttl %ss)", lease.lease_id, int(ttl))
        self.lease = replace(
            lease, ttl=ttl, obtained_at=now, act_at=now + ttl * RENEW_AT, refetch=capped
        )
        return self.lease

    def _fetch(self, previous: DatabaseCredentialsLease | None) -> DatabaseCredentialsLease:
        log.info("fetching database credentials from %s", self.path)
        # The token may be gone with the lease (revoked from outside): log in again then.
        response = self.client.tokens.call(lambda: self.client.adapter.get(f"/v1/{self.path}"))
        now = time.monotonic()
        ttl = float(response["lease_duration"])
        self._generation += 1
        token = self.client.tokens.state
        self.lease = DatabaseCredentialsLease(
            lease_id=response["lease_id"],
            username=response["data"]["username"],
            password=response["data"]["password"],
            generation=self._generation,
            ttl=ttl,
            obtained_at=now,
            renewable=bool(response.get("renewable")),
            token_accessor=token.accessor if token else None,
            act_at=now + ttl * RENEW_AT,
        )
        self.created += 1
        log.info(
            "fetching database credentials: ok (lease %s, ttl %ss, generation %d)",
            self.lease.lease_id,
            int(ttl),
            self._generation,
        )
        if previous is not None:
            if self._open[previous.generation] > 0:
                self._retired[previous.generation] = previous
            else:
                self._revoke_later(previous)
        return self.lease

    def _revoke_later(self, lease: DatabaseCredentialsLease) -> None:
        # Off the request thread: a checkout or a closing connection never waits on Vault.
        threading.Thread(target=self._revoke, args=(lease,), daemon=True).start()

    def _revoke(self, lease: DatabaseCredentialsLease) -> None:
        log.info("revoking database lease %s", lease.lease_id)
        try:
            self.client.adapter.put(f"/v1/sys/leases/revoke/{lease.lease_id}", json={})
        except Exception as error:  # it ends at its TTL anyway; never fail a request for it
            log.warning("revoking database lease %s: failed (%s)", lease.lease_id, error)
            return
        self.revoked += 1
        log.info("revoking database lease %s: ok", lease.lease_id)
