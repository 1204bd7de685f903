"""`status` in local mode: one line per piece, what runs and whether it answers."""

from __future__ import annotations

import os

from orchestration import apache, backends, database, local_vault, process, redis
from orchestration.cluster import read_token
from orchestration.console import say
from orchestration.context import Run
from orchestration.database import Postgres
from orchestration.http_checks import http_status
from orchestration.tls import cert_state
from orchestration.vault_api import Vault, node_role
from orchestration.vault_scripts import secret_id_expiry


def sealed_word(run: Run) -> str:
    if not process.port_open(run.settings.vault_port):
        return "unreachable"
    sealed = run.vault().seal_status().get("sealed")
    return (
        {True: "sealed", False: "unsealed"}.get(sealed, "unknown")
        if sealed is not None
        else "unknown"
    )


def renew_hint(run: Run) -> str:
    return (f"renew with PROJECT_DIR={run.data_dir} vault/scripts/make-certs.sh --force, "
            "then ./setup.sh --stop and ./setup.sh")  # fmt: skip


def operator_token_state(run: Run, sealed: str) -> str:
    path = run.layout.operator_token_file
    token = read_token(path)
    if not token:
        return f"missing ({path})"
    if sealed != "unsealed":
        return f"in {path} (Vault {sealed}: not checked)"
    if run.vault(token=token).ok("GET", "auth/token/lookup-self"):
        return f"valid ({path})"
    return f"REJECTED by Vault ({path}): re-run ./setup.sh"


def secret_id_state(run: Run, sealed: str) -> str:
    path = run.layout.secrets_dir / "approle" / "secret_id"
    secret_id = read_token(path)
    if not secret_id:
        return f"missing ({path})"
    if sealed != "unsealed":
        return f"not checked (Vault {sealed})"
    vault = run.vault(token=read_token(run.layout.operator_token_file))
    try:
        answer = vault.call("POST", "auth/approle/role/flask-app/secret-id/lookup",
                            {"secret_id": secret_id})  # fmt: skip
    except Exception:
        answer = {}
    return secret_id_expiry(answer, float(os.environ.get("SECRET_ID_WARN_DAYS") or 7))


def nodes_status(run: Run) -> None:
    """One line per node: pid, seal type, sealed or not, leader or standby; then voters."""
    up = ""
    for node in run.nodes:
        role = node_role(run.vault(node.addr))
        if not up and ", unsealed" in role:
            up = node.addr
        say(f"  {node.name}:  {process.state_line(node.pid_file, 'server')} at {node.addr}, {role}")
    if run.ha:
        voters = run.vault(up, read_token(run.layout.operator_token_file)).voters()
        say(f"  raft:     {voters if voters is not None else 'unknown'} of {len(run.nodes)} "
            "nodes vote (operator raft list-peers)")  # fmt: skip
    if run.auto_unseal:
        addr = local_vault.unsealer_addr(run)
        pid_file = run.layout.run_dir / "unsealer.pid"
        say(f"  unsealer: {process.state_line(pid_file, 'server')} at {addr}, "
            f"{node_role(Vault(addr))}")  # fmt: skip


def postgres_line(run: Run) -> str:
    bin_dir = database.find_postgres()
    if bin_dir is not None and Postgres(run, bin_dir).running():
        return f"running on 127.0.0.1:{run.settings.pg_port}"
    layout = run.layout
    if layout.sqlite_db.exists() and not (layout.pg_data / "PG_VERSION").exists():
        return f"not used (SQLite at {layout.sqlite_db})"
    return "stopped"


def status(run: Run) -> None:
    node = run.nodes[0]
    sealed = sealed_word(run)
    say(f"mode:       local (data in {run.data_dir})")
    say(f"vault:      {process.state_line(node.pid_file, 'server')}, {sealed} at {node.addr}")
    seal_type = run.vault().seal_status().get("type") if sealed != "unreachable" else None
    say(f"seal type:  {seal_type or 'unknown (Vault not answering)'}")
    cert = cert_state(run.tls, os.environ.get("CERT_WARN_DAYS") or "30", renew_hint(run))
    say(f"vault TLS:  {run.tls.mode}; certificate: {cert}")
    if run.ha or run.auto_unseal:
        nodes_status(run)
    say(f"operator token: {operator_token_state(run, sealed)}")
    say(f"secret ID:  {secret_id_state(run, sealed)}")
    say(f"postgres:   {postgres_line(run)}")
    say(f"backend:    {run.state.replicas or 1} replica(s)")
    for index in backends.known_replicas(run):
        say(backends.Replica(run, index).status_line())
    say(f"apache:     {process.state_line(apache.supervised(run).pid_file, 'apache2')}")
    redis_pid = process.alive(redis.supervised(run).pid_file, "redis-server")
    if redis_pid is not None:
        say(
            f"redis:      private, running on 127.0.0.1:{run.settings.redis_port} (pid {redis_pid})"
        )
    front = run.state.front_url or f"http://127.0.0.1:{run.settings.http_port}"
    say(
        f"app ready:  HTTP {http_status(f'{front}/api/ready', run.tls.context())} "
        f"from {front}/api/ready"
    )
