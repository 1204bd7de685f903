"""One table: GET /api/auth/me and POST /api/auth/login against a bare Flask + PyJWT floor.

Everything real: a private PostgreSQL cluster (tests/harness/postgres.py, scram password auth),
OpenBao (tests/harness/openbao.py, init-vault.sh), Redis on 127.0.0.1:6379 for rate limits when it
answers, gunicorn with be_flask/gunicorn.conf.py and 2 workers, JSON request logs at INFO.
All servers start first and stay up; rounds of load are interleaved between them (the order
rotates each round), so that the machine's drift hits every variant alike, and each ratio to the
bare endpoint is taken within its own round.

Variants (rows):
  bare            Flask + PyJWT verifying the same HS256 cookie (iss, aud, exp): the floor
  /me             the backend as shipped (key from Vault through the client's cache)
  /me, env key    the backend with the JWT key from an environment variable (no Vault)
  login           POST /api/auth/login (argon2id verify + session cookies), limits on
Then: bare argon2id verify at the parameters in use, login overhead over it, RSS per worker and
its growth over BENCH_MEMORY_REQUESTS /me requests, the Vault client's share of a worker's
memory, and create_app() time with Vault up, refused and silent.

Environment: BENCH_SECONDS (per round and variant, 8), BENCH_ROUNDS (3),
BENCH_MEMORY_REQUESTS (100000), BENCH_THREADS (gunicorn threads, the config's default if unset).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "be_flask"), str(ROOT)]

from tests.harness.app import (  # noqa: E402
    BACKEND,
    Gunicorn,
    gunicorn_env,
    launch_gunicorn,
    publish_database,
    read_secret,
)
from tests.harness.openbao import OpenBao, running_openbao  # noqa: E402
from tests.harness.postgres import PostgresCluster, find_pg_bin  # noqa: E402
from tests.harness.servers import free_port  # noqa: E402

CONNECTIONS = 16
LOGIN_CONNECTIONS = 4
WRK_THREADS = 2
WARMUP_SECONDS = 3.0
SECONDS = float(os.environ.get("BENCH_SECONDS", "8"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
MEMORY_REQUESTS = int(os.environ.get("BENCH_MEMORY_REQUESTS", "100000"))
WRK_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


@dataclass
class Sample:
    rate: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_ms: float


@dataclass
class Variant:
    name: str
    server: Gunicorn
    path: str
    connections: int = CONNECTIONS
    headers: dict[str, str] = field(default_factory=dict)
    script: Path | None = None  # wrk Lua script (POST bodies)
    samples: list[Sample] = field(default_factory=list)
    rss_mib: float = 0.0
    baseline: str = "bare"  # the row its ratio is taken to, round by round

    def median(self, metric: str) -> float:
        return statistics.median(getattr(s, metric) for s in self.samples)


def wrk(variant: Variant, seconds: float) -> Sample:
    """One wrk run against the variant; CPU of its gunicorn (master and workers) per request."""
    argv = ["wrk", f"-t{WRK_THREADS}", f"-c{variant.connections}", f"-d{max(1, round(seconds))}s"]
    argv += ["--latency", "--timeout", "10s"]
    for name, value in variant.headers.items():
        argv += ["-H", f"{name}: {value}"]
    if variant.script is not None:
        argv += ["-s", str(variant.script)]
    before = cpu_seconds(variant.server.proc.pid)
    done = subprocess.run(
        [*argv, variant.server.url + variant.path],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    cpu = cpu_seconds(variant.server.proc.pid) - before
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return parse_wrk(done.stdout, cpu)


def parse_wrk(output: str, cpu: float) -> Sample:
    """Requests/sec, 50 % and 99 % latencies and every non-2xx or socket error of wrk."""

    def latency_ms(percent: str) -> float:
        found = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        if found is None:
            raise RuntimeError(f"no {percent}% latency in wrk output:\n{output}")
        return float(found[1]) * WRK_UNITS_MS[found[2]]

    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    count = re.search(r"^\s+(\d+) requests in", output, re.MULTILINE)
    if rate is None or count is None:
        raise RuntimeError(f"no Requests/sec in wrk output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sockets = re.search(r"Socket errors:(.*)", output)
    errors = int(non_2xx[1]) if non_2xx else 0
    errors += sum(int(n) for n in re.findall(r"\d+", sockets[1])) if sockets else 0
    requests_done = int(count[1])
    cpu_ms = cpu * 1000 / max(1, requests_done)
    return Sample(float(rate[1]), latency_ms("50"), latency_ms("99"), requests_done, errors, cpu_ms)


def workers(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def cpu_seconds(pid: int) -> float:
    """User and system CPU so far of a process and its children (gunicorn's workers)."""
    total = 0
    for each in [pid, *workers(pid)]:
        # Fields after the ")" of the command name: utime and stime are the 12th and 13th.
        fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def rss_per_worker_mib(pid: int) -> list[float]:
    sizes = []
    for each in workers(pid):
        status = Path(f"/proc/{each}/status").read_text()
        found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        sizes.append(int(found[1]) / 1024 if found else 0.0)
    return sizes


def session_cookie(url: str, password: str) -> str:
    response = requests.post(
        f"{url}/api/auth/login", json={"username": "admin", "password": password}, timeout=10
    )
    response.raise_for_status()
    return str(response.cookies["access_token_cookie"])


def login_script(workdir: Path, password: str) -> Path:
    """wrk Lua: every request a JSON login of admin (file mode 0600: it holds the password)."""
    body = json.dumps({"username": "admin", "password": password})
    path = workdir / "login.lua"
    path.touch(mode=0o600)
    path.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(body)}\n"
    )
    return path


