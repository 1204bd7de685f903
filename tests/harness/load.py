"""Client threads sending idempotent GETs through the front while a replica dies (issue 14)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import requests


@dataclass
class Load:
    """Client threads sending idempotent GETs through the front until told to stop."""

    url: str
    cookies: dict[str, str]
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        session = requests.Session()
        session.cookies.update(self.cookies)
        paths = ["/api/health", "/api/auth/me", "/api/ready"]
        deadline = time.monotonic() + 45  # bounded whatever the test does
        i = 0
        while not self.stop.is_set() and time.monotonic() < deadline:
            path = paths[i % len(paths)]
            i += 1
            self.outcomes[self.get(session, path)] += 1
            # Paced like busy users (~50 requests/s each), not a flood that starves the
            # replica being restarted on this 2-core machine.
            time.sleep(0.02)

    def get(self, session: requests.Session, path: str) -> str:
        try:
            try:
                answer = session.get(self.url + path, timeout=10)
            except requests.ConnectionError:
                # Apache closes a kept-alive client connection without an answer when the
                # replica died with the request in flight: the signal for a client to send an
                # idempotent request again, which browsers do by themselves. So does this
                # client, once.
                self.outcomes["resent after the front closed the connection"] += 1
                answer = session.get(self.url + path, timeout=10)
        except requests.RequestException as error:  # no answer, even resent, or too late
            self.failures.append(f"{path}: {error!r} at {time.strftime('%T')}")
            return "failed"
        if answer.status_code != 200:
            said = answer.text[:160]
            self.failures.append(
                f"{path}: HTTP {answer.status_code} {said!r} at {time.strftime('%T')}"
            )
            return "failed"
        return "ok"


def start_threads(
    count: int, target: Callable[..., object], *args: object
) -> list[threading.Thread]:
    """`count` client threads running target(*args), already started."""
    threads = [threading.Thread(target=target, args=args) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads
