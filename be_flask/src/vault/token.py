"""The token lifecycle: renew at a third of the TTL left, re-login when renewal cannot help.

Renewal is lazy: it happens when a Vault call needs the token, not in a background thread.
Why: the app only reads KV secrets (no leases that die with the token), gunicorn forks
workers (threads do not survive fork, and a thread started before fork is a trap), and a
token that expired while nobody needed it costs exactly one login at the next cache refresh.
The hot path (a cache hit) never touches the token at all.

Single-flight: whoever finds the token due takes the lock; threads that were waiting
compare the generation they saw with the current one and reuse the fresh token instead of
logging in again. So however many threads need a token at once, one login or renewal runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import hvac.exceptions

from .approle import LoginResult, login_result
from .transport.ha import HAAdapter

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_RENEW_MARGIN = 300.0  # seconds: renew at least this long before expiry (if TTL allows)


def renewal_margin(ttl: float) -> float:
    """Seconds before expiry at which to act: a third of the TTL, at least min(5 min, TTL/2)."""
    return max(ttl / 3, min(MAX_RENEW_MARGIN, ttl / 2))


@dataclass(frozen=True)
class TokenState:
    """One token as we know it; replaced as a whole, never mutated."""

    token: str
    accessor: str
    generation: int
    obtained_at: float  # monotonic time of the login or last renewal
    ttl: float  # seconds left at obtained_at
    creation_ttl: float  # TTL the login gave: renewal timing is measured against it
    renewable: bool
    capped: bool  # the last renewal hit max TTL: the next step must be a re-login
    login_wall_time: float
    renew_wall_time: float | None = None

    @property
    def expires_at(self) -> float:
        return self.obtained_at + self.ttl

    def action_due(self, now: float) -> str | None:
        """None while the token is fine; else 'renew' or 'login'."""
        if self.creation_ttl <= 0:
            return None  # a non-expiring token (root): nothing to do
        if now < self.expires_at - renewal_margin(self.creation_ttl):
            return None
        if now >= self.expires_at or not self.renewable or self.capped:
            return "login"
        return "renew"


class LoginMethod(Protocol):
    """AppRoleLogin or KubernetesLogin: the one seam where the auth methods differ."""

    def login(self) -> LoginResult: ...


class TokenManager:
    """Holds the process's token and keeps it valid."""

    def __init__(
        self,
        login_method: LoginMethod,
        adapter: HAAdapter,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.login_method = login_method
        self.adapter = adapter
        self._clock = clock
        self._lock = threading.Lock()
        self._generation = 0
        self.state: TokenState | None = None
        self.logins = 0
        self.renewals = 0

    def current(self) -> TokenState:
        """A token valid now; logs in or renews first when due (one thread does it)."""
        state = self.state
        if state is not None and state.action_due(self._clock()) is None:
            return state
        return self._refresh(state.generation if state else self._generation)

    def still_valid(self, state: TokenState) -> bool:
        """Ask Vault whether the token lives (after a 403: revoked token or policy denial?)."""
        try:
            self.adapter.get("/v1/auth/token/lookup-self", headers={"X-Vault-Token": state.token})
        except hvac.exceptions.Forbidden:
            return False
        return True

    def call(self, request: Callable[[], T]) -> T:
        """request() with a valid token; once more after a new login if Vault says 403 because
        the token was revoked from outside (a 403 to a live token is the policy's: raised)."""
        state = self.current()
        try:
            return request()
        except hvac.exceptions.Forbidden:
            if self.still_valid(state):
                raise
            self.token_rejected(state.generation)
        self.current()
        return request()

    def token_rejected(self, generation: int) -> None:
        """Vault said 403 to this token (revoked from outside): forget it so we log in again."""
        with self._lock:
            if self.state is not None and self.state.generation == generation:
                log.warning("token %s rejected by Vault: logging in again", self.state.accessor)
                self.state = None
                self.adapter.vault_token = None
                self._generation += 1

    def _refresh(self, seen_generation: int) -> TokenState:
        with self._lock:
            state = self.state
            now = self._clock()
            fresh = state is not None and state.action_due(now) is None
            if state is not None and fresh and state.generation != seen_generation:
                return state  # another thread did the work while we waited
            if state is not None and state.action_due(now) == "renew":
                renewed = self._try_renew(state)
                if renewed is not None:
                    return renewed
            return self._store(self.login_method.login(), previous=None)

    def _try_renew(self, state: TokenState) -> TokenState | None:
        """Renew; None when renewal was refused for a reason a login can fix."""
        log.info("renewing token %s", state.accessor)
        try:
            response: dict[str, Any] = self.adapter.post("/v1/auth/token/renew-self", json={})
        except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest) as error:
            reason = type(error).__name__
            log.warning("renewing token %s: refused (%s), logging in again", state.accessor, reason)
            return None
        result = login_result(response["auth"])
        # Vault caps the TTL at the token's max TTL and warns: such a renewal is the last.
        capped = result.ttl < state.creation_ttl - 1 or any(
            "max" in str(w).lower() for w in response.get("warnings") or ()
        )
        log.info(
            "renewing token %s: ok (ttl %ss%s)",
            state.accessor,
            int(result.ttl),
            ", capped at max TTL, next step is a login" if capped else "",
        )
        return self._store(result, previous=state, capped=capped)

    def _store(
        self, result: LoginResult, *, previous: TokenState | None, capped: bool = False
    ) -> TokenState:
        self._generation += 1
        if previous is None:
            self.logins += 1
        else:
            self.renewals += 1
        self.state = TokenState(
            token=result.token,
            accessor=result.accessor,
            generation=self._generation,
            obtained_at=self._clock(),
            ttl=result.ttl,
            creation_ttl=previous.creation_ttl if previous else result.ttl,
            renewable=result.renewable,
            capped=capped,
            login_wall_time=previous.login_wall_time if previous else time.time(),
            renew_wall_time=time.time() if previous else None,
        )
        self.adapter.vault_token = result.token
        return self.state
