"""The Prometheus scrape of VAULT_INTEGRATION.md, "Telemetry": its policy reads the metrics
with the token Prometheus sends, and that token reads nothing else."""

from __future__ import annotations

import re
from pathlib import Path

import hvac.exceptions
import pytest
import requests

from tests.harness.openbao import OpenBao

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "vault" / "policies" / "prometheus-metrics.hcl"
DOC = (ROOT / "VAULT_INTEGRATION.md").read_text()


def test_prometheus_token_reads_metrics_and_nothing_else(openbao: OpenBao) -> None:
    scrape = re.search(r"```yaml\n(scrape_configs:.*?)```", DOC, re.S)
    assert scrape and "metrics_path: /v1/sys/metrics" in scrape.group(1)
    assert "format: [prometheus]" in scrape.group(1)
    root = openbao.client(openbao.root_token)
    root.sys.create_or_update_policy("prometheus-metrics", POLICY.read_text())
    token = root.auth.token.create(policies=["prometheus-metrics"], period="768h", no_parent=True)
    bearer = token["auth"]["client_token"]
    try:
        # What Prometheus sends: `authorization: credentials_file` is a Bearer header.
        url = f"{openbao.addr}/v1/sys/metrics"
        metrics = requests.get(
            url,
            params={"format": "prometheus"},
            headers={"Authorization": f"Bearer {bearer}"},
            timeout=10,
        )
        assert metrics.status_code == 200, metrics.text
        assert "# TYPE " in metrics.text and "vault_core_unsealed" in metrics.text
        assert requests.get(url, params={"format": "prometheus"}, timeout=10).status_code in (
            401,
            403,
        )
        with pytest.raises(hvac.exceptions.Forbidden):
            openbao.client(bearer).secrets.kv.v2.read_secret_version(
                path="app/flask", raise_on_deleted_version=True
            )
    finally:
        root.auth.token.revoke(bearer)
        root.sys.delete_policy("prometheus-metrics")
