"""`python -m orchestration ARGS...`: what setup.sh runs."""

import sys

from orchestration.cli import main

sys.exit(main(sys.argv[1:]))
