"""A backoff gate: during a Vault outage, at most one attempt per retry window per process.

While Vault answers, the gate is open and costs nothing. After a failure it closes until
`next_attempt_at`; the window starts at `initial` seconds and doubles to `maximum`, plus up
to 25 % jitter on top (never less than the schedule, so the schedule is an upper bound on the
number of attempts, and gunicorn workers that failed together do not retry together). When the
window ends, exactly one caller wins `try_begin()` and probes Vault; the others keep serving
cached values without waiting. The state change is logged once, not once per request.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


def backoff_delay(failures: int, initial: float, maximum: float) -> float:
    """Seconds to wait after `failures` consecutive failures (1 -> initial, doubling, capped)."""
    if failures <= 0:
        return 0.0
    return min(maximum, initial * 2 ** min(failures - 1, 62))


@dataclass(frozen=True)
class GateState:
    """An immutable snapshot: readers never take the lock."""

    failures: int = 0
    next_attempt_at: float = 0.0
    reason: str | None = None
    since: float | None = None  # wall-clock start of the outage


class BackoffGate:
    """Decides whether this call may contact Vault now."""

    def __init__(
        self,
        initial: float = 1.0,
        maximum: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.initial, self.maximum = initial, maximum
        self._clock, self._jitter = clock, jitter
        self._lock = threading.Lock()
        self.state = GateState()

    @property
    def in_outage(self) -> bool:
        """True between a failure and the next success."""
        return self.state.failures > 0

    def seconds_until_retry(self) -> float:
        """How long until the next probe is allowed (0 when open)."""
        return max(0.0, self.state.next_attempt_at - self._clock())

    def try_begin(self) -> bool:
        """Claim the right to contact Vault now; during an outage only one caller per window."""
        state = self.state
        if state.failures == 0:
            return True
        now = self._clock()
        if now < state.next_attempt_at:
            return False
        with self._lock:
            state = self.state
            if state.failures and now < state.next_attempt_at:
                return False
            # Reserve the window now so concurrent callers do not probe too.
            self.state = GateState(
                state.failures, now + self._window(state.failures), state.reason, state.since
            )
            return True

    def record_success(self) -> None:
        """Vault answered: open the gate and say so once."""
        if self.state.failures == 0:
            return
        with self._lock:
            previous = self.state
            self.state = GateState()
        if previous.failures:
            log.warning("vault reachable again after %d failed attempts", previous.failures)

    def record_failure(self, reason: str) -> float:
        """Vault did not answer: close the gate for the next window; return its length."""
        with self._lock:
            previous = self.state
            failures = previous.failures + 1
            window = self._window(failures)
            since = previous.since if previous.since is not None else time.time()
            self.state = GateState(failures, self._clock() + window, reason, since)
        if previous.failures == 0 or previous.reason != reason:
            log.warning(
                "vault unavailable (%s): serving last good values, retry in %.1fs", reason, window
            )
        else:
            log.debug("vault still unavailable (%s): next retry in %.1fs", reason, window)
        return window

    def _window(self, failures: int) -> float:
        return backoff_delay(failures, self.initial, self.maximum) * (1 + self._jitter() / 4)
