"""Local process supervision: pid files checked against /proc/<pid>/cmdline, detached
starts in new sessions, stops by pid (TERM all, wait for all, KILL what hangs)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestration.console import SetupError, say

STOP_TIMEOUT = 15.0


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def require_free_port(port: int, variable: str) -> None:
    """Refuse a port something else holds, before starting anything on it."""
    if port_open(port):
        raise SetupError(
            f"port {port} is already in use by another program: stop it or choose another "
            f"with {variable}=PORT ./setup.sh"
        )


def wait_for_port(port: int, what: str, where: Path | str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not port_open(port):
        if time.monotonic() > deadline:
            raise SetupError(f"{what} did not open 127.0.0.1:{port} within 30 s (see {where})")
        time.sleep(0.2)


def read_pid(pid_file: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(pid_file.read_text(encoding="utf-8").strip())
    return None


def cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    return ""


def alive(pid_file: Path, match: str) -> int | None:
    """The pid of a live process that is what we started (not a pid recycled after a
    reboot: its command line contains `match`), else None."""
    pid = read_pid(pid_file)
    if pid is None or match not in cmdline(pid):
        return None
    return pid


def start_detached(
    pid_file: Path, log: Path, argv: Sequence[str], env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:  # fmt: skip
    """Start argv in a new session (it outlives us), output appended to log; record its pid."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
        )  # fmt: skip
    pid_file.write_text(f"{proc.pid}\n", encoding="utf-8")
    return proc.pid


def pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A child of ours that exited stays a zombie until reaped: it is not running.
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    return True


@dataclass(frozen=True)
class Supervised:
    """A process we may have started: its pid file, what its command line holds, its name."""

    pid_file: Path
    match: str
    name: str


def wait_for_exit(pid: int, name: str) -> None:
    deadline = time.monotonic() + STOP_TIMEOUT
    while pid_running(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_running(pid):
        say(f"stopping {name}: still running after 15 s, killing it")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    say(f"stopping {name}: ok")


def stop(*processes: Supervised) -> None:
    """TERM every named process at once, then wait for all (each takes seconds to drain)."""
    stopping: list[tuple[int, str]] = []
    for process in processes:
        pid = alive(process.pid_file, process.match)
        if pid is not None:
            say(f"stopping {process.name} (pid {pid})")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            stopping.append((pid, process.name))
        process.pid_file.unlink(missing_ok=True)
    for pid, name in stopping:
        wait_for_exit(pid, name)


def state_line(pid_file: Path, match: str) -> str:
    """`running (pid N)` or `stopped`, for --status."""
    pid = alive(pid_file, match)
    return f"running (pid {pid})" if pid is not None else "stopped"
