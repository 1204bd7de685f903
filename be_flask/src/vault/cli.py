"""Operator CLI: `python -m src.vault_client status` prints status() as JSON."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from .errors import VaultClientError
from .process import get_vault_client


def main(argv: list[str] | None = None) -> int:
    """Run a command; exit 1 when Vault is unreachable or unusable."""
    parser = argparse.ArgumentParser(prog="python -m src.vault_client")
    parser.add_argument("command", choices=["status"], help="print the client's state as JSON")
    parser.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, stream=sys.stderr)
    client = get_vault_client()
    error = None
    try:
        client.get_app_secrets()  # a real round trip: login and one read
    except VaultClientError as exc:
        error = str(exc)
    status = client.status()
    if error:
        status["last_error"] = error
    print(json.dumps(status, indent=2, sort_keys=True))
    return 0 if client.source == "vault" and status["available"] else 1
