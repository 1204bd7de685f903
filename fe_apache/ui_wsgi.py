"""Serve the web UI from gunicorn beside the API, for machines without Apache (setup.sh).

`gunicorn --pythonpath fe_apache 'ui_wsgi:create_app_with_ui()'` from be_flask/. Files under
UI_DIR (default fe_apache/html) are served as they are, "/" is index.html, and everything
else goes to the backend unchanged. The security headers Apache would add are added here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.middleware.shared_data import SharedDataMiddleware

from src.be import create_app

UI_DIR = Path(os.environ.get("UI_DIR") or Path(__file__).resolve().parent / "html")

# Same policy as fe_apache/httpd.conf: the UI has no inline script or style.
SECURITY_HEADERS = [
    (
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
]

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def with_ui(wsgi_app: WsgiApp, ui_dir: Path = UI_DIR) -> WsgiApp:
    """Wrap a WSGI app so UI files are served first and every response gets the headers."""
    static = SharedDataMiddleware(wsgi_app, {"/": str(ui_dir)}, cache=False)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") in ("", "/"):
            environ["PATH_INFO"] = "/index.html"

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            present = {name.lower() for name, _ in headers}
            extra = [(k, v) for k, v in SECURITY_HEADERS if k.lower() not in present]
            return start_response(status, headers + extra, exc_info)

        return static(environ, start)

    return app


def create_app_with_ui() -> Flask:
    """The backend's app with the UI in front of it."""
    app = create_app()
    app.wsgi_app = with_ui(app.wsgi_app)  # type: ignore[method-assign,assignment]
    return app
