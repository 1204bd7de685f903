"""`restart-app` without a gap: new gunicorn workers replica by replica, Apache graceful.

gunicorn's HUP starts new workers (the new code and gunicorn.conf.py) while the old ones
finish their requests and the socket stays open, so new requests wait instead of failing;
Apache's USR1 is its graceful restart. Only when everything runs already: otherwise (or when
a replica does not come back) the caller stops and starts the app as before.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from orchestration import apache, backends, process
from orchestration.console import say
from orchestration.context import Run
from orchestration.http_checks import socket_health

RELOAD_TIMEOUT = 60.0


def children(pid: int) -> list[int]:
    """The workers of a gunicorn master (its child processes)."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def reload_replica(replica: backends.Replica, master: int) -> bool:
    """HUP one master; True once its old workers are gone and its socket answers 200."""
    old = children(master)
    say(f"reloading backend replica {replica.index} (new workers, pid {master} stays)")
    os.kill(master, signal.SIGHUP)
    deadline = time.monotonic() + RELOAD_TIMEOUT
    while time.monotonic() < deadline:
        time.sleep(0.1)
        if (
            not any(process.pid_running(pid) for pid in old)
            and socket_health(replica.socket) == "200"
        ):
            say(f"reloading backend replica {replica.index}: ok")
            return True
    return False


def reload_app(run: Run) -> bool:
    """Every replica reloaded, then the front; False when something was not running."""
    front = apache.supervised(run)
    front_pid = process.alive(front.pid_file, front.match)
    replicas = [backends.Replica(run, index) for index in backends.known_replicas(run)]
    masters = [process.alive(r.pid_file, "gunicorn") for r in replicas]
    if not replicas or not run.state.front_url or front_pid is None or None in masters:
        return False
    for replica, master in zip(replicas, masters, strict=True):
        if master is None or not reload_replica(replica, master):
            return False
    say("reloading the Apache front (graceful)")
    os.kill(front_pid, signal.SIGUSR1)
    say("reloading the Apache front: ok")
    return True
