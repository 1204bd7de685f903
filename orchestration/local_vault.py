"""Local mode's Vault: node servers from the project's configs, the unsealer, init-vault.sh."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from orchestration import process, vault_config
from orchestration.cluster import Cluster, non_empty, read_token
from orchestration.console import SetupError, say
from orchestration.context import Run
from orchestration.layout import Node
from orchestration.process import Supervised
from orchestration.scripts import run_vault_script

MAX_SOCKET_PATH = 100


def cluster(run: Run) -> Cluster:
    layout = run.layout
    return Cluster(run, [node.addr for node in run.nodes], layout.keys_file, run.data_dir)


def unsealer_addr(run: Run) -> str:
    return f"http://127.0.0.1:{run.settings.unsealer_port}"


def app_vault_addr(run: Run) -> str:
    """The backend's VAULT_ADDR: every node, comma-separated (it fails over in order)."""
    return ",".join(node.addr for node in run.nodes)


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)


def node_config(run: Run, node: Node) -> str:
    """vault-config.hcl for a node: private paths, loopback ports, TLS, generate-root socket."""
    text = vault_config.rewrite_config(
        (vault_config.CONFIG_DIR / "vault-config.hcl").read_text(encoding="utf-8"),
        data=node.dir / "data", audit=run.layout.audit_log, port=node.port,
        cluster_port=node.cluster_port, api_addr=node.addr,
    )  # fmt: skip
    text = vault_config.listener_tls(text, run.tls.dir, run.tls.mode)
    _private_dir(node.socket_dir)
    node.socket.unlink(missing_ok=True)
    if len(str(node.socket)) > MAX_SOCKET_PATH:
        say(f"note: {node.socket} is too long for a Unix socket: no private generate-root listener")
        return text
    return text + vault_config.generate_root_listener(node.socket)


def write_node_configs(run: Run, node: Node) -> list[str]:
    """The -config arguments of a node: its config, then the HA and seal overlays."""
    _private_dir(node.dir)
    _private_dir(node.dir / "data")
    (node.dir / "logs").mkdir(exist_ok=True)
    run.layout.audit_log.parent.mkdir(parents=True, exist_ok=True)
    files = {"vault-config.hcl": node_config(run, node)}
    if run.ha:
        ha = vault_config.render_ha(
            (vault_config.CONFIG_DIR / "vault-ha.hcl").read_text(encoding="utf-8"),
            data=node.dir / "data", node_id=node.name, addresses=[n.addr for n in run.nodes],
        )  # fmt: skip
        files["vault-ha.hcl"] = vault_config.ha_join_tls(ha, run.tls.dir, run.tls.mode)
    if run.auto_unseal:
        seal = (vault_config.CONFIG_DIR / "seal-transit.hcl").read_text(encoding="utf-8")
        files["seal-transit.hcl"] = vault_config.render_seal(seal, unsealer_addr(run))
    for name, text in files.items():
        (node.dir / name).write_text(text, encoding="utf-8")
    return [f"-config={node.dir / name}" for name in files]


def check_running_tls(run: Run, node: Node) -> None:
    """A running server keeps the listener it started with: a TLS change needs a restart."""
    config = node.dir / "vault-config.hcl"
    running = (
        vault_config.running_tls(config.read_text(encoding="utf-8")) if config.exists() else "off"
    )
    if running != run.tls.mode:
        raise SetupError(
            f"the running Vault server has TLS '{running}', this run asks for "
            f"'{run.tls.mode}': ./setup.sh --stop first, then re-run"
        )


def start_node(run: Run, node: Node, single: bool) -> None:
    """Start node unless it runs; the seal token reaches it in its environment only."""
    label = "Vault server" if single else f"Vault node {node.name}"
    if process.alive(node.pid_file, "server"):
        if single:
            check_running_tls(run, node)
        say(f"{label}: already running at {node.addr}")
        return
    process.require_free_port(node.port, "VAULT_PORT")
    process.require_free_port(node.cluster_port, "VAULT_CLUSTER_PORT")
    configs = write_node_configs(run, node)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    if run.auto_unseal:
        env["VAULT_TOKEN"] = read_token(run.data_dir / "vault-unsealer-token")
    bao = run.require_bao()
    say(f"starting {label} ({Path(bao).name}) at {node.addr}" if single
        else f"starting {label} at {node.addr}")  # fmt: skip
    process.start_detached(node.pid_file, node.log, [bao, "server", *configs], env)
    wait_for_node(node, label)
    say(f"starting {label}: ok")


def wait_for_node(node: Node, label: str) -> None:
    """A transit-sealed node that cannot reach its unsealer exits instead of listening."""
    for _ in range(150):
        if process.port_open(node.port):
            return
        log = node.log.read_text(errors="replace") if node.log.exists() else ""
        if not process.alive(node.pid_file, "server") and "Error configuring seal" in log:
            line = next(x for x in log.splitlines() if "Error configuring seal" in x)[:200]
            raise SetupError(
                f'{label} stopped: its seal "transit" could not use the unsealer ({line}); '
                "start and unseal the unsealer (./setup.sh --auto-unseal does), then re-run"
            )
        time.sleep(0.2)
    raise SetupError(f"{label} did not open 127.0.0.1:{node.port} within 30 s (see {node.log})")