def run_rounds(variants: list[Variant]) -> None:
    """ROUNDS rounds; each round runs every variant once, the order rotated by one per round."""
    for variant in variants:
        wrk(variant, WARMUP_SECONDS)
        variant.rss_mib = statistics.mean(rss_per_worker_mib(variant.server.proc.pid))
    for number in range(ROUNDS):
        order = variants[number % len(variants) :] + variants[: number % len(variants)]
        for variant in order:
            variant.samples.append(wrk(variant, SECONDS))
        print(
            f"  round {number + 1}: "
            + ", ".join(f"{v.name} {v.samples[-1].rate:.0f}/s" for v in variants),
            flush=True,
        )


def table(variants: list[Variant]) -> str:
    """The one table: medians over rounds; ratio = median of the per-round req/s ratios to the
    row's baseline (bare for /me, bare login for login), measured in the same round."""
    head = (
        f"{'variant':<16} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/req':>11} "
        f"{'RSS MiB/worker':>15} {'errors':>7}  {'ratio to':<11} {'ratio (per round)':<24}"
    )
    by_name = {variant.name: variant for variant in variants}
    lines = [head, "-" * len(head)]
    for variant in variants:
        bare = by_name[variant.baseline]
        ratios = [s.rate / b.rate for s, b in zip(variant.samples, bare.samples, strict=True)]
        per_round = " ".join(f"{r:.2f}" for r in ratios)
        errors = sum(s.errors for s in variant.samples)
        lines.append(
            f"{variant.name:<16} {variant.median('rate'):8.1f} {variant.median('p50_ms'):8.2f} "
            f"{variant.median('p99_ms'):8.2f} {variant.median('cpu_ms'):11.3f} "
            f"{variant.rss_mib:15.1f} {errors:7d}  {variant.baseline:<11} "
            f"{statistics.median(ratios):.3f} ({per_round})"
        )
    return "\n".join(lines)


def argon2_verify_cpu_ms(password: str) -> tuple[str, float]:
    """CPU per bare argon2id verify at the backend's parameters (this process, one thread)."""
    from argon2 import PasswordHasher, Type

    from src.settings import DEFAULTS

    hasher = PasswordHasher(
        time_cost=int(DEFAULTS["ARGON2_TIME_COST"]),
        memory_cost=int(DEFAULTS["ARGON2_MEMORY_COST"]),
        parallelism=int(DEFAULTS["ARGON2_PARALLELISM"]),
        type=Type.ID,
    )
    hashed = hasher.hash(password)
    hasher.verify(hashed, password)
    count, started = 20, time.process_time()
    for _ in range(count):
        hasher.verify(hashed, password)
    per = (time.process_time() - started) * 1000 / count
    params = (
        f"argon2id m={hasher.memory_cost} KiB ({hasher.memory_cost / 1024:.0f} MiB), "
        f"t={hasher.time_cost}, p={hasher.parallelism}"
    )
    return params, per


