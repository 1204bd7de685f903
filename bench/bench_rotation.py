"""Rotation cost: req/s of GET /api/auth/me with everything rotating every ~10 s vs steady.

One OpenBao and PostgreSQL in dynamic mode (VAULT_DB_MODE=dynamic), gunicorn with 2 workers.
Steady: leases of 1 h, no key rotation. Rotating: leases with max_ttl 10 s (renewed at 2/3,
then replaced and the old one revoked, so a new login every ~9 s per worker) and a new JWT key
every 10 s with an admin refresh. Targets: rotating >= 0.95x steady, no request above 1 s;
the p99 within 1 s of each credential swap (from the audit log) is printed as well.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "be_flask"), str(ROOT)]

from tests.harness.app import gunicorn_env, launch_gunicorn, read_secret  # noqa: E402
from tests.harness.dynamic_db import DynamicSite, dynamic_site  # noqa: E402
from tests.harness.postgres import PostgresCluster, find_pg_bin  # noqa: E402

CONNECTIONS = 8
SECONDS = float(os.environ.get("BENCH_SECONDS", "30"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
ROTATE_EVERY = 10.0


@dataclass
class Run:
    name: str
    samples: list[tuple[float, float, int]]  # (wall time sent, seconds, status)
    seconds: float

    @property
    def rate(self) -> float:
        return len(self.samples) / self.seconds

    def p99_ms(self, samples: list[tuple[float, float, int]] | None = None) -> float:
        latencies = sorted(s[1] for s in (self.samples if samples is None else samples))
        if not latencies:
            return 0.0
        return latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000

    def line(self) -> str:
        errors = sum(1 for s in self.samples if s[2] != 200)
        slowest = max((s[1] for s in self.samples), default=0.0) * 1000
        return (
            f"{self.name:<12} {self.rate:8.1f} req/s   p99 {self.p99_ms():7.2f} ms   "
            f"max {slowest:7.1f} ms   errors {errors}"
        )


def set_lease_ttl(site: DynamicSite, ttl: str, max_ttl: str) -> None:
    client = site.server.client(site.server.root_token)
    role = client.read("database/roles/flask-app")["data"]
    role.update(default_ttl=ttl, max_ttl=max_ttl, db_name="app-postgres")
    client.write("database/roles/flask-app", **role)


def load(url: str, cookies: dict[str, str], seconds: float) -> list[tuple[float, float, int]]:
    samples: list[tuple[float, float, int]] = []
    end = time.monotonic() + seconds

    def worker() -> None:
        session = requests.Session()
        session.cookies.update(cookies)
        while time.monotonic() < end:
            sent, started = time.time(), time.perf_counter()
            try:
                status = session.get(f"{url}/api/auth/me", timeout=10).status_code
            except requests.RequestException:
                status = 0
            samples.append((sent, time.perf_counter() - started, status))

    threads = [threading.Thread(target=worker) for _ in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 30)
    return samples


def rotate_keys(
    site: DynamicSite, url: str, admin: requests.Session, stop: threading.Event
) -> None:
    """A new JWT key and an admin refresh every ROTATE_EVERY seconds until stopped."""
    env = {"VAULT_TOKEN": site.server.root_token}
    while not stop.wait(ROTATE_EVERY):
        site.server.run_script("rotate-jwt-key.sh", env=env, check=True)
        csrf = {"X-CSRF-TOKEN": admin.cookies["csrf_access_token"]}
        admin.post(f"{url}/api/admin/vault/refresh", headers=csrf, timeout=10)


def swap_times(site: DynamicSite, since: float) -> list[float]:
    """Wall times at which Vault handed out new database credentials (audit log)."""
    times = []
    for entry in site.server.audit_entries():
        if (
            entry.get("type") == "response"
            and entry["request"]["path"] == "database/creds/flask-app"
        ):
            moment = datetime.fromisoformat(entry["time"][:26].rstrip("Z") + "+00:00").timestamp()
            if moment >= since:
                times.append(moment)
    return times


def measure(site: DynamicSite, name: str, rotating: bool, logdir: Path) -> Run:
    if rotating:
        set_lease_ttl(site, "10s", "10s")
    else:
        set_lease_ttl(site, "1h", "24h")
    env = gunicorn_env(
        site.server, VAULT_DB_MODE="dynamic", LOG_LEVEL="WARNING", RATELIMIT_ENABLED="false"
    )
    server = launch_gunicorn(env, logdir, name, workers=2)
    try:
        passwords = read_secret(site.server, "app/flask")
        admin = requests.Session()
        body = {"username": "admin", "password": passwords["admin_password"]}
        admin.post(f"{server.url}/api/auth/login", json=body, timeout=10).raise_for_status()
        cookies = {"access_token_cookie": admin.cookies["access_token_cookie"]}
        load(server.url, cookies, 2.0)  # warm up
        stop = threading.Event()
        rotator = threading.Thread(target=rotate_keys, args=(site, server.url, admin, stop))
        started = time.time()
        if rotating:
            rotator.start()
        try:
            samples = load(server.url, cookies, SECONDS)
        finally:
            stop.set()
            if rotating:
                rotator.join(timeout=30)
        run = Run(name, samples, SECONDS)
        if rotating:
            swaps = swap_times(site, started)
            near = [s for s in samples if any(abs(s[0] - t) <= 1.0 for t in swaps)]
            print(
                f"  {len(swaps)} credential swaps; p99 within 1 s of a swap "
                f"{run.p99_ms(near):.2f} ms over {len(near)} requests",
                flush=True,
            )
        return run
    finally:
        server.stop()


def main() -> None:
    """Alternate steady and rotating runs; print the ratio of their request rates."""
    bindir = find_pg_bin()
    if bindir is None:
        raise SystemExit("PostgreSQL binaries not found: cannot run bench_rotation")
    logdir = Path(tempfile.mkdtemp(prefix="bench-rotation-"))
    cluster = PostgresCluster(bindir=bindir, root=Path(tempfile.mkdtemp(prefix="bench-pg-")))
    cluster.start()
    try:
        with dynamic_site(cluster) as site:
            print(
                f"GET /api/auth/me, gunicorn 2 workers, {CONNECTIONS} Python threads, "
                f"{SECONDS:.0f} s each, {ROUNDS} rounds (logs in {logdir})",
                flush=True,
            )
            steady: list[Run] = []
            rotating: list[Run] = []
            for number in range(ROUNDS):
                order = [False, True] if number % 2 == 0 else [True, False]
                for is_rotating in order:
                    run = measure(
                        site, "rotating" if is_rotating else "steady", is_rotating, logdir
                    )
                    (rotating if is_rotating else steady).append(run)
                    print(run.line(), flush=True)
            ratios = [r.rate / s.rate for r, s in zip(rotating, steady, strict=True)]
            slowest = max(s[1] for run in rotating for s in run.samples) * 1000
            errors = sum(1 for run in rotating for s in run.samples if s[2] != 200)
            print(
                json.dumps(
                    {
                        "rotating/steady per round": [round(r, 3) for r in ratios],
                        "median ratio": round(statistics.median(ratios), 3),
                        "slowest rotating request ms": round(slowest, 1),
                        "rotating errors": errors,
                        "target": ">= 0.95x, no request above 1000 ms, 0 errors",
                    }
                ),
                flush=True,
            )
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


if __name__ == "__main__":
    main()
