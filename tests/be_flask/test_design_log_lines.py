"""The log lines the original design document quotes, found with `grep Vault` in the real log."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.harness.app import AppDatabase, Gunicorn, gunicorn_env, remember_secrets

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ENABLED = "Vault integration enabled - secrets managed by Vault"
FALLBACK = "Vault unavailable - using fallback configuration"
REFUSED = "Vault authentication failed: permission denied"


def grep_vault(server: Gunicorn) -> list[dict[str, Any]]:
    """`grep Vault backend.log`, each line parsed: they must be the app's JSON lines."""
    found = subprocess.run(
        ["grep", "Vault", str(server.log)], capture_output=True, text=True, check=False
    ).stdout
    return [json.loads(line) for line in found.splitlines() if line.startswith("{")]


def test_startup_with_vault_says_vault_manages_the_secrets(
    backend_openbao: Any, app_database: AppDatabase, start_gunicorn: Callable[..., Gunicorn]
) -> None:
    server = start_gunicorn(gunicorn_env(backend_openbao), workers=1, name="design-vault")
    lines = grep_vault(server)
    enabled = [line for line in lines if line["message"] == ENABLED]
    assert len(enabled) == 1, lines  # once per process, not per secret or request
    assert enabled[0]["level"] == "INFO"
    assert enabled[0]["vault_addr"] == backend_openbao.addr
    assert not [line for line in lines if line["message"] in (FALLBACK, REFUSED)], lines


def test_refused_login_then_fallback_are_logged_as_the_design_quotes_them(
    backend_openbao: Any, app_database: AppDatabase, start_gunicorn: Callable[..., Gunicorn]
) -> None:
    fallback = {
        "SECRET_KEY": f"env-secret-key-{uuid.uuid4().hex}",
        "ADMIN_PASSWORD": f"env-admin-{uuid.uuid4().hex}",
        "USER_PASSWORD": f"env-user-{uuid.uuid4().hex}",
    }
    remember_secrets(*fallback.values())
    env = gunicorn_env(
        backend_openbao,
        database_url=app_database.url,
        VAULT_SECRET_ID=str(uuid.uuid4()),  # a secret ID Vault never issued
        APP_ENV="development",
        **fallback,
    )
    server = start_gunicorn(env, workers=1, name="design-refused")
    lines = grep_vault(server)
    refused = [line for line in lines if line["message"] == REFUSED]
    assert refused and refused[0]["level"] == "ERROR", lines
    assert "invalid role or secret ID" in refused[0]["reason"]
    fallback_lines = [line for line in lines if line["message"] == FALLBACK]
    assert {line["path"] for line in fallback_lines} >= {"database/postgres"}, lines
    assert all(line["reason"] == "AppRole login refused" for line in fallback_lines)
    assert not [line for line in lines if line["message"] == ENABLED], lines
