"""What users do while a dependency fails (issue 25): the load of the fault matrix, and what it saw.

Four client threads, each a browser of its own (its own loopback source address, so that no
thread spends another's login budget), mix what users do: /api/auth/me, logins (some with a
wrong password, from an "attacker" address of the thread's own), refreshes, a logout whose
old cookies are then replayed (they must be refused), and admin writes that must persist:
create a user, make it an admin, disable it. Every answer is recorded with its time; every
acknowledged write is recorded in a ledger that is checked against the end state.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter

# No request may wait longer than this for its answer (the bound of every fault's hang).
REQUEST_TIMEOUT = 15.0
# Kinds of requests and the statuses that are their normal answers.
EXPECTED: dict[str, set[int]] = {
    "health": {200},
    "me": {200},
    "refresh": {200},
    "login": {200},
    "wrong login": {401, 429},  # 429 once the address's budget is spent: the limit working
    "revoked replay": {401},
    "logout": {200},
    "create user": {201},
    "make admin": {200},
    "disable": {200},
}
# Kinds that need the database (the rest: health only).
NEEDS_DATABASE = frozenset(EXPECTED) - {"health"}
PASSWORD = "chaos-" + secrets.token_urlsafe(18)


class SourceAddressAdapter(HTTPAdapter):
    """Connections from one loopback address: the front sees one client per thread."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def browser(address: str) -> requests.Session:
    session = requests.Session()
    adapter = SourceAddressAdapter(address)
    session.mount("http://", adapter)
    return session


@dataclass
class Answer:
    """One request's kind, when it was sent and answered (monotonic), and its status (0: none)."""

    kind: str
    sent: float
    took: float
    status: int
    detail: str = ""
    retry_after: bool = False

    @property
    def ok(self) -> bool:
        return self.status in EXPECTED[self.kind]


@dataclass
class UserRecord:
    """One user this load created: how far its writes got, acknowledged and attempted."""

    username: str
    user_id: int | None = None
    acknowledged: int = 0  # 1 created, 2 made admin, 3 disabled
    attempted: int = 0
    duplicates: int = 0  # a fresh username answered 409: the create was applied twice


@dataclass
class Ledger:
    answers: list[Answer] = field(default_factory=list)
    users: list[UserRecord] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, answer: Answer) -> None:
        with self.lock:
            self.answers.append(answer)


