"""The lines a user reads at the end of `up`: where to go, where the password is kept."""

from __future__ import annotations

import time
from pathlib import Path

from orchestration.console import SetupError, say
from orchestration.context import Run
from orchestration.http_checks import http_status


def wait_until_ready(run: Run, url: str, on_failure: str, show_logs: object = None) -> None:
    say(f"waiting for {url}/api/ready")
    status = ""
    for _ in range(run.settings.ready_timeout * 2):
        status = http_status(f"{url}/api/ready", run.tls.context())
        if status == "200":
            say("waiting for the app: ok")
            return
        time.sleep(0.5)
    say(f"last answer: HTTP {status}; backend log tail:")
    if callable(show_logs):
        show_logs()
    raise SetupError(f"the app was not ready within {run.settings.ready_timeout}s: {on_failure}")


def keys_kind(auto_unseal: bool) -> str:
    if auto_unseal:
        return "Recovery keys (auto-unseal: they generate a root token, they do not unseal)"
    return "Unseal keys"


def summary(run: Run, url: str, vault_addr: str, files: tuple[Path, Path], logs: str) -> str:
    keys_file, token_file = files
    ca = ""
    if url.startswith("https://"):
        ca = (f"\n  (its certificate comes from the project's CA {run.tls.ca}:\n"
              "  import that into your browser, or pass it to curl --cacert)")  # fmt: skip
    exports = ""
    if vault_addr.startswith("https://"):
        pairs = " ".join(f"{k}={v}" for k, v in run.tls.client_env().items())
        exports = f"    export {pairs}\n"
    return f"""
Ready: {url}{ca}
  Log in as admin. The admin password is never printed; it is in Vault at
  secret/app/flask (key admin_password). Read it with:
    export VAULT_ADDR={vault_addr}
{exports}    export VAULT_TOKEN="$(cat {token_file})"    # the operator token
    {run.bao} kv get -mount=secret -field=admin_password app/flask
  {keys_kind(run.auto_unseal)}: {keys_file}; operator token: {token_file} (both mode 0600;
  keep the keys somewhere safe, apart from the token; the root token is revoked).
  Logs: {logs}     Stop: ./setup.sh --stop     State: ./setup.sh --status"""
