"""gunicorn settings (read from be_flask/ by default): `gunicorn 'src.be:create_app()'`."""

import os
import shutil
import tempfile
from pathlib import Path


def _env(name: str, default: str) -> str:
    """A setting from the environment; blank counts as unset, as in .env.example."""
    return os.environ.get(name) or default


bind = _env("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(_env("GUNICORN_WORKERS", "2"))
worker_class = "gthread"
threads = int(_env("GUNICORN_THREADS", "4"))
# The app is built in each worker after fork, never in the master: the Vault client (its HTTP
# session and token), the database pool and any lock are created in the process that uses them.
preload_app = False
timeout = 30
graceful_timeout = 20
keepalive = 5
# Requests are logged by the app itself as JSON lines (src/logging_setup.py).
accesslog = None
errorlog = "-"
loglevel = _env("LOG_LEVEL", "info").lower()
# Bounded request lines and headers: an oversize token is refused before the app sees it.
limit_request_line = 8190
limit_request_field_size = 8190
forwarded_allow_ips = _env("FORWARDED_ALLOW_IPS", "127.0.0.1")
# gunicorn >= 25.1 opens a control socket for gunicornc, by default in ~/.gunicorn/: a folder
# left in the user's home (and unwritable on a read-only root filesystem). Only on request.
control_socket = _env("GUNICORN_CONTROL_SOCKET", "")
control_socket_disable = not control_socket


def on_starting(server):  # type: ignore[no-untyped-def]
    """Give the workers one metrics directory, and one unwrapped secret ID."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="backend-metrics-")
        os.environ["BACKEND_METRICS_DIR_OWNED"] = "1"
    _unwrap_secret_id_once()


def _unwrap_secret_id_once() -> None:
    """A wrapping token in VAULT_SECRET_ID_FILE is single-use: unwrap it here, in the master,
    and hand every worker the secret ID, instead of each worker unwrapping it (the second
    one would find it used and raise a tampering alert). A plain secret ID is left alone,
    so the workers keep re-reading the file at each login."""
    path = os.environ.get("VAULT_SECRET_ID_FILE")
    if not path:
        return
    from src.vault.approle import UUID_RE
    from src.vault_client import get_vault_client, reset_vault_client

    try:
        content = Path(path).read_text().strip()
    except OSError:
        return  # the workers say why, at their login
    if not content or UUID_RE.match(content):
        return
    secret_id = get_vault_client().approle.secret_id()  # creation path checked, then unwrapped
    reset_vault_client()  # nothing of the master's client reaches the workers
    os.environ["VAULT_SECRET_ID"] = secret_id
    del os.environ["VAULT_SECRET_ID_FILE"]


def on_exit(server):  # type: ignore[no-untyped-def]
    """Remove the metrics directory made in on_starting."""
    if os.environ.get("BACKEND_METRICS_DIR_OWNED"):
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def post_fork(server, worker):  # type: ignore[no-untyped-def]
    """Drop anything a worker could have inherited from the master (nothing by design)."""
    from src.vault_client import reset_vault_client

    reset_vault_client()


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    """Forget a dead worker's Prometheus files (multi-process metrics)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
