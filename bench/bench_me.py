"""Requests per second and p50/p99 of GET /api/auth/me under gunicorn (2 workers, 16 connections).

Three runs on the same OpenBao and PostgreSQL: (a) the app as shipped (secrets cached by the
Vault client), (b) VAULT_CACHE_TTL=0 (every token check reads Vault), (c) a baseline whose JWT
key comes from an environment variable. Target: (a) within 5 % of (c).
The load comes from wrk when it is on PATH (Debian package `wrk`): a Python load generator
takes much of the 2 cores away from gunicorn and drowns the (a)/(c) difference in noise.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "be_flask"), str(ROOT)]

from tests.harness.app import (  # noqa: E402
    BACKEND,
    Gunicorn,
    gunicorn_env,
    launch_gunicorn,
    put_secret,
    read_secret,
)
from tests.harness.openbao import running_openbao  # noqa: E402
from tests.harness.postgres import PostgresCluster, find_pg_bin  # noqa: E402

CONNECTIONS = 16
WRK_THREADS = 2
WARMUP_SECONDS = 2.0
MEASURE_SECONDS = float(os.environ.get("BENCH_SECONDS", "8"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


@dataclass
class Result:
    name: str
    requests: int
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_ms: float = 0.0  # CPU of gunicorn (master and workers) per request

    def line(self) -> str:
        return (
            f"{self.name:<34} {self.rate:8.1f} req/s   p50 {self.p50_ms:6.2f} ms"
            f"   p99 {self.p99_ms:6.2f} ms   CPU {self.cpu_ms:5.2f} ms/req   errors {self.errors}"
        )


def start(env: dict[str, str], target: str, logdir: Path, name: str) -> Gunicorn:
    """gunicorn with the production config and 2 workers (the baseline app is under ROOT)."""
    env = {**env, "PYTHONPATH": f"{BACKEND}{os.pathsep}{ROOT}"}
    return launch_gunicorn(env, logdir, name, workers=2, target=target)


def load(url: str, cookies: dict[str, str], name: str, seconds: float) -> Result:
    """wrk when installed, else Python threads (which take CPU from the server they measure)."""
    wrk = shutil.which("wrk")
    if wrk:
        return load_wrk(wrk, url, cookies, name, seconds)
    return load_threads(url, cookies, name, seconds)


def load_wrk(wrk: str, url: str, cookies: dict[str, str], name: str, seconds: float) -> Result:
    """WRK_THREADS threads over CONNECTIONS keep-alive connections."""
    cookie = "; ".join(f"{key}={value}" for key, value in cookies.items())
    argv = [wrk, f"-t{WRK_THREADS}", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s"]
    argv += ["--latency", "-H", f"Cookie: {cookie}", f"{url}/api/auth/me"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return parse_wrk(done.stdout, name)


WRK_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(output: str, name: str) -> Result:
    """Requests/sec, the 50 % and 99 % latencies and every non-2xx or socket error of wrk."""

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
    p50, p99 = latency_ms("50"), latency_ms("99")
    return Result(name, int(count[1]), float(rate[1]), p50, p99, errors)


def load_threads(url: str, cookies: dict[str, str], name: str, seconds: float) -> Result:
    """CONNECTIONS threads, each on one keep-alive connection, for a fixed time."""
    latencies: list[list[float]] = [[] for _ in range(CONNECTIONS)]
    errors = [0] * CONNECTIONS
    end = time.monotonic() + seconds

    def worker(index: int) -> None:
        session = requests.Session()
        session.cookies.update(cookies)
        while time.monotonic() < end:
            started = time.perf_counter()
            ok = session.get(f"{url}/api/auth/me", timeout=10).status_code == 200
            latencies[index].append(time.perf_counter() - started)
            errors[index] += 0 if ok else 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 30)
    ordered = sorted(x for series in latencies for x in series)

    def percentile_ms(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    p50, p99 = percentile_ms(0.50), percentile_ms(0.99)
    return Result(name, len(ordered), len(ordered) / seconds, p50, p99, sum(errors))


def cpu_seconds(pid: int) -> float:
    """User and system CPU so far of a process and its children (gunicorn's workers)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    total = 0
    for each in [pid, *map(int, children)]:
        # Fields after the ")" of the command name: utime and stime are the 12th and 13th.
        fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def login(url: str, password: str) -> dict[str, str]:
    session = requests.Session()
    response = session.post(
        f"{url}/api/auth/login", json={"username": "admin", "password": password}, timeout=10
    )
    response.raise_for_status()
    return {"access_token_cookie": session.cookies["access_token_cookie"]}


def run_variant(name: str, env: dict[str, str], target: str, logdir: Path, password: str) -> Result:
    """Start the variant, warm it up, then measure its rate, latency and CPU per request."""
    server = start(env, target, logdir, name.split()[0])
    try:
        cookies = login(server.url, password)
        load(server.url, cookies, name, WARMUP_SECONDS)
        cpu_before = cpu_seconds(server.proc.pid)
        result = load(server.url, cookies, name, MEASURE_SECONDS)
        result.cpu_ms = (cpu_seconds(server.proc.pid) - cpu_before) * 1000 / result.requests
        return result
    finally:
        server.stop()


def summary(app: list[Result], baseline: list[Result]) -> str:
    """Medians over rounds of (a) against (c), and the round-by-round ratios."""

    def median(results: list[Result], metric: str) -> float:
        return statistics.median(getattr(r, metric) for r in results)

    # (a) and (c) of one round ran back to back: their ratio cancels most of the machine's drift,
    # and the spread of the ratios says how much of any difference is noise.
    pairs = list(zip(app, baseline, strict=True))
    ratios = [a.rate / c.rate for a, c in pairs]
    cpu_ratios = [a.cpu_ms / c.cpu_ms for a, c in pairs]
    rate_a, rate_c = median(app, "rate"), median(baseline, "rate")
    return (
        f"(a)/(c) req/s per round: {' '.join(f'{r:.2f}' for r in ratios)}; "
        f"median {statistics.median(ratios):.3f}\n"
        f"(a)/(c) CPU per request per round: {' '.join(f'{r:.2f}' for r in cpu_ratios)}; "
        f"median {statistics.median(cpu_ratios):.3f}\n"
        f"median over {len(app)} rounds: (a) {rate_a:.1f} req/s, (c) {rate_c:.1f} req/s "
        f"(ratio of medians {rate_a / rate_c:.3f}); p50 (a) {median(app, 'p50_ms'):.2f} ms, "
        f"(c) {median(baseline, 'p50_ms'):.2f} ms; CPU (a) {median(app, 'cpu_ms'):.3f} ms/req, "
        f"(c) {median(baseline, 'cpu_ms'):.3f} ms/req"
    )


def main() -> None:
    """Start OpenBao and PostgreSQL, then measure the three variants one after the other."""
    bindir = find_pg_bin()
    if bindir is None:
        raise SystemExit("PostgreSQL binaries not found: cannot run bench_me")
    logdir = Path(tempfile.mkdtemp(prefix="bench-me-"))
    cluster = PostgresCluster(bindir=bindir, root=Path(tempfile.mkdtemp(prefix="bench-pg-")))
    cluster.start()
    try:
        with running_openbao(dev=True) as server:
            database, username, password = cluster.create_app_database("bench")
            location = {"host": cluster.host, "port": str(cluster.port), "database": database}
            put_secret(
                server,
                "database/postgres",
                {**location, "username": username, "password": password},
            )
            secrets = read_secret(server, "app/flask")
            env = gunicorn_env(server, LOG_LEVEL="WARNING", RATELIMIT_ENABLED="false")
            variants = [
                ("(a) app, Vault cache", {**env}, "src.be:create_app()"),
                ("(b) VAULT_CACHE_TTL=0", {**env, "VAULT_CACHE_TTL": "0"}, "src.be:create_app()"),
                (
                    "(c) baseline, key from env",
                    {**env, "BENCH_JWT_SECRET": secrets["jwt_secret"]},
                    "bench.baseline_app:create_app()",
                ),
            ]
            generator = "wrk" if shutil.which("wrk") else "Python threads (wrk not on PATH)"
            print(
                f"GET /api/auth/me, gunicorn 2 workers (gthread), {CONNECTIONS} connections "
                f"from {generator}, {MEASURE_SECONDS:.0f} s each (logs in {logdir})",
                flush=True,
            )
            # (a) and (c) alternate over several rounds: on a small machine the noise between two
            # runs is larger than the difference being measured. Every other round runs (c)
            # first, so that a drift of the machine does not always favour the same variant.
            pairs = [(0, 2) if n % 2 == 0 else (2, 0) for n in range(ROUNDS)]
            order = [variants[1]] + [variants[i] for pair in pairs for i in pair]
            results: dict[str, list[Result]] = {}
            for name, variant_env, target in order:
                result = run_variant(name, variant_env, target, logdir, secrets["admin_password"])
                results.setdefault(name, []).append(result)
                print(result.line(), flush=True)
            print(summary(results[variants[0][0]], results[variants[2][0]]), flush=True)
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


if __name__ == "__main__":
    main()