def memory_growth(variant: Variant) -> str:
    """RSS per worker after warm-up, then after MEMORY_REQUESTS more requests of the variant."""
    before = rss_per_worker_mib(variant.server.proc.pid)
    served = 0
    while served < MEMORY_REQUESTS:
        left = MEMORY_REQUESTS - served
        rate = variant.median("rate") if variant.samples else 500.0
        sample = wrk(variant, max(2.0, min(60.0, left / rate * 1.05)))
        served += sample.requests
    after = rss_per_worker_mib(variant.server.proc.pid)
    growth = [(a - b) / b * 100 for a, b in zip(after, before, strict=True)]
    return (
        f"RSS per worker after warm-up: {', '.join(f'{b:.1f}' for b in before)} MiB; "
        f"after {served} more {variant.name} requests: {', '.join(f'{a:.1f}' for a in after)} "
        f"MiB; growth {', '.join(f'{g:+.1f} %' for g in growth)} (target < 5 %)"
    )


# Run in a fresh interpreter: what the Vault client adds to a worker already holding the rest.
VAULT_SHARE = """
import re, sys
from pathlib import Path
def rss():
    text = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\\s+(\\d+) kB", text)[1]) / 1024
import flask, sqlalchemy, psycopg, flask_jwt_extended, flask_limiter, prometheus_client, argon2
import src.settings, src.models, src.logging_setup
before = rss()
from src.vault_client import VaultClient
client = VaultClient.from_env()
client.get_app_secrets()
client.get_database_config()
print(f"{rss() - before:.1f} {before:.1f}")
"""

# create_app() and the first GET /api/ready, timed in a fresh interpreter (imports apart).
STARTUP = """
import time
started = time.perf_counter()
from src.be import create_app
imported = time.perf_counter()
app = create_app()
status = app.test_client().get("/api/ready").status_code
done = time.perf_counter()
print(f"{imported - started:.3f} {done - imported:.3f} {status}")
"""


def run_python(code: str, env: dict[str, str], timeout: float = 120) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=BACKEND,
        env={**env, "PYTHONPATH": str(BACKEND)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        return f"failed: {done.stderr.strip()[-300:]}"
    return done.stdout.strip().splitlines()[-1]


def startup_lines(env: dict[str, str]) -> list[str]:
    """create_app() to ready with Vault up, with its port refused and with it never answering."""
    lines = []
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)  # accepts connections (kernel backlog) and never answers
        cases = {
            "Vault up": env["VAULT_ADDR"],
            "Vault refused": f"http://127.0.0.1:{free_port()}",
            "Vault silent": f"http://127.0.0.1:{silent.getsockname()[1]}",
        }
        for name, addr in cases.items():
            started = time.perf_counter()
            out = run_python(STARTUP, {**env, "VAULT_ADDR": addr, "LOG_LEVEL": "ERROR"})
            wall = time.perf_counter() - started
            if out.startswith("failed"):
                lines.append(f"startup, {name}: {out} after {wall:.2f} s")
                continue
            imports, create, status = out.split()
            lines.append(
                f"startup, {name}: imports {float(imports):.2f} s, create_app()+GET /api/ready "
                f"{float(create):.2f} s (ready answered {status}; whole process {wall:.2f} s)"
            )
    return lines


def vault_share_line(env: dict[str, str]) -> str:
    out = run_python(VAULT_SHARE, env)
    if out.startswith("failed"):
        return f"Vault client's memory: {out}"
    share, rest = out.split()
    return (
        f"Vault client's share of a worker: {float(share):.1f} MiB (hvac, requests, client, "
        f"login and two cached secrets) on top of {float(rest):.1f} MiB (target < 10 MB)"
    )


def start_servers(
    stack: ExitStack, openbao: OpenBao, logdir: Path, workdir: Path
) -> tuple[list[Variant], str]:
    """The four servers (bare, /me, /me env key, login), all up before any load."""
    app_secrets = read_secret(openbao, "app/flask")
    password, key = app_secrets["admin_password"], app_secrets["jwt_secret"]
    redis = redis_url()
    env = gunicorn_env(
        openbao,
        LOG_LEVEL="INFO",
        RATELIMIT_ENABLED="true",
        REDIS_URL=redis,
        RATELIMIT_KEY_PREFIX=f"bench-{secrets.token_hex(4)}",
        # The login row measures the login path, limits included, not the 429 answer.
        LOGIN_LIMITS="1000000/minute",
        PYTHONPATH=f"{BACKEND}{os.pathsep}{ROOT}",
    )
    if os.environ.get("BENCH_THREADS"):
        env["GUNICORN_THREADS"] = os.environ["BENCH_THREADS"]

    def start(name: str, target: str, extra: dict[str, str] | None = None) -> Gunicorn:
        server = launch_gunicorn({**env, **(extra or {})}, logdir, name, 2, target)
        stack.callback(server.stop)
        return server

    bare = start("bare", "bench.bare_app:create_app()", {"BENCH_JWT_SECRET": key})
    me = start("me", "src.be:create_app()")
    me_env = start("me-env", "bench.baseline_app:create_app()", {"BENCH_JWT_SECRET": key})
    login = start("login", "src.be:create_app()")
    cookie = {"Cookie": f"access_token_cookie={session_cookie(me.url, password)}"}
    env_cookie = {"Cookie": f"access_token_cookie={session_cookie(me_env.url, password)}"}
    script = login_script(workdir, password)
    variants = [
        Variant("bare", bare, "/api/auth/me", headers=cookie),
        Variant("/me", me, "/api/auth/me", headers=cookie),
        Variant("/me, env key", me_env, "/api/auth/me", headers=env_cookie),
        Variant("bare login", bare, "/api/auth/login", LOGIN_CONNECTIONS, script=script),
        Variant("login", login, "/api/auth/login", LOGIN_CONNECTIONS, script=script),
    ]
    variants[3].baseline = variants[4].baseline = "bare login"
    storage = f"Redis {redis}" if redis else "memory (Redis not answering)"
    return variants, f"rate limits on, storage {storage}"


