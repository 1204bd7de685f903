"""What answers over HTTP: the app's readiness through the front, a replica's socket."""

from __future__ import annotations

import http.client
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path

from orchestration.vault_scripts import lib


def http_status(url: str, context: ssl.SSLContext | None = None) -> str:
    """The status of a GET as three digits, or 000 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as answer:
            return str(answer.status)
    except urllib.error.HTTPError as error:
        return str(error.code)
    except (OSError, ValueError, http.client.HTTPException):
        return "000"


def socket_health(path: Path) -> str:
    """The status of GET /api/health over a replica's Unix socket, or 000."""
    connection = lib.UnixHTTPConnection(str(path), 5)
    try:
        connection.request("GET", "/api/health")
        return str(connection.getresponse().status)
    except (OSError, http.client.HTTPException):
        return "000"
    finally:
        connection.close()


def socket_listens(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True
