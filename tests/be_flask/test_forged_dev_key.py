"""Attack: forge an admin token with the development key that ships in the repository.

A worker that starts while Vault is sealed must never sign or verify with a public key. The
backend runs the way `setup.sh --local` runs it (its APP_ENV, from orchestration.backends).
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

from orchestration.backends import BACKEND_ENV
from tests.harness.app import BACKEND, Gunicorn, gunicorn_env, wait_until_ready
from tests.harness.openbao import running_openbao
from tests.harness.servers import free_port, wait_for_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def setup_sh_backend_env() -> dict[str, str]:
    """The APP_ENV that setup.sh --local gives the backend (orchestration.backends)."""
    env = {"JWT_COOKIE_SECURE": "false", **BACKEND_ENV}
    assert env.get("APP_ENV") != "development", "setup.sh must not run the backend in development"
    return env


def start(env: dict[str, str], log: Path, wait_ready: bool) -> Gunicorn:
    port = free_port()
    env = {**env, "GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": "1"}
    argv = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "src.be:create_app()"]
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, cwd=BACKEND, env=env, stdout=out, stderr=out)
    server = Gunicorn(port, log, proc, env)
    try:
        wait_for_port(port, timeout=30)
        if wait_ready:
            wait_until_ready(server)
    except BaseException:
        server.stop()
        raise
    return server


def forged_admin_cookie(key: str) -> dict[str, str]:
    now = int(time.time())
    csrf = uuid.uuid4().hex
    claims: dict[str, Any] = {
        "sub": "1",
        "type": "access",
        "fresh": False,
        "jti": uuid.uuid4().hex,
        "csrf": csrf,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "iss": "flask-vault-backend",
        "aud": "flask-vault-backend-api",
        "fam": uuid.uuid4().hex,
        "ver": 0,
        "role": "admin",
    }
    return {"access_token_cookie": jwt.encode(claims, key, algorithm="HS256")}


def test_sealed_vault_never_means_a_public_signing_key(tmp_path: Path) -> None:
    from src.vault.fallback import DEV_DEFAULTS

    with running_openbao() as server:
        env = gunicorn_env(server, DATABASE_URL=f"sqlite:///{tmp_path / 'app.db'}")
        env.pop("APP_ENV", None)
        env.update(setup_sh_backend_env())
        log = tmp_path / "backend.log"
        # First start with Vault up: the default admin (id 1) exists, as after setup.sh.
        start(env, log, wait_ready=True).stop()

        server.seal()
        backend = start(env, log, wait_ready=False)
        try:
            cookie = forged_admin_cookie(DEV_DEFAULTS["SECRET_KEY"])
            me = requests.get(f"{backend.url}/api/auth/me", cookies=cookie, timeout=10)
            assert me.status_code in (401, 503), me.text
            assert me.status_code != 200
            ready = requests.get(f"{backend.url}/api/ready", timeout=10)
            assert ready.status_code == 503
            assert "source" not in ready.json()
            login = requests.post(
                f"{backend.url}/api/auth/login",
                json={"username": "admin", "password": DEV_DEFAULTS["ADMIN_PASSWORD"]},
                timeout=10,
            )
            assert login.status_code == 503, login.text
        finally:
            backend.stop()
            server.unseal()