def redis_url() -> str:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as connection:
            connection.sendall(b"PING\r\n")
            if connection.recv(16).startswith(b"+PONG"):
                return "redis://127.0.0.1:6379/0"
    except OSError:
        pass
    return ""


def machine() -> str:
    load = Path("/proc/loadavg").read_text().split()[:3]
    return f"{os.cpu_count()} CPUs, load average {' '.join(load)}"


def backing_services(stack: ExitStack, name: str) -> tuple[PostgresCluster, OpenBao]:
    """A private PostgreSQL cluster and OpenBao (init-vault.sh), both gone when the stack
    closes, with the backend's database published in Vault at secret/database/postgres."""
    bindir = find_pg_bin()
    if bindir is None:
        raise SystemExit("PostgreSQL binaries not found")
    cluster = PostgresCluster(bindir=bindir, root=Path(tempfile.mkdtemp(prefix="bench-pg-")))
    stack.callback(shutil.rmtree, cluster.root, True)
    cluster.start()
    stack.callback(cluster.stop)
    openbao = stack.enter_context(running_openbao())
    publish_database(openbao, cluster, name)
    return cluster, openbao


def main() -> None:
    """Start PostgreSQL, OpenBao and the servers, then measure and print."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found (Debian package `wrk`): cannot run bench_perf")
    workdir = Path(tempfile.mkdtemp(prefix="bench-perf-"))
    logdir = workdir / "logs"
    logdir.mkdir()
    with ExitStack() as stack:
        cluster, openbao = backing_services(stack, "bench")
        variants, limits = start_servers(stack, openbao, logdir, workdir)
        print(
            f"bench_perf {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {machine()}; "
            f"gunicorn 2 workers ({variants[1].server.env.get('GUNICORN_THREADS', 'default')} "
            f"threads), PostgreSQL {cluster.host}:{cluster.port} (scram), OpenBao "
            f"{openbao.addr}, {limits}, JSON logs at INFO; wrk {WRK_THREADS} threads, "
            f"{CONNECTIONS} connections ({LOGIN_CONNECTIONS} for login), {ROUNDS} rounds of "
            f"{SECONDS:.0f} s, interleaved (logs in {logdir})",
            flush=True,
        )
        run_rounds(variants)
        print(table(variants), flush=True)
        params, argon2_ms = argon2_verify_cpu_ms(secrets.token_urlsafe(16))
        login_ms, bare_ms = variants[4].median("cpu_ms"), variants[3].median("cpu_ms")
        print(
            f"login: {params}; argon2 verify alone, one thread of this process: "
            f"{argon2_ms:.1f} ms CPU ({1000 / argon2_ms:.1f}/s per core); under the same load "
            f"in gunicorn: bare login {bare_ms:.1f} ms CPU, login {login_ms:.1f} ms CPU -> "
            f"{1000 / login_ms:.1f} logins/s per core; the login path adds "
            f"{(login_ms / bare_ms - 1) * 100:+.1f} % CPU over the bare verify endpoint "
            f"(target < 10 %)",
            flush=True,
        )
        print(memory_growth(variants[1]), flush=True)
        env = {**variants[1].server.env}
        print(vault_share_line(env), flush=True)
        for line in startup_lines(env):
            print(line, flush=True)
        print(f"end: {machine()}", flush=True)
    (workdir / "login.lua").unlink(missing_ok=True)
    shutil.rmtree(cluster.root, ignore_errors=True)


if __name__ == "__main__":
    main()
