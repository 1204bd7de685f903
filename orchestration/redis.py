"""Rate limits shared by every worker: a private redis-server requiring Vault's password,
else a Redis on 127.0.0.1:SYSTEM_REDIS_PORT, else per-process counters (said loudly)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import urllib.parse
from dataclasses import dataclass

from orchestration import process
from orchestration.console import SetupError, say
from orchestration.context import Run
from orchestration.process import Supervised


@dataclass
class RedisChoice:
    """What the backend gets: REDIS_URL (empty: per process), REDIS_AUTH, the key prefix."""

    url: str
    auth: str
    key_prefix: str

    def env(self) -> dict[str, str]:
        return {"REDIS_URL": self.url, "REDIS_AUTH": self.auth,
                "RATELIMIT_KEY_PREFIX": self.key_prefix}  # fmt: skip


def ping(port: int) -> str:
    """What a Redis on 127.0.0.1:port answers to PING: +PONG, -NOAUTH..., or ""."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 2) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(200).decode(errors="replace").strip()
    return ""


def url_with_password(password: str, port: int) -> str:
    return f"redis://:{urllib.parse.quote(password, safe='')}@127.0.0.1:{port}/0"


def choose(run: Run) -> RedisChoice:
    """A REDIS_URL given by the caller wins; then our private redis-server; then the system's."""
    digest = hashlib.sha256(str(run.data_dir).encode()).hexdigest()[:8]
    choice = RedisChoice(os.environ.get("REDIS_URL", ""), os.environ.get("REDIS_AUTH", "vault"),
                         os.environ.get("RATELIMIT_KEY_PREFIX",
                                        f"flask-vault-local-{digest}"))  # fmt: skip
    if choice.url:
        say(f"rate limits: Redis from REDIS_URL (REDIS_AUTH={choice.auth})")
        return choice
    if shutil.which(run.settings.redis_server):
        choice.url, choice.auth = start_private(run), "vault"
        return choice
    return _system_redis(run, choice)


def _system_redis(run: Run, choice: RedisChoice) -> RedisChoice:
    port, prefix = run.settings.system_redis_port, choice.key_prefix
    answer = ping(port)
    if answer == "+PONG":
        # Any local process can read and reset these counters: said loudly, no password sent.
        choice.url, choice.auth = f"redis://127.0.0.1:{port}/0", "none"
        say(f"!!! rate limits: the Redis on 127.0.0.1:{port} has no password: every local")
        say("!!! process can read and reset the login counters. Install redis-server for a private")
        say(f"!!! Redis with a password from Vault (keys prefixed {prefix}).")
        return choice
    if answer.startswith("-NOAUTH"):
        if os.environ.get("REDIS_PASSWORD"):
            choice.url = url_with_password(os.environ["REDIS_PASSWORD"], port)
            say(
                f"rate limits: Redis on 127.0.0.1:{port} with REDIS_PASSWORD "
                f"(keys prefixed {prefix})"
            )
            return choice
        say(f"the Redis on 127.0.0.1:{port} wants a password (set REDIS_PASSWORD to use it)")
    choice.url = ""
    say(
        f"!!! No Redis (none answers on 127.0.0.1:{port}, "
        f"{run.settings.redis_server} not installed):"
    )
    say("!!! each backend worker counts login attempts on its own, so the limits are per process.")
    say("!!! Install Redis (apt-get install redis-server) or set REDIS_URL for shared limits.")
    return choice


def supervised(run: Run, name: str = "private Redis") -> Supervised:
    return Supervised(run.layout.run_dir / "redis.pid", "redis-server", name)


def start_private(run: Run) -> str:
    """loopback, no persistence, requirepass with Vault's password in a 0600 config file
    (not argv, where ps shows it); the backend reads the password from Vault."""
    layout, port = run.layout, run.settings.redis_port
    password_file, conf = layout.secrets_dir / "redis_password.txt", layout.redis_dir / "redis.conf"
    password = password_file.read_text().strip() if password_file.exists() else ""
    if not password:
        raise SetupError(f"{password_file} is missing: re-run ./setup.sh (init-vault.sh writes it)")
    url = f"redis://127.0.0.1:{port}/0"
    if process.alive(supervised(run).pid_file, "redis-server"):
        lines = conf.read_text().splitlines() if conf.exists() else []
        if f"requirepass {password}" in lines:
            say(
                f"rate limits: private Redis already running on 127.0.0.1:{port} "
                "(password from Vault)"
            )
            return url
        process.stop(supervised(run, "private Redis (password changed)"))
    process.require_free_port(port, "REDIS_PORT")
    layout.redis_dir.mkdir(mode=0o700, exist_ok=True)
    layout.redis_dir.chmod(0o700)
    text = (f"bind 127.0.0.1\nport {port}\ndir {layout.redis_dir}\nsave \"\"\nappendonly no\n"
            f"requirepass {password}\n")  # fmt: skip
    descriptor = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(text)
    conf.chmod(0o600)
    say(f"starting private Redis on 127.0.0.1:{port} (rate limits shared by all workers, "
        "password from Vault)")  # fmt: skip
    argv = [run.settings.redis_server, str(conf)]
    process.start_detached(supervised(run).pid_file, layout.log_dir / "redis.log", argv)
    process.wait_for_port(port, "redis-server", layout.log_dir)
    say("starting private Redis: ok")
    return url
