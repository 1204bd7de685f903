"""The harness's own hygiene: at the end of a run, no pipe, child or server it started is left.

A pipe left to the garbage collector becomes a ResourceWarning whenever a collection happens to
run, which `filterwarnings = error` turns into an error in whatever test is running then (a
cold machine's long debootstrap once was that test). Checked once at the end of the session,
after every other fixture is torn down, so a leak fails the run where it is cheap to find.
"""

from __future__ import annotations

import gc
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def children(pid: int) -> list[str]:
    """This process's child processes still in the table (running or unreaped zombies)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            found.append(f"{stat.parent.name} ({describe(stat.parent)}, state {fields[0]})")
    return found


def describe(proc: Path) -> str:
    try:
        argv = (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    return " ".join(a.decode(errors="replace") for a in argv if a)[:200] or "?"


def started_under(directory: Path) -> list[str]:
    """Processes of anyone whose command line names `directory` (servers a test started)."""
    me = os.getpid()
    needle = str(directory).encode()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in argv and int(proc.name) != me:
            found.append(f"{proc.name} ({describe(proc)})")
    return found


def open_pipes() -> set[str]:
    """Pipes this process holds open (a Popen's unread or unclosed stdout/stderr)."""
    pipes = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("pipe:"):
            pipes.add(f"fd {fd.name} -> {target}")
    return pipes


def collected_warnings() -> list[str]:
    """What a full garbage collection reports: unclosed files, pipes and sockets."""
    seen: list[str] = []
    previous = sys.unraisablehook

    def record(unraisable: Any) -> None:
        seen.append(f"{unraisable.exc_value!r} ({unraisable.object!r})")

    sys.unraisablehook = record
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            gc.collect()
    finally:
        sys.unraisablehook = previous
    return seen + [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fail the run when a test left a child process, a pipe or an unclosed file behind."""
    pipes_before = open_pipes()
    basetemp = tmp_path_factory.getbasetemp()
    yield
    problems = [f"child process left running: {c}" for c in children(os.getpid())]
    problems += [f"server left running: {p}" for p in started_under(basetemp)]
    problems += [f"pipe left open: {p}" for p in sorted(open_pipes() - pipes_before)]
    problems += [f"unclosed at collection: {w}" for w in collected_warnings()]
    if problems:
        pytest.fail("the test harness leaked:\n" + "\n".join(problems), pytrace=False)
