"""What the user reads: progress lines on stdout, one error line on stderr."""

from __future__ import annotations

import os
import sys


class SetupError(Exception):
    """A failure the user can act on: printed as `setup.sh: error: MESSAGE`, exit status 1."""


def prog() -> str:
    """The entry point's name, as the user typed it (setup.sh passes its own)."""
    return os.environ.get("SETUP_PROG", "setup.sh")


def say(line: str = "") -> None:
    print(line, flush=True)


def error_line(message: str) -> None:
    print(f"{prog()}: error: {message}", file=sys.stderr, flush=True)