def start_unsealer(run: Run) -> None:
    """The unsealer: its own config, data and Shamir keys; init-unsealer.sh issues the
    seal token (vault-unsealer-token) the main nodes use."""
    layout, port = run.layout, run.settings.unsealer_port
    pid_file = layout.run_dir / "unsealer.pid"
    if not process.alive(pid_file, "server"):
        process.require_free_port(port, "UNSEALER_PORT")
        process.require_free_port(port + 1, "UNSEALER_PORT")
        _private_dir(layout.unsealer_dir / "data")
        layout.unsealer_dir.chmod(0o700)
        (layout.unsealer_dir / "logs").mkdir(exist_ok=True)
        config = layout.unsealer_dir / "vault-unsealer.hcl"
        config.write_text(vault_config.rewrite_config(
            (vault_config.CONFIG_DIR / "vault-unsealer.hcl").read_text(encoding="utf-8"),
            data=layout.unsealer_dir / "data", audit=layout.unsealer_dir / "logs" / "audit.log",
            port=port, cluster_port=port + 1,
        ), encoding="utf-8")  # fmt: skip
        say(f"starting the unsealer at {unsealer_addr(run)}")
        argv = [run.require_bao(), "server", f"-config={config}"]
        process.start_detached(pid_file, layout.log_dir / "unsealer.log", argv)
        process.wait_for_port(port, "the unsealer", layout.log_dir)
    say("initializing/unsealing the unsealer (vault/scripts/init-unsealer.sh)")
    env = {"VAULT_BIN": run.require_bao(), "PROJECT_DIR": str(run.data_dir),
           "VAULT_ADDR": unsealer_addr(run)}  # fmt: skip
    run_vault_script(str(run.root), "init-unsealer.sh", env)


def start_nodes(run: Run) -> None:
    """Every node of this topology, the unsealer first when there is one."""
    if run.auto_unseal:
        start_unsealer(run)
    single = not run.ha and not run.auto_unseal
    for node in run.nodes:
        start_node(run, node, single)


def stop_nodes(run: Run) -> None:
    """Main nodes first, node 1 last (the app serves from its cache meanwhile)."""
    layout = run.layout
    others = [Supervised(layout.run_dir / f"vault-{n}.pid", "server", f"Vault node vault-{n}")
              for n in (3, 2)]  # fmt: skip
    process.stop(*others, Supervised(layout.run_dir / "vault.pid", "server", "Vault server"))


def config_digest(root: Path) -> str:
    """What init-vault.sh configures comes from these files; a change means configuring again."""
    scripts = root / "vault" / "scripts"
    files = [*sorted((root / "vault" / "policies").glob("*.hcl")),
             scripts / "init-vault.sh", scripts / "lib.sh", scripts / "lib.py"]  # fmt: skip
    return hashlib.sha256(b"".join(path.read_bytes() for path in files)).hexdigest()


def script_env(run: Run) -> dict[str, str]:
    """How vault/scripts/*.sh reach this data dir's Vault and files."""
    layout = run.layout
    return {
        "VAULT_BIN": run.require_bao(),
        "PROJECT_DIR": str(run.data_dir),
        "VAULT_ADDR": run.nodes[0].addr,
        "APP_VAULT_ADDR": app_vault_addr(run),
        "VAULT_KEYS_FILE": str(layout.keys_file),
        "ENV_FILE": str(layout.env_file),
        "VAULT_OPERATOR_TOKEN_FILE": str(layout.operator_token_file),
        # init-vault.sh's way to a root token when the operator token is dead.
        "VAULT_GENERATE_ROOT_SOCKET": str(run.nodes[run.active_node - 1].socket),
        "AUDIT_FILE_PATH": str(layout.audit_log),
        "DB_HOST": "127.0.0.1",
        "DB_PORT": str(run.settings.pg_port),
    }


def operator_token_valid(run: Run) -> bool:
    token = read_token(run.layout.operator_token_file)
    return bool(token) and run.vault(token=token).ok("GET", "auth/token/lookup-self")


def _configured(run: Run, digest: str) -> bool:
    layout = run.layout
    files = [layout.keys_file, layout.operator_token_file, layout.env_file,
             layout.secrets_dir / "db_password.txt", layout.secrets_dir / "redis_password.txt",
             layout.secrets_dir / "approle" / "secret_id"]  # fmt: skip
    if not all(non_empty(path) for path in files):
        return False
    env_lines = layout.env_file.read_text(encoding="utf-8").splitlines()
    return (
        f"VAULT_ADDR={app_vault_addr(run)}" in env_lines and run.state.vault_config_digest == digest
    )


def check_half_initialized(run: Run) -> None:
    """A data dir that was initialized but whose keys file is gone can never be unsealed."""
    if run.vault().seal_status().get("initialized") and not non_empty(run.layout.keys_file):
        raise SetupError(
            f"Vault in {run.layout.vault_dir} is initialized but {run.layout.keys_file} (unseal "
            "or recovery keys) is missing: restore it, or start over with ./setup.sh --reset "
            "(deletes all local data)"
        )


def init_vault(run: Run) -> None:
    """First run, or policies/scripts changed: init-vault.sh (idempotent). Otherwise, e.g.
    after a reboot, only unseal-vault.sh: a second instead of a few dozen CLI calls."""
    check_half_initialized(run)
    cluster(run).unseal_all()
    digest = config_digest(run.root)
    if _configured(run, digest):
        say("Vault is configured (policies and scripts unchanged): unsealing if needed "
            "(vault/scripts/unseal-vault.sh)")  # fmt: skip
        run_vault_script(str(run.root), "unseal-vault.sh", script_env(run))
        if operator_token_valid(run):
            say("Vault: ok")
            return
        say(f"the operator token in {run.layout.operator_token_file} is no longer valid "
            "(expired?): configuring again")  # fmt: skip
    say("initializing/unsealing Vault (vault/scripts/init-vault.sh)")
    run_vault_script(str(run.root), "init-vault.sh", script_env(run))
    run.state.vault_config_digest = digest
    run.save_state()
    say("Vault: ok")
