"""gunicorn settings (read from be_flask/ by default): `gunicorn 'src.be:create_app()'`."""

import os
import shutil
import tempfile


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
    """Give the workers one directory for their metrics, so /metrics counts all of them."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="backend-metrics-")
        os.environ["BACKEND_METRICS_DIR_OWNED"] = "1"


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
