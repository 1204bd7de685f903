"""What answers over HTTP: the app's readiness through the front, a replica's socket."""

from __future__ import annotations

import http.client
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path


def http_status(url: str, context: ssl.SSLContext | None = None) -> str:
    """The status of a GET as three digits, or 000 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as answer:
            return str(answer.status)
    except urllib.error.HTTPError as error:
        return str(error.code)
    except (OSError, ValueError, http.client.HTTPException):
        return "000"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=5)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(5)
        self.sock.connect(str(self.path))


def socket_health(path: Path) -> str:
    """The status of GET /api/health over a replica's Unix socket, or 000."""
    connection = _UnixConnection(path)
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
