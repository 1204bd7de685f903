"""Static checks of the TLS overlays (`./setup.sh --docker --tls`) against the files they extend."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestration.compose import TLS_OVERLAYS
from tests.harness.servers import missing_server

ROOT = Path(__file__).resolve().parents[2]
# overlay -> the file it is layered on (the order setup.sh passes them with -f)
OVERLAYS = {overlay: base for base, overlay in TLS_OVERLAYS.items()}
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|PRIVATE|_KEY$|CREDENTIAL)", re.I)
# The one-shot copy an overlay may bring (the app stack has none of its own to extend).
ONE_SHOTS = {"docker-compose.tls.yaml": "frontend-volumes"}


def services(name: str) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / name).read_text())
    return dict(data["services"])


@pytest.mark.parametrize(("overlay", "base"), OVERLAYS.items())
def test_overlay_only_extends_services_of_its_base(overlay: str, base: str) -> None:
    added = set(services(overlay)) - set(services(base))
    assert added <= {ONE_SHOTS.get(overlay)}, overlay


@pytest.mark.parametrize(("overlay", "base"), OVERLAYS.items())
def test_overlay_mounts_read_only_and_sets_no_secret(overlay: str, base: str) -> None:
    for name, service in services(overlay).items():
        for volume in service.get("volumes", []):
            source, _target, *mode = str(volume).split(":")
            if source.startswith("."):
                assert mode == ["ro"], f"{overlay}:{name} mounts {source} writable"
                assert "ca-key" not in source, f"{overlay}:{name} mounts the CA's key"
        for key, value in (service.get("environment") or {}).items():
            # A file's path is no secret (FE_TLS_KEY: where the front's key lies).
            names_a_file = str(value).startswith("/")
            assert names_a_file or not SECRET_NAME.search(key), f"{overlay}:{name} sets {key}"


# overlay -> (its one-shot copy, the volume it fills, the services that read it)
COPIES = {
    "docker-compose.vault-tls.yaml": ("vault-volumes", "vault_tls:/vault/tls:ro", None),
    "docker-compose.vault-ha-tls.yaml": ("vault-volumes", "vault_tls:/vault/tls:ro", None),
    "docker-compose.tls.yaml": ("frontend-volumes", "front_tls:/run/front-tls:ro", {"frontend"}),
}


@pytest.mark.parametrize("overlay", COPIES)
def test_only_the_one_shot_copy_reads_files_it_does_not_own(overlay: str) -> None:
    one_shot, mount, readers = COPIES[overlay]
    base = services(OVERLAYS[overlay])
    for name, service in services(overlay).items():
        added = service.get("cap_add", [])
        if name == one_shot:
            assert added == ["CHOWN", "DAC_READ_SEARCH"]
            settings = {**base.get(name, {}), **service}  # what the base gives, if anything
            assert settings["network_mode"] == "none" and settings["restart"] == "no"
            assert settings["cap_drop"] == ["ALL"], name
        else:
            assert added == [], f"{overlay}:{name} adds {added}"
            if readers is None or name in readers:
                assert mount in service["volumes"], name
                if readers is not None:  # started only once the copy is done
                    needs = service["depends_on"][one_shot]
                    assert needs == {"condition": "service_completed_successfully"}, name


@pytest.mark.parametrize(("overlay", "base"), OVERLAYS.items())
def test_overlay_merges_into_a_valid_file(overlay: str, base: str, tmp_path: Path) -> None:
    """docker-compose (1.29 here) merges and validates the pair as setup.sh passes them."""
    if shutil.which("docker-compose") is None:
        missing_server("docker-compose is not installed (apt-get install docker-compose)")
    (tmp_path / ".env").write_text("")  # the app stack's env_file, written by init-vault.sh
    for context in ("be_flask", "fe_apache"):  # build contexts must exist
        (tmp_path / context).symlink_to(ROOT / context)
    done = subprocess.run(
        ["docker-compose", "--project-directory", str(tmp_path),
         "-f", str(ROOT / base), "-f", str(ROOT / overlay), "config", "-q"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
