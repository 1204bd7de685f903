"""Redis for tests: the machine's own on 6379, or a private redis-server to freeze or lock."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from tests.harness.servers import free_port, missing_server, wait_for_port

SYSTEM_REDIS_URL = "redis://127.0.0.1:6379/0"


def system_redis_url() -> str:
    """The machine's Redis (no password), or a skip (a failure under CI) when none answers."""
    try:
        redis.Redis.from_url(SYSTEM_REDIS_URL, socket_timeout=2).ping()
    except redis.RedisError:
        missing_server("Redis is not running at 127.0.0.1:6379")
    return SYSTEM_REDIS_URL


@contextmanager
def private_redis_server(
    directory: Path, password: str | None = None
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A redis-server of the test's own (its port and process), keeping nothing on disk; with
    a password, as setup.sh --local starts one (in a 0600 file, never on its command line)."""
    binary = shutil.which("redis-server")
    if binary is None:
        missing_server("redis-server not installed (apt-get install redis-server)")
    port = free_port()
    conf = directory / "redis.conf"
    conf.write_text(f'bind 127.0.0.1\nport {port}\nsave ""\nappendonly no\ndir {directory}\n')
    conf.chmod(0o600)
    if password is not None:
        with conf.open("a") as lines:
            lines.write(f"requirepass {password}\n")
    server = subprocess.Popen(
        [str(binary), str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, timeout=10)
        yield port, server
    finally:
        if server.poll() is None:
            os.kill(server.pid, signal.SIGCONT)  # a test may have frozen it
            server.terminate()
            server.wait(timeout=10)
