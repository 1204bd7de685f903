"""Requests per second and p50/p99 of GET /api/auth/me under gunicorn (2 workers, 16 connections).

Three runs on the same OpenBao and PostgreSQL: (a) the app as shipped (secrets cached by the
Vault client), (b) VAULT_CACHE_TTL=0 (every token check reads Vault), (c) a baseline whose JWT
key comes from an environment variable. Target: (a) within 5 % of (c).
"""

from __future__ import annotations

import os
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
    put_secret,
    read_secret,
    wait_until_ready,
)
from tests.harness.openbao import running_openbao  # noqa: E402
from tests.harness.postgres import PostgresCluster, find_pg_bin  # noqa: E402
from tests.harness.servers import free_port, wait_for_port  # noqa: E402

CONNECTIONS = 16
WARMUP_SECONDS = 2.0
MEASURE_SECONDS = float(os.environ.get("BENCH_SECONDS", "8"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


@dataclass
class Result:
    name: str
    requests: int
    errors: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def line(self) -> str:
        return (
            f"{self.name:<34} {self.rate:8.1f} req/s   p50 {self.percentile(0.50):6.2f} ms"
            f"   p99 {self.percentile(0.99):6.2f} ms   errors {self.errors}"
        )


def start(env: dict[str, str], target: str, logdir: Path, name: str) -> Gunicorn:
    """gunicorn with the production config and 2 workers on a free loopback port."""
    port = free_port()
    env = {**env, "GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": "2"}
    env["PYTHONPATH"] = f"{BACKEND}{os.pathsep}{ROOT}"
    argv = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", target]
    with (logdir / f"{name}.log").open("wb") as out:
        proc = subprocess.Popen(argv, cwd=BACKEND, env=env, stdout=out, stderr=out)
    server = Gunicorn(port, logdir / f"{name}.log", proc, env)
    wait_for_port(port, timeout=30)
    wait_until_ready(server)
    return server


def load(url: str, cookies: dict[str, str], name: str) -> Result:
    """CONNECTIONS threads, each on one keep-alive connection, for a fixed time after warm-up."""
    latencies: list[list[float]] = [[] for _ in range(CONNECTIONS)]
    errors = [0] * CONNECTIONS
    begin = time.monotonic() + WARMUP_SECONDS
    end = begin + MEASURE_SECONDS

    def worker(index: int) -> None:
        session = requests.Session()
        session.cookies.update(cookies)
        while (now := time.monotonic()) < end:
            started = time.perf_counter()
            ok = session.get(f"{url}/api/auth/me", timeout=10).status_code == 200
            elapsed = time.perf_counter() - started
            if now >= begin:
                latencies[index].append(elapsed)
                errors[index] += 0 if ok else 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=MEASURE_SECONDS + WARMUP_SECONDS + 30)
    merged = [x for series in latencies for x in series]
    return Result(name, len(merged), sum(errors), MEASURE_SECONDS, merged)


def login(url: str, password: str) -> dict[str, str]:
    session = requests.Session()
    response = session.post(
        f"{url}/api/auth/login", json={"username": "admin", "password": password}, timeout=10
    )
    response.raise_for_status()
    return {"access_token_cookie": session.cookies["access_token_cookie"]}


def run_variant(name: str, env: dict[str, str], target: str, logdir: Path, password: str) -> Result:
    server = start(env, target, logdir, name.split()[0])
    try:
        return load(server.url, login(server.url, password), name)
    finally:
        server.stop()


def summary(app: list[Result], baseline: list[Result]) -> str:
    """Median over rounds of (a) against (c)."""
    rate_a = statistics.median(r.rate for r in app)
    rate_c = statistics.median(r.rate for r in baseline)
    p50_a = statistics.median(r.percentile(0.5) for r in app)
    p50_c = statistics.median(r.percentile(0.5) for r in baseline)
    return (
        f"median over {len(app)} rounds: (a) {rate_a:.1f} req/s, (c) {rate_c:.1f} req/s, "
        f"(a)/(c) = {rate_a / rate_c:.3f}; p50 (a) {p50_a:.2f} ms, (c) {p50_c:.2f} ms"
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
            print(
                f"GET /api/auth/me, gunicorn 2 workers (gthread), {CONNECTIONS} connections, "
                f"{MEASURE_SECONDS:.0f} s each (logs in {logdir})",
                flush=True,
            )
            # (a) and (c) alternate over several rounds: on a small machine the noise between two
            # runs is larger than the difference being measured.
            order = [variants[1]] + [variants[i] for _ in range(ROUNDS) for i in (0, 2)]
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
