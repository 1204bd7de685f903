"""rotate-secret-id.sh: the new secret ID logs in, the old one stops, .env keeps its other lines."""

from __future__ import annotations

import stat
from pathlib import Path

import hvac.exceptions
import pytest

from tests.harness.openbao import OpenBao, read_env
from tests.vault.conftest import app_login, assert_no_secret, generated_secrets

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def project(openbao: OpenBao, tmp_path: Path) -> Path:
    """A project dir with a secret ID of its own in .env: rotating it spares the session one."""
    secret_id = openbao.client(openbao.operator_token).auth.approle.generate_secret_id("flask-app")
    (tmp_path / ".env").write_text(
        "# keep me\nFLASK_ENV=production\n"
        f"VAULT_ADDR={openbao.addr}\nVAULT_ROLE_ID={openbao.role_id}\n"
        f"VAULT_SECRET_ID={secret_id['data']['secret_id']}\nLOG_LEVEL=info\n"
    )
    (tmp_path / ".env").chmod(0o600)
    return tmp_path


def rotate(openbao: OpenBao, project: Path, *args: str):
    """Run the script with the session's operator token file, as an operator would."""
    token_file = str(openbao.workdir / "vault-operator-token")
    env = {"PROJECT_DIR": str(project), "VAULT_OPERATOR_TOKEN_FILE": token_file}
    return openbao.run_script("rotate-secret-id.sh", *args, env=env)


def test_rotation_replaces_the_secret_id_and_destroys_the_old(
    openbao: OpenBao, project: Path
) -> None:
    old = read_env(project / ".env")["VAULT_SECRET_ID"]
    assert app_login(openbao, secret_id=old)

    result = rotate(openbao, project)

    assert result.returncode == 0, result.stderr
    new = read_env(project / ".env")["VAULT_SECRET_ID"]
    assert new != old
    assert app_login(openbao, secret_id=new)
    with pytest.raises(hvac.exceptions.InvalidRequest):
        app_login(openbao, secret_id=old)
    lines = (project / ".env").read_text().splitlines()
    assert lines == [
        "# keep me",
        "FLASK_ENV=production",
        f"VAULT_ADDR={openbao.addr}",
        f"VAULT_ROLE_ID={openbao.role_id}",
        f"VAULT_SECRET_ID={new}",
        "LOG_LEVEL=info",
    ]
    assert stat.S_IMODE((project / ".env").stat().st_mode) == 0o600
    assert sorted(p.name for p in project.iterdir()) == [".env", "secrets"], "temp file left"
    # The backend's VAULT_SECRET_ID_FILE holds the new one too, readable by its group only.
    sid_file = project / "secrets" / "approle" / "secret_id"
    assert sid_file.read_text().strip() == new
    assert stat.S_IMODE(sid_file.stat().st_mode) == 0o640
    assert [p.name for p in sid_file.parent.iterdir()] == ["secret_id"], "temp file left"
    assert app_login(openbao), "the session's own secret ID must survive"
    assert_no_secret(result.stdout + result.stderr, [old, new, *generated_secrets(openbao)])


def test_wrap_ttl_writes_a_single_use_wrapping_token(openbao: OpenBao, project: Path) -> None:
    env_before = (project / ".env").read_text()

    result = rotate(openbao, project, "--wrap-ttl", "5m")

    assert result.returncode == 0, result.stderr
    wrapped_file = project / "secrets" / "secret_id.wrapped"
    assert stat.S_IMODE(wrapped_file.stat().st_mode) == 0o600
    wrapping_token = wrapped_file.read_text().strip()
    assert wrapping_token not in result.stdout + result.stderr
    unwrapped = openbao.client(wrapping_token).sys.unwrap()["data"]["secret_id"]
    assert app_login(openbao, secret_id=unwrapped)
    with pytest.raises(hvac.exceptions.InvalidRequest, match="wrapping token is not valid"):
        openbao.client(wrapping_token).sys.unwrap()
    assert (project / ".env").read_text() == env_before
    assert app_login(openbao, secret_id=read_env(project / ".env")["VAULT_SECRET_ID"])
