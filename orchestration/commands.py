"""Which mode runs a command, and the checks each mode makes before it starts anything."""

from __future__ import annotations

import os

from orchestration import compose as compose_module
from orchestration.compose import Compose
from orchestration.console import SetupError, say
from orchestration.context import Run, new_run
from orchestration.docker_mode import DockerMode
from orchestration.local_mode import LocalMode
from orchestration.options import Options, Settings, check_project_name
from orchestration.state import load


def choose_mode(options: Options, settings: Settings) -> str:
    """--local/--docker; else the mode this data dir last ran in (a Docker engine that
    appeared since must not start a second, empty stack); else Docker when it works."""
    if options.mode:
        return options.mode
    remembered = load(settings.data_dir).mode
    if remembered:
        return remembered
    if compose_module.engine_works():
        return "docker"
    if options.verb == "up":
        say("no working Docker engine (docker info failed): running locally")
    return "local"


def export_tls(run: Run) -> None:
    """Every CLI call and script of this run trusts our CA (and, with mutual TLS, shows the
    backend's client certificate); whatever the shell had is for other servers."""
    if run.tls.on:
        os.environ.update(run.tls.client_env())
        if run.tls.mode != "mtls":
            os.environ.pop("VAULT_CLIENT_CERT", None)
            os.environ.pop("VAULT_CLIENT_KEY", None)


def docker_mode(options: Options, settings: Settings) -> DockerMode:
    options.refuse_local_only_options()
    command = compose_module.compose_command()
    if not compose_module.engine_works():
        raise SetupError("--docker: no working Docker engine with Compose (docker info, docker "
                         "compose version and docker-compose all failed)")  # fmt: skip
    run = new_run(options, settings, tls_dir=settings.root / "vault" / "tls")
    if options.project_name:
        run.state.project_name = check_project_name(options.project_name)
        run.save_state()
    if run.tls.mode == "mtls":
        raise SetupError("this data dir last ran with --mtls (local mode); with Docker use --tls "
                         "or --no-tls")  # fmt: skip
    if run.auto_unseal:
        raise SetupError("this data dir last ran with --auto-unseal (local mode), which Docker "
                         "mode does not offer: ./setup.sh --local, or another "
                         "DATA_DIR")  # fmt: skip
    compose = Compose(settings.root, tuple(command), run.state.project_name, run.ha, run.tls.on,
                      settings.vault_port, settings.https_port)  # fmt: skip
    export_tls(run)
    return DockerMode(run, compose)


def local_mode(options: Options, settings: Settings) -> LocalMode:
    run = new_run(options, settings)
    export_tls(run)
    return LocalMode(run)


def run(options: Options, settings: Settings | None = None) -> None:
    """Run options.verb in the chosen mode: the method of the verb's name."""
    settings = settings or Settings.from_environ()
    mode = choose_mode(options, settings)
    target = docker_mode(options, settings) if mode == "docker" else local_mode(options, settings)
    getattr(target, options.verb.replace("-", "_"))()
