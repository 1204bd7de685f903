"""`python -m orchestration ARGS...`: what setup.sh runs."""

import os
import sys

from orchestration.cli import main

os.umask(0o077)  # as setup.sh: everything it creates is owner-only (see setup.sh)
sys.exit(main(sys.argv[1:]))
