"""The fault matrix (issue 25): each dependency fails once under load; nothing acknowledged is lost.

One `./setup.sh --local` stack (OpenBao, PostgreSQL in dynamic mode, Redis, gunicorn with two
workers, Apache) serves four client threads (tests/harness/chaos.py) for each row; one fault
is injected in the middle, then the end state is checked against the acknowledged writes and
the row's promise (VAULT_INTEGRATION.md, "What the stack survives"). `make chaos` runs it and
writes the table of figures into that section; tests/deploy/test_docs.py checks it is there.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from src.stuck_connections import STUCK_AFTER_SECONDS
from tests.deploy.test_setup_local import (
    LocalStack,
    assert_no_secret_in_stack_logs,
    login,
    new_local_stack,
    stack_secret_values,
)
from tests.harness.chaos import (
    NEEDS_DATABASE,
    PASSWORD,
    REQUEST_TIMEOUT,
    Answer,
    Client,
    Ledger,
)
from tests.harness.postgres import find_pg_bin
from tests.harness.servers import missing_server

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "VAULT_INTEGRATION.md"
TABLE_START = "<!-- chaos table: written by `make chaos` (tests/chaos/test_fault_matrix.py) -->"
TABLE_END = "<!-- end of chaos table -->"
CLIENTS = 4
WARM_UP = 3.0  # seconds of load before the fault
FROZEN = 10.0  # seconds a SIGSTOPped (or blocked) server stays so
RECOVERY_BOUND = 5.0  # service resumes within this long after the dependency is back
AUDIT_TMPFS_SIZE = "32m"


@dataclass
class Fault:
    """When a fault began and ended (monotonic), and what was seen meanwhile."""

    began: float = 0.0
    ended: float = 0.0
    ready_answers: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class Row:
    dependency: str
    fault: str
    inject: Callable[[LocalStack, Fault], None]
    # "gapless": no request may fail; "database": requests needing it may answer 503 with
    # Retry-After until RECOVERY_BOUND after it is back, never 500, never past the timeout.
    promise: str = "gapless"

    @property
    def id(self) -> str:
        return f"{self.dependency}: {self.fault}"


@dataclass
class Figures:
    """One row of the table."""

    row: Row
    requests: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    first_success_after: float = 0.0
    slowest: float = 0.0
    slowest_kind: str = ""
    acknowledged: int = 0
    lost: int = 0
    twice: int = 0
    violations: list[str] = field(default_factory=list)
    redis_warnings: int = 0  # backend log lines about Redis failing, during the row

    def failed_text(self) -> str:
        if not self.failed:
            return "0"
        return ", ".join(f"{kind} {n}" for kind, n in sorted(self.failed.items()))


RESULTS: dict[str, Figures] = {}


# --- the stack ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    """A local stack whose audit log lives on a small tmpfs of its own (to be filled up)."""
    started = time.monotonic()
    with new_local_stack() as local:
        logs = local.data_dir / "vault" / "logs"
        logs.mkdir(parents=True)
        mounted = subprocess.run(
            [
                "mount",
                "-t",
                "tmpfs",
                "-o",
                f"size={AUDIT_TMPFS_SIZE},mode=0755",
                "tmpfs",
                str(logs),
            ],
            capture_output=True,
            check=False,
        )
        if mounted.returncode != 0:  # not root: a skip here, a failure under CI
            missing_server(f"cannot mount a tmpfs for the audit log: {mounted.stderr!r}")
        try:
            local.up()
            yield local
            write_table(time.monotonic() - started)
        finally:
            local.run("--stop", timeout=60)
            subprocess.run(["umount", "-l", str(logs)], check=False)


def pidfile(stack: LocalStack, name: str) -> int:
    return int((stack.data_dir / "run" / f"{name}.pid").read_text().strip())


def postmaster_pid(stack: LocalStack) -> int:
    return int((stack.data_dir / "postgres" / "postmaster.pid").read_text().split()[0])


def pg_ctl(stack: LocalStack, *args: str) -> None:
    bindir = find_pg_bin()
    assert bindir is not None
    options = (
        f"-p {stack.env['PG_PORT']} -k {stack.data_dir / 'run' / 'postgres'} "
        "-c listen_addresses=127.0.0.1"
    )
    argv = [str(bindir / "pg_ctl"), "-D", str(stack.data_dir / "postgres"), "-w", "-t", "60"]
    argv += ["-l", str(stack.data_dir / "logs" / "postgres.log"), "-o", options, *args]
    subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True)


def wait_until(check: Callable[[], bool], limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {limit} s"
        time.sleep(0.1)


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z"


def probe_ready(stack: LocalStack, fault: Fault, stop: threading.Event) -> None:
    """What /api/ready says during the fault (at most a few answers a second)."""
    while not stop.is_set():
        with contextlib.suppress(requests.RequestException):
            answer = requests.get(f"{stack.url}/api/ready", timeout=REQUEST_TIMEOUT)
            fault.ready_answers.append((answer.status_code, answer.text[:200]))
        stop.wait(0.3)


@contextlib.contextmanager
def probing_ready(stack: LocalStack, fault: Fault) -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=probe_ready, args=(stack, fault, stop))
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=REQUEST_TIMEOUT + 5)


# --- the faults --------------------------------------------------------------------------------


def postgres_killed(stack: LocalStack, fault: Fault) -> None:
    """SIGKILL of the postmaster (its backends follow), then started again."""
    pid = postmaster_pid(stack)
    with probing_ready(stack, fault):
        fault.began = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: process_gone(pid), 10, "postmaster gone")
        time.sleep(3)  # down for a while, under load
        pg_ctl(stack, "start")
        fault.ended = time.monotonic()


def postgres_frozen(stack: LocalStack, fault: Fault) -> None:
    pid = postmaster_pid(stack)
    frozen = [pid, *children(pid)]
    fault.began = time.monotonic()
    for each in frozen:
        os.kill(each, signal.SIGSTOP)
    try:
        time.sleep(FROZEN)
    finally:
        for each in frozen:
            os.kill(each, signal.SIGCONT)
    fault.ended = time.monotonic()


def postgres_fast_restart(stack: LocalStack, fault: Fault) -> None:
    with probing_ready(stack, fault):
        fault.began = time.monotonic()
        pg_ctl(stack, "restart", "-m", "fast")
        fault.ended = time.monotonic()


def redis_killed(stack: LocalStack, fault: Fault) -> None:
    """SIGKILL, then started again from its config: empty (it keeps nothing on disk)."""
    pid = pidfile(stack, "redis")
    fault.began = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: process_gone(pid), 10, "redis-server gone")
    time.sleep(3)
    conf, run = stack.data_dir / "redis" / "redis.conf", stack.data_dir / "run"
    log = stack.data_dir / "logs" / "redis.log"
    started = subprocess.run(
        ["redis-server", str(conf), "--daemonize", "yes",
         "--pidfile", str(run / "redis-daemon.pid"), "--logfile", str(log)],
        capture_output=True,
        check=False,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    wait_until(lambda: (run / "redis-daemon.pid").exists(), 10, "redis-server's pid file")
    (run / "redis.pid").write_text((run / "redis-daemon.pid").read_text())
    wait_until(lambda: port_answers(int(stack.env["REDIS_PORT"])), 10, "redis-server back")
    fault.ended = time.monotonic()


def redis_frozen(stack: LocalStack, fault: Fault) -> None:
    pid = pidfile(stack, "redis")
    fault.began = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(FROZEN)
    finally:
        os.kill(pid, signal.SIGCONT)
    fault.ended = time.monotonic()


def audit_device_full(stack: LocalStack, fault: Fault) -> None:
    """The only audit device's file system filled up: Vault refuses every request it cannot
    audit. Every worker is made to read from Vault then ("Refresh secret cache")."""
    filler = stack.data_dir / "vault" / "logs" / "filler"
    admin = login(stack.url, "admin", stack.admin_password())
    fault.began = time.monotonic()
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={filler}", "bs=1M"], capture_output=True, check=False
    )
    try:
        assert vault_refuses(stack), "Vault still answers with its audit device full"
        refreshed = admin.post(
            f"{stack.url}/api/admin/vault/refresh",
            headers={"X-CSRF-TOKEN": admin.cookies["csrf_access_token"]},
            timeout=REQUEST_TIMEOUT,
        )
        assert refreshed.status_code == 200, refreshed.text
        time.sleep(FROZEN)
    finally:
        filler.unlink()
    fault.ended = time.monotonic()


def vault_refuses(stack: LocalStack) -> bool:
    token = stack.operator_token()
    answer = requests.get(
        f"http://127.0.0.1:{stack.env['VAULT_PORT']}/v1/auth/token/lookup-self",
        headers={"X-Vault-Token": token},
        timeout=5,
    )
    return answer.status_code >= 500


def apache_graceful(config_changed: bool) -> Callable[[LocalStack, Fault], None]:
    """`apachectl graceful` (SIGUSR1): children finish their requests, the parent keeps its
    listening socket. With a changed configuration too (a comment added to the members file)."""

    def inject(stack: LocalStack, fault: Fault) -> None:
        members = stack.data_dir / "run" / "apache" / "balancer-members.conf"
        if config_changed:
            with members.open("a") as conf:
                conf.write(f"# changed for the fault matrix at {time.time():.0f}\n")
        fault.began = time.monotonic()
        os.kill(pidfile(stack, "apache"), signal.SIGUSR1)
        time.sleep(2)
        fault.ended = time.monotonic()

    return inject


def restart_app(stack: LocalStack, fault: Fault) -> None:
    fault.began = time.monotonic()
    done = stack.run("--restart-app")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    fault.ended = time.monotonic()


def worker_killed(stack: LocalStack, fault: Fault) -> None:
    master = pidfile(stack, "backend-1")
    workers = children(master)
    assert len(workers) == 2, workers
    fault.began = time.monotonic()
    os.kill(workers[0], signal.SIGKILL)
    wait_until(lambda: len(set(children(master)) - {workers[0]}) == 2, 30, "a new worker")
    fault.ended = time.monotonic()


def rolling_restart(stack: LocalStack, fault: Fault) -> None:
    """./setup.sh --restart-app with --replicas 2 (the stack was moved to two first)."""
    restart_app(stack, fault)


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def port_answers(port: int) -> bool:
    import socket

    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


ROWS = [
    Row("PostgreSQL", "SIGKILL, then started again", postgres_killed, "database"),
    Row("PostgreSQL", f"SIGSTOP {FROZEN:g} s, then SIGCONT", postgres_frozen, "database"),
    Row("PostgreSQL", "pg_ctl restart -m fast", postgres_fast_restart, "database"),
    Row("Redis", "SIGKILL, then started again (empty)", redis_killed),
    Row("Redis", f"SIGSTOP {FROZEN:g} s, then SIGCONT", redis_frozen),
    Row("OpenBao", f"its only audit device full for {FROZEN:g} s", audit_device_full),
    Row("Apache", "graceful reload (`apachectl graceful`)", apache_graceful(False)),
    Row("Apache", "graceful restart on a changed configuration", apache_graceful(True)),
    Row("backend", "./setup.sh --restart-app", restart_app),
    Row("backend", "one of two gunicorn workers SIGKILLed", worker_killed, "in flight"),
    Row("backend", "--replicas 2: ./setup.sh --restart-app (rolling)", rolling_restart),
]


# --- one row -----------------------------------------------------------------------------------


def thread_users(stack: LocalStack, generation: int) -> list[str]:
    """One user per client thread, created by the admin before the load starts."""
    admin = login(stack.url, "admin", stack.admin_password())
    names = []
    for index in range(CLIENTS):
        name = f"chaosuser{generation}x{index}"
        created = admin.post(
            f"{stack.url}/api/users",
            json={"username": name, "password": PASSWORD, "role": "user"},
            headers={"X-CSRF-TOKEN": admin.cookies["csrf_access_token"]},
            timeout=REQUEST_TIMEOUT,
        )
        assert created.status_code == 201, created.text
        names.append(name)
    return names


def run_row(stack: LocalStack, row: Row, generation: int) -> tuple[Figures, Ledger, Fault]:
    ledger, stop, fault = Ledger(), threading.Event(), Fault()
    admin_password = stack.admin_password()
    clients = [
        Client(stack.url, i, generation, admin_password, ledger, stop, username=name)
        for i, name in enumerate(thread_users(stack, generation))
    ]
    logs = backend_logs(stack)
    threads = [threading.Thread(target=c.run) for c in clients]
    for thread in threads:
        thread.start()
    try:
        time.sleep(WARM_UP)
        row.inject(stack, fault)
        # Until every kind that needs the database has succeeded again (bounded), then a while.
        deadline = time.monotonic() + RECOVERY_BOUND + 10
        while time.monotonic() < deadline and not recovered(ledger, fault):
            time.sleep(0.2)
        time.sleep(2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=REQUEST_TIMEOUT + 10)
    result = figures(stack, row, ledger, fault)
    # Five wrong passwords per minute per address (LOGIN_LIMITS); a row spans at most two
    # fixed windows. Documented degradation without Redis: each process counts on its own,
    # and a Redis restarted empty starts counting again.
    processes = 1 + (row.dependency == "Redis") * (2 * replicas(stack) + 1)
    allowed = 5 * 2 * processes
    for client in clients:
        if client.wrong_checked > allowed:
            result.violations.append(
                f"client {client.index}: {client.wrong_checked} wrong passwords checked "
                f"(limit with its degradation: {allowed})"
            )
    lines = "".join(new_lines(path, offset, REDIS_WARNINGS) for path, offset in logs.items())
    result.redis_warnings = lines.count("\n")
    print(Counter(message_of(line) for line in lines.splitlines()).most_common(8))
    return result, ledger, fault


# Lines saying Redis failed: ours (login counters, session cache) and flask-limiter's own.
REDIS_WARNINGS = ("storage down", "Redis failed", "not reset in Redis", "unreachable", "Swallowing")


def message_of(line: str) -> str:
    try:
        return str(json.loads(line).get("message", line))[:100]
    except ValueError:
        return line[:100]


def replicas(stack: LocalStack) -> int:
    return len(list((stack.data_dir / "run").glob("backend-*.pid")))


def backend_logs(stack: LocalStack) -> dict[Path, int]:
    """Each replica's log and its size now."""
    return {p: p.stat().st_size for p in (stack.data_dir / "logs").glob("backend-*.log")}


