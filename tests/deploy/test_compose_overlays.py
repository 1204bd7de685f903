"""Static checks of the TLS overlays (`./setup.sh --docker --tls`) against the files they extend."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# overlay -> the file it is layered on (the order setup.sh passes them with -f)
OVERLAYS = {
    "docker-compose.vault-tls.yaml": "docker-compose.vault.yaml",
    "docker-compose.vault-ha-tls.yaml": "docker-compose.vault-ha.yaml",
    "docker-compose.tls.yaml": "docker-compose.yaml",
}
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|PRIVATE|_KEY$|CREDENTIAL)", re.I)


def services(name: str) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / name).read_text())
    return dict(data["services"])


@pytest.mark.parametrize(("overlay", "base"), OVERLAYS.items())
def test_overlay_only_extends_services_of_its_base(overlay: str, base: str) -> None:
    assert set(services(overlay)) <= set(services(base)), overlay


@pytest.mark.parametrize(("overlay", "base"), OVERLAYS.items())
def test_overlay_mounts_read_only_and_sets_no_secret(overlay: str, base: str) -> None:
    for name, service in services(overlay).items():
        for volume in service.get("volumes", []):
            source, _target, *mode = str(volume).split(":")
            if source.startswith("."):
                assert mode == ["ro"], f"{overlay}:{name} mounts {source} writable"
                assert "ca-key" not in source, f"{overlay}:{name} mounts the CA's key"
        for key in service.get("environment") or {}:
            assert not SECRET_NAME.search(key), f"{overlay}:{name} sets {key}"


@pytest.mark.parametrize(
    "overlay", ["docker-compose.vault-tls.yaml", "docker-compose.vault-ha-tls.yaml"]
)
def test_only_the_one_shot_copy_reads_files_it_does_not_own(overlay: str) -> None:
    base = services(OVERLAYS[overlay])
    for name, service in services(overlay).items():
        added = service.get("cap_add", [])
        if name == "vault-volumes":
            assert added == ["CHOWN", "DAC_READ_SEARCH"]
            assert base[name]["network_mode"] == "none" and base[name]["restart"] == "no"
        else:
            assert added == [], f"{overlay}:{name} adds {added}"
            assert "vault_tls:/vault/tls:ro" in service["volumes"], name


@pytest.mark.parametrize(("overlay", "base"), OVERLAYS.items())
def test_overlay_merges_into_a_valid_file(overlay: str, base: str, tmp_path: Path) -> None:
    """docker-compose (1.29 here) merges and validates the pair as setup.sh passes them."""
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed")
    (tmp_path / ".env").write_text("")  # the app stack's env_file, written by init-vault.sh
    for context in ("be_flask", "fe_apache"):  # build contexts must exist
        (tmp_path / context).symlink_to(ROOT / context)
    done = subprocess.run(
        ["docker-compose", "--project-directory", str(tmp_path),
         "-f", str(ROOT / base), "-f", str(ROOT / overlay), "config", "-q"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
