#!/usr/bin/env bash
# One command to run it all: the Vault stack, its initialization, the app stack, health.
# With a working Docker engine it uses the two Compose files; without one (or with --local)
# it runs the same topology as local processes under a git-ignored data directory.
# Idempotent: re-running keeps every key, secret, user and row, and only starts what is down.
#
# This file only makes sure the Python environment exists, then hands every argument to the
# orchestration package (orchestration/: modes, verbs, state, process supervision), which
# also reads the old flag forms (--status, --stop vault, --backup DIR...). See --help.
set -euo pipefail
# Everything it (and the servers it starts) creates is owner-only: logs carry failed-login
# usernames (often mistyped passwords), and keys, tokens and metrics are nobody else's. What
# PostgreSQL's and Apache's users must reach is opened explicitly (orchestration/local_mode.py).
umask 077

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${VENV:-$ROOT/.venv}"

if [ ! -x "$VENV/bin/python" ] || [ ! -x "$VENV/bin/gunicorn" ]; then
  printf 'no Python environment at %s: creating it with make install (a few minutes)\n' "$VENV"
  if ! command -v make >/dev/null 2>&1; then
    printf '%s: error: make is not installed: install it or set VENV to an environment made from requirements-dev.txt\n' \
      "$(basename "$0")" >&2
    exit 1
  fi
  make -C "$ROOT" install VENV="$VENV"
  printf 'creating the Python environment: ok\n'
fi

# -P: the caller's directory is not on the import path; the package comes from this checkout.
export SETUP_PROG VENV
SETUP_PROG="$(basename "$0")"
exec "$VENV/bin/python" -P -c \
  'import sys; sys.path.insert(0, sys.argv[1]); from orchestration.cli import main; sys.exit(main(sys.argv[2:]))' \
  "$ROOT" "$@"
