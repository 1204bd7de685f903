"""Where one worker's time goes under wrk on GET /api/auth/me: py-spy samples, by category.

Not part of `make bench` (py-spy is no dependency): `pip install py-spy`, then
`python -m bench.profile_me [seconds]` (PROFILE_GIL=1: samples of the thread holding the GIL
only, i.e. where the CPU goes, not where threads wait). One gunicorn worker (the config's
threads) on the same real PostgreSQL and OpenBao as bench_perf, JSON logs at INFO, rate limits
on Redis if it answers.
The raw collapsed stacks are kept (path printed) for a flame graph.
"""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "be_flask"), str(ROOT)]

from tests.harness.app import gunicorn_env, launch_gunicorn, read_secret  # noqa: E402

from bench.bench_perf import (  # noqa: E402
    Variant,
    backing_services,
    redis_url,
    session_cookie,
    workers,
    wrk,
)

# First match wins, tried from the innermost frame outwards: a sample counts once.
CATEGORIES = (
    ("argon2", ("argon2",)),
    ("database round trip (psycopg wait)", ("psycopg/waiting.py", "psycopg/generators.py")),
    ("psycopg (other)", ("psycopg/",)),
    ("SQLAlchemy ORM", ("sqlalchemy/orm/",)),
    ("SQLAlchemy Core / pool", ("sqlalchemy/",)),
    ("JWT (PyJWT, Flask-JWT-Extended)", ("jwt/", "flask_jwt_extended/")),
    ("logging", ("logging/", "logging_setup.py")),
    ("metrics (prometheus_client)", ("prometheus_client/", "metrics.py")),
    ("rate limits (flask_limiter, limits, redis)", ("flask_limiter/", "limits/", "redis/")),
    ("Vault client", ("src/vault/", "hvac/")),
    ("app code (src/)", ("be_flask/src/",)),
    ("JSON encoding", ("json/",)),
    ("Flask / Werkzeug", ("flask/", "werkzeug/")),
    ("gunicorn (HTTP parsing, sockets)", ("gunicorn/",)),
)


def categorise(stacks: Path) -> list[tuple[str, int]]:
    counts: collections.Counter[str] = collections.Counter()
    for line in stacks.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        counts[_category(frames)] += int(count)
    return counts.most_common()


def _category(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, needles in CATEGORIES:
            if any(needle in frame for needle in needles):
                return name
    return "other (interpreter, idle threads)"


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    py_spy = shutil.which("py-spy")
    if py_spy is None or shutil.which("wrk") is None:
        raise SystemExit("needs py-spy and wrk")
    workdir = Path(tempfile.mkdtemp(prefix="profile-me-"))
    with ExitStack() as stack:
        _cluster, openbao = backing_services(stack, "profile")
        env = gunicorn_env(openbao, LOG_LEVEL="INFO", REDIS_URL=redis_url())
        server = launch_gunicorn(env, workdir, "me", workers=1)
        stack.callback(server.stop)
        admin = read_secret(openbao, "app/flask")["admin_password"]
        cookie = {"Cookie": f"access_token_cookie={session_cookie(server.url, admin)}"}
        variant = Variant("/me", server, "/api/auth/me", headers=cookie)
        wrk(variant, 3)
        worker = workers(server.proc.pid)[0]
        stacks = workdir / "me.stacks"
        argv = [py_spy, "record", "--pid", str(worker), "--duration", str(int(seconds))]
        argv += ["--rate", "250", "--format", "raw", "--output", str(stacks)]
        if os.environ.get("PROFILE_GIL"):  # only the thread holding the GIL: where CPU goes
            argv.append("--gil")
        spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        sample = wrk(variant, seconds)
        spy.wait(timeout=60)
        counts = categorise(stacks)
        total = sum(c for _, c in counts)
        rate, cpu = sample.rate, sample.cpu_ms
        print(f"GET /api/auth/me, 1 worker: {rate:.0f} req/s, {cpu:.2f} ms CPU/req")
        for name, count in counts:
            print(f"  {count / total * 100:5.1f} %  {name}")
        print(f"collapsed stacks: {stacks}")


if __name__ == "__main__":
    main()
