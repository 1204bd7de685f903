"""CPU per request of /me and login in one process, against the bare app: cProfile by category.

Not part of `make bench`: `python -m bench.profile_cpu [requests]`. Wall-clock req/s swings
with the machine's load; CPU time of the requests in this process does much less. The backend
is built by create_app() as gunicorn builds it (same environment: OpenBao from init-vault.sh, a
private PostgreSQL cluster, Redis rate limits when it answers, JSON logs at INFO to a file,
Prometheus multi-process metrics) and called through WSGI with a ready-made environ, so no
HTTP and no test client is counted: what is left is the app's own CPU, next to bench/bare_app.
"""

from __future__ import annotations

import collections
import cProfile
import io
import json
import os
import pstats
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "be_flask"), str(ROOT)]

from tests.harness.app import gunicorn_env, read_secret  # noqa: E402

from bench.bench_perf import backing_services, redis_url  # noqa: E402

# A function's own time goes to the first category whose needle is in its file name.
CATEGORIES = (
    ("argon2", ("argon2",)),
    ("psycopg / database round trip", ("psycopg",)),
    ("SQLAlchemy", ("sqlalchemy",)),
    ("PyJWT", ("/jwt/",)),
    ("Flask-JWT-Extended", ("flask_jwt_extended",)),
    ("logging and redaction", ("logging/", "logging_setup.py")),
    ("metrics (prometheus_client)", ("prometheus_client", "metrics.py")),
    ("Redis client (session generation, rate limits)", ("redis/", "hiredis")),
    ("rate limits (flask_limiter, limits)", ("flask_limiter", "limits/")),
    ("Vault client", ("src/vault", "hvac")),
    ("app code (src/)", ("be_flask/src",)),
    ("JSON", ("json/",)),
    ("Werkzeug", ("werkzeug",)),
    ("Flask", ("flask/",)),
)

App = Callable[[dict[str, Any], Any], Any]


def environ_factory(
    method: str, path: str, cookie: str = "", body: bytes = b""
) -> Callable[[], dict[str, Any]]:
    """A fresh WSGI environ per call, as gunicorn hands one to the app."""
    base = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if cookie:
        base["HTTP_COOKIE"] = cookie
    if body:
        base["CONTENT_TYPE"] = "application/json"
        base["CONTENT_LENGTH"] = str(len(body))

    def make() -> dict[str, Any]:
        environ = dict(base)
        environ["wsgi.input"] = io.BytesIO(body)
        return environ

    return make


def call(app: App, make: Callable[[], dict[str, Any]]) -> tuple[str, list[tuple[str, str]], bytes]:
    status: list[Any] = []

    def start_response(code: str, headers: list[tuple[str, str]], _exc: Any = None) -> None:
        status[:] = [code, headers]

    chunks = app(make(), start_response)
    try:
        body = b"".join(chunks)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return status[0], status[1], body


class Argon2Clock:
    """CPU spent inside argon2id verifies: a login's own cost is the rest (argon2's CPU swings
    with the machine's memory bandwidth far more than the few milliseconds around it)."""

    spent = 0.0

    @classmethod
    def install(cls) -> None:
        from argon2 import PasswordHasher

        verify = PasswordHasher.verify

        def timed(self: PasswordHasher, hash: str | bytes, password: str | bytes) -> Any:
            started = time.thread_time()
            try:
                return verify(self, hash, password)
            finally:
                cls.spent += time.thread_time() - started

        PasswordHasher.verify = timed  # type: ignore[method-assign]


def cpu_per_request_ms(
    app: App, make: Callable[[], dict[str, Any]], count: int
) -> tuple[float, float]:
    """The best of three runs of `count` requests: CPU ms each, and of that outside argon2."""
    call(app, make)
    runs = []
    for _ in range(3):
        started, argon2_before = time.thread_time(), Argon2Clock.spent
        for _ in range(count):
            call(app, make)
        total = (time.thread_time() - started) * 1000 / count
        runs.append((total, total - (Argon2Clock.spent - argon2_before) * 1000 / count))
    return min(run[0] for run in runs), min(run[1] for run in runs)


