"""A dependency that may fail (Redis): said once when it fails and once when it is back, and
left alone for a moment after a failure, so that no request waits on it again at once."""

from __future__ import annotations

import logging
import time


class Outage:
    """One process's view of one dependency: usable now, or paused after a failure."""

    def __init__(self, log: logging.Logger, failing: str, back: str, pause: float = 1.0) -> None:
        self.log = log
        self.failing = failing
        self.back = back
        self.pause = pause
        self.down = False
        self.paused_until = 0.0

    def usable(self) -> bool:
        """False for `pause` seconds after a failure: go without it, without waiting."""
        return time.monotonic() >= self.paused_until

    def failed(self, error: BaseException) -> None:
        self.paused_until = time.monotonic() + self.pause
        if not self.down:  # once per outage, not per request (a race may say it twice)
            self.down = True
            self.log.warning(self.failing, extra={"error": type(error).__name__})

    def answered(self) -> None:
        if self.down:
            self.down = False
            self.log.info(self.back)