@dataclass
class Client:
    """One thread's browser: an admin session for writes, a user session, an attacker address."""

    url: str
    index: int
    generation: int  # a fresh set of addresses per row: login budgets are per minute
    admin_password: str
    ledger: Ledger
    stop: threading.Event
    username: str = ""
    wrong_checked: int = 0  # wrong passwords the backend checked (answered 401, not 429)

    def address(self, which: int) -> str:
        return f"127.{10 + which}.{self.generation % 250}.{self.index + 2}"

    def run(self) -> None:
        admin = browser(self.address(0))
        self.login(admin, "admin", self.admin_password, record=False)
        user = browser(self.address(0))
        self.login(user, self.username, PASSWORD, record=False)
        attacker = browser(self.address(1))
        record: UserRecord | None = None
        cycle = 0
        deadline = time.monotonic() + 120  # bounded whatever the test does
        while not self.stop.is_set() and time.monotonic() < deadline:
            cycle += 1
            self.get(user, "me", "/api/auth/me")
            self.get(user, "health", "/api/health")
            if cycle % 4 == 0:
                self.post(user, "refresh", "/api/auth/refresh", csrf="csrf_refresh_token")
            if cycle % 5 == 0:
                wrong = self.credentials("admin")
                if self.post(attacker, "wrong login", "/api/auth/login", wrong)[0] == 401:
                    self.wrong_checked += 1  # not limited: the password was checked
            if cycle % 6 == 0:
                user = self.new_session_and_replay_the_old(user)
            record = self.write(admin, record)
            time.sleep(0.05)  # busy users, not a flood that starves a 2-core machine

    def credentials(self, username: str, password: str = "not the password") -> dict[str, str]:  # noqa: S107
        return {"username": username, "password": password}

    def login(self, session: requests.Session, username: str, password: str, record: bool) -> int:
        body = self.credentials(username, password)
        status = self.post(session, "login" if record else "setup", "/api/auth/login", body)[0]
        if not record and status != 200:
            raise RuntimeError(f"chaos client {self.index}: {username} cannot log in: {status}")
        return status

    def new_session_and_replay_the_old(self, old: requests.Session) -> requests.Session:
        """Log in anew, log the old session out, and replay its cookies: must be refused."""
        fresh = browser(self.address(0))
        if self.login(fresh, self.username, PASSWORD, record=True) != 200:
            return old
        copy = dict(old.cookies)
        if self.post(old, "logout", "/api/auth/logout", csrf="csrf_refresh_token")[0] != 200:
            return fresh
        thief = browser(self.address(0))
        thief.cookies.update(copy)
        status = self.get(thief, "revoked replay", "/api/auth/me")
        if status == 200:
            self.ledger.violations.append(f"client {self.index}: a logged-out session was accepted")
        return fresh

    def write(self, admin: requests.Session, record: UserRecord | None) -> UserRecord | None:
        """The next step of the current user's life: create, make admin, disable."""
        if record is None or record.attempted >= 3 or record.acknowledged < record.attempted:
            # A step that got no acknowledgement is never resent (its outcome is unknown):
            # the next user starts, and the end state tells what happened.
            record = UserRecord(f"chaos{secrets.token_hex(5)}")
            with self.ledger.lock:
                self.ledger.users.append(record)
        step = record.acknowledged + 1
        record.attempted = step
        if step == 1:
            body = {"username": record.username, "password": PASSWORD, "role": "user"}
            status, reply = self.post(admin, "create user", "/api/users", body, "csrf_access_token")
            if status == 201:
                record.user_id = int(reply["user"]["id"])
            record.duplicates += status == 409
        else:
            kind = "make admin" if step == 2 else "disable"
            change = {"role": "admin"} if step == 2 else {"enabled": False}
            status, _ = self.patch(admin, kind, f"/api/users/{record.user_id}", change)
        if status in (200, 201):
            record.acknowledged = step
        return record

    # --- one request, recorded ---------------------------------------------------------

    def get(self, session: requests.Session, kind: str, path: str) -> int:
        def send() -> requests.Response:
            try:
                return session.get(self.url + path, timeout=REQUEST_TIMEOUT)
            except requests.ConnectionError:
                # A kept-alive connection closed by the front without an answer: browsers
                # send an idempotent request again by themselves, and so does this client.
                return session.get(self.url + path, timeout=REQUEST_TIMEOUT)

        return self.send(kind, send)[0]

    def post(
        self, session: requests.Session, kind: str, path: str, body: Any = None, csrf: str = ""
    ) -> tuple[int, Any]:
        """Never resent: whether a POST that got no answer was applied is unknown."""
        headers = {"X-CSRF-TOKEN": session.cookies.get(csrf, "")} if csrf else {}
        url = self.url + path
        return self.send(
            kind, lambda: session.post(url, json=body, headers=headers, timeout=REQUEST_TIMEOUT)
        )

    def patch(self, admin: requests.Session, kind: str, path: str, body: Any) -> tuple[int, Any]:
        headers = {"X-CSRF-TOKEN": admin.cookies.get("csrf_access_token", "")}
        url = self.url + path
        return self.send(
            kind, lambda: admin.patch(url, json=body, headers=headers, timeout=REQUEST_TIMEOUT)
        )

    def send(self, kind: str, request: Callable[[], requests.Response]) -> tuple[int, Any]:
        sent = time.monotonic()
        try:
            response = request()
        except requests.RequestException as error:
            self.record(Answer(kind, sent, time.monotonic() - sent, 0, type(error).__name__))
            return 0, None
        status = response.status_code
        detail = response.text[:120] if status >= 400 else ""
        took = time.monotonic() - sent
        self.record(Answer(kind, sent, took, status, detail, "Retry-After" in response.headers))
        try:
            return status, response.json()
        except ValueError:
            return status, None

    def record(self, answer: Answer) -> None:
        if answer.kind in EXPECTED:
            self.ledger.add(answer)