def profile(
    app: App, make: Callable[[], dict[str, Any]], count: int
) -> tuple[list[tuple[str, float]], pstats.Stats]:
    """Own time per category (share of the total), under cProfile with a thread CPU clock."""
    profiler = cProfile.Profile(time.thread_time)
    profiler.enable()
    for _ in range(count):
        call(app, make)
    profiler.disable()
    stats = pstats.Stats(profiler)
    totals: collections.Counter[str] = collections.Counter()
    for (filename, _line, _name), (_cc, _nc, own, _cum, callers) in stats.stats.items():  # type: ignore[attr-defined]
        if filename != "~" or not callers:
            totals[_category(filename)] += own
            continue
        # A builtin (any(), str.join, a C extension call) counts where it was called from.
        for (caller_file, _l, _n), (_c, _n2, caller_own, _ct) in callers.items():
            totals[_category(caller_file)] += caller_own
    grand = sum(totals.values()) or 1.0
    return [(name, value / grand) for name, value in totals.most_common()], stats


def _category(filename: str) -> str:
    for name, needles in CATEGORIES:
        if any(needle in filename for needle in needles):
            return name
    return "other (stdlib, builtins)"


def report(
    title: str, app: App, make: Callable[[], dict[str, Any]], count: int, top: int
) -> tuple[float, float]:
    status, _headers, body = call(app, make)
    if not status.startswith("200"):
        raise SystemExit(f"{title}: {status} {body[:200]!r}")
    cpu, outside_argon2 = cpu_per_request_ms(app, make, count)
    shares, stats = profile(app, make, count)
    if os.environ.get("PROFILE_DUMP"):  # for pstats / snakeviz: one file per row
        slug = "".join(c if c.isalnum() else "_" for c in title).strip("_")
        stats.dump_stats(str(Path(os.environ["PROFILE_DUMP"]) / f"{slug}.prof"))
    print(f"\n{title}: {cpu:.3f} ms CPU per request (best of 3 x {count}, no profiler)")
    if outside_argon2 < cpu:
        print(f"  outside argon2: {outside_argon2:.3f} ms CPU per request")
    for name, share in shares:
        print(f"  {share * 100:5.1f} %  {share * cpu * 1000:7.0f} us  {name}")
    if top:
        out = io.StringIO()
        stats.stream = out  # type: ignore[attr-defined]
        stats.sort_stats(os.environ.get("PROFILE_SORT", "cumulative")).print_stats(top)
        print("\n".join(out.getvalue().splitlines()[6:]))
    return cpu, outside_argon2


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    top = int(os.environ.get("PROFILE_TOP", "0"))  # PROFILE_ONLY=me: no logins
    work = Path(tempfile.mkdtemp(prefix="profile-cpu-"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, work, True)
        _cluster, openbao = backing_services(stack, "profile")
        key = read_secret(openbao, "app/flask")["jwt_secret"]
        admin = read_secret(openbao, "app/flask")["admin_password"]
        metrics_dir = work / "metrics"
        metrics_dir.mkdir()
        env = gunicorn_env(
            openbao,
            LOG_LEVEL="INFO",
            LOG_FILE=str(work / "app.log"),
            REDIS_URL=redis_url(),
            PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
            BENCH_JWT_SECRET=key,
        )
        os.environ.clear()
        os.environ.update(env)
        Argon2Clock.install()
        from bench.bare_app import create_app as create_bare
        from src.be import create_app

        backend, bare = create_app(), create_bare()
        login_body = json.dumps({"username": "admin", "password": admin}).encode()
        _status, headers, _ = call(
            backend, environ_factory("POST", "/api/auth/login", body=login_body)
        )
        cookie = next(
            v.split(";")[0]
            for k, v in headers
            if k == "Set-Cookie" and v.startswith("access_token_cookie=")
        )
        me = environ_factory("GET", "/api/auth/me", cookie=cookie)
        bare_cpu, _ = report("bare GET /api/auth/me", bare, me, count, 0)
        me_cpu, _ = report("GET /api/auth/me", backend, me, count, top)
        print(
            f"\n/me above bare: {me_cpu - bare_cpu:.3f} ms CPU; "
            f"CPU of bare / CPU of /me {bare_cpu / me_cpu:.2f}"
        )
        if os.environ.get("PROFILE_ONLY") == "me":
            return
        logins = max(20, count // 50)
        bare_login = environ_factory("POST", "/api/auth/login", body=login_body)
        bare_login_cpu, bare_rest = report("bare POST /api/auth/login", bare, bare_login, logins, 0)
        _login_cpu, login_rest = report("POST /api/auth/login", backend, bare_login, logins, top)
        print(
            f"\nlogin above bare login, outside argon2: {login_rest - bare_rest:.2f} ms CPU, "
            f"{(login_rest - bare_rest) / bare_login_cpu * 100:+.1f} % of a bare login"
        )


if __name__ == "__main__":
    main()