def new_lines(path: Path, offset: int, words: tuple[str, ...]) -> str:
    """The lines written since `offset` that contain one of `words` (one per line)."""
    with path.open("rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    return "".join(line + "\n" for line in text.splitlines() if any(w in line for w in words))


def recovered(ledger: Ledger, fault: Fault) -> bool:
    with ledger.lock:
        seen = {a.kind for a in ledger.answers if a.sent >= fault.ended and a.ok}
    return {"me", "create user"} <= seen


def figures(stack: LocalStack, row: Row, ledger: Ledger, fault: Fault) -> Figures:
    result = Figures(row, requests=len(ledger.answers), violations=list(ledger.violations))
    for answer in ledger.answers:
        if not answer.ok:
            result.failed[f"{answer.kind} {answer.status or answer.detail}"] += 1
        if answer.took > result.slowest:
            result.slowest, result.slowest_kind = answer.took, answer.kind
    # Served again: the first success sent after the fault ended, or the last failure's
    # answer if later (seconds after the end).
    done = [a.sent + a.took for a in ledger.answers if a.ok and a.sent >= fault.ended]
    failed = [a.sent + a.took for a in ledger.answers if not a.ok]
    resumed = max(min(done, default=fault.ended), max(failed, default=fault.ended))
    result.first_success_after = max(0.0, resumed - fault.ended)
    state = users_now(stack)
    for user in ledger.users:
        result.acknowledged += user.acknowledged
        result.twice += user.duplicates
        now = state.get(user.username)
        reached = 0 if now is None else 1 + (now[0] == "admin") + (not now[1])
        if reached < user.acknowledged:
            result.lost += 1
    return result


def users_now(stack: LocalStack) -> dict[str, tuple[str, bool]]:
    admin = login(stack.url, "admin", stack.admin_password())
    listed = admin.get(f"{stack.url}/api/users", timeout=REQUEST_TIMEOUT)
    assert listed.status_code == 200
    return {u["username"]: (u["role"], u["enabled"]) for u in listed.json()["users"]}


# --- the promises --------------------------------------------------------------------------------


def unexpected(ledger: Ledger, fault: Fault) -> list[Answer]:
    """Failures a database outage does not excuse: outside its window, a 500, no Retry-After,
    no answer at all, or a request that does not need the database."""
    window_end = fault.ended + RECOVERY_BOUND
    return [
        a
        for a in ledger.answers
        if not a.ok
        and not (
            a.kind in NEEDS_DATABASE
            and a.status == 503
            and a.retry_after
            and fault.began - 1 <= a.sent <= window_end
        )
    ]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_fault(stack: LocalStack, row: Row) -> None:
    generation = len(RESULTS) + 1
    if row.inject is rolling_restart:
        out = stack.up("--replicas", "2")
        assert "balancing over 2 backend replica(s)" in out
    result, ledger, fault = run_row(stack, row, generation)
    RESULTS[row.id] = result
    print(f"\n{row.id}: {result}")
    assert result.acknowledged > 0 and result.requests > 100, result
    assert (result.lost, result.twice) == (0, 0), result
    assert result.violations == [], result.violations
    assert result.slowest < REQUEST_TIMEOUT, result
    if row.dependency == "Redis":
        # Nothing waits on Redis longer than its bound; its loss is said once, not per request.
        assert result.slowest < 1.0, result
        # Per worker at most: our two (login counters, session cache), flask-limiter's two.
        assert result.redis_warnings <= 4 * 2, result
    if row.promise == "gapless":
        assert result.failed == Counter(), [a for a in ledger.answers if not a.ok][:10]
        return
    if row.promise == "in flight":
        # Only what the killed worker was executing: no answer can come from a dead process
        # (GETs are resent by the client, as browsers do; a POST's outcome is unknown to it).
        broken = [a for a in ledger.answers if not a.ok]
        assert all(a.sent <= fault.began and a.status == 0 for a in broken), broken
        assert len(broken) <= 4, broken  # gunicorn's threads per worker
        return
    assert unexpected(ledger, fault) == [], unexpected(ledger, fault)[:10]
    # A frozen PostgreSQL holds a request no longer than the watchdog's bound (and a little).
    assert result.slowest < STUCK_AFTER_SECONDS + 3, result
    assert result.first_success_after <= RECOVERY_BOUND, result
    # /api/ready said why while PostgreSQL was away (down for 3 s at least when killed).
    down = [text for status, text in fault.ready_answers if status == 503]
    assert all("database unreachable" in text for text in down), fault.ready_answers
    assert down or row.inject is not postgres_killed, fault.ready_answers


def test_no_secret_value_in_any_log_of_the_stack(stack: LocalStack) -> None:
    """After every row (run last): no secret value in any log the stack wrote meanwhile."""
    assert RESULTS, "run with the fault rows"
    assert_no_secret_in_stack_logs(stack, stack_secret_values(stack))


# --- the table ---------------------------------------------------------------------------------


def write_table(seconds: float) -> None:
    """Into VAULT_INTEGRATION.md between the markers, when `make chaos` asks (CHAOS_TABLE=1)."""
    if os.environ.get("CHAOS_TABLE") != "1" or len(RESULTS) != len(ROWS):
        return
    lines = [
        "| dependency | fault | requests | failed (kind status: count) | first success after"
        " the fault ended | slowest answer | acknowledged writes | lost | applied twice"
        " | rules broken | Redis failure log lines |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in ROWS:
        r = RESULTS[row.id]
        lines.append(
            f"| {row.dependency} | {row.fault} | {r.requests} | {r.failed_text()} "
            f"| {r.first_success_after:.1f} s | {r.slowest:.1f} s | {r.acknowledged} "
            f"| {r.lost} | {r.twice} | {len(r.violations)} "
            f"| {r.redis_warnings if row.dependency == 'Redis' else '-'} |"
        )
    lines.append("")
    lines.append(
        f"The whole matrix, the stack's start included, took {seconds / 60:.1f} minutes"
        f" ({time.strftime('%Y-%m-%d')}, load average {os.getloadavg()[0]:.1f} at the end)."
    )
    text = DOC.read_text()
    start, end = text.index(TABLE_START), text.index(TABLE_END)
    DOC.write_text(text[: start + len(TABLE_START)] + "\n" + "\n".join(lines) + "\n" + text[end:])
