"""Run the main() of every bench/bench_*.py module, in name order."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "be_flask"), str(ROOT)]


def main() -> int:
    """Import and run each benchmark; a failing one makes the exit status non-zero."""
    failures = 0
    for module in sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])):
        if not module.startswith("bench_"):
            continue
        print(f"== {module}", flush=True)
        try:
            importlib.import_module(f"bench.{module}").main()
        except Exception as error:  # one broken benchmark must not hide the others
            print(f"{module} failed: {error!r}", flush=True)
            failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
