"""The file audit device of the project's config records the app's reads, secret values HMAC'd."""

from __future__ import annotations

import pytest

from tests.harness.openbao import OpenBao
from tests.vault.conftest import app_client, generated_secrets

pytestmark = pytest.mark.timeout(60)


def test_audit_log_records_app_reads_without_plaintext(openbao: OpenBao) -> None:
    app = app_client(openbao)
    jwt_secret = app.secrets.kv.v2.read_secret_version(
        path="app/flask", raise_on_deleted_version=True
    )["data"]["data"]["jwt_secret"]

    reads = [
        entry
        for entry in openbao.audit_entries()
        if entry["type"] == "response"
        and entry["request"]["path"] == "secret/data/app/flask"
        and entry.get("auth", {}).get("display_name") == "approle"
    ]
    assert reads, "the app's read of secret/data/app/flask is not in the audit log"
    logged = reads[-1]["response"]["data"]["data"]["jwt_secret"]
    assert logged.startswith("hmac-sha256:") and jwt_secret not in logged
    text = openbao.audit_log.read_text()
    leaked = [i for i, value in enumerate(generated_secrets(openbao)) if value in text]
    assert not leaked, f"secret values number {leaked} appear in the audit log in plaintext"
