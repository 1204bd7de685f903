"""Vault's Kubernetes auth method against a real OpenBao configured by `init-vault.sh --kubernetes`.

OpenBao's `kubernetes_host` points at tests/harness/tokenreview.py: a small HTTP server on
loopback that STANDS IN FOR THE KUBERNETES API SERVER. It answers only the TokenReview API
(authentication.k8s.io/v1, authenticated / unauthenticated, 401 without the reviewer token),
which is all Vault asks of Kubernetes at a login. Everything else is the real thing: OpenBao's
own Kubernetes auth plugin, the project's script, and the app's VaultClient.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from src.vault.errors import ConfigurationError
from src.vault_client import VaultClient
from tests.harness.openbao import OpenBao, running_openbao
from tests.harness.tokenreview import ServiceAccount, TokenReviewAPI, tokenreview_server

from .vault_support import FAST, SecretWatch, audit_paths, secret_watch, settings_for

__all__ = ["secret_watch"]

BACKEND = ServiceAccount("flask-app", "flask-backend")  # what the role is bound to
AUDIENCE = "vault"  # as the projected token in deploy/kubernetes/base/backend-deployment.yaml


@dataclass
class Cluster:
    """The stand-in Kubernetes API and an OpenBao whose Kubernetes auth trusts it."""

    api: TokenReviewAPI
    bao: OpenBao
    files: Path

    def token_file(self, account: ServiceAccount = BACKEND, audience: str = AUDIENCE) -> Path:
        """A projected-token file as the kubelet would mount it, holding a fresh token."""
        path = self.files / f"token-{account.namespace}-{account.name}-{time.monotonic_ns()}"
        path.write_text(self.api.issue(account, audience) + "\n")
        return path

    def client(self, watch: SecretWatch, token_file: Path, **overrides: object) -> VaultClient:
        settings = settings_for(
            self.bao,
            role_id=None,
            secret_id=None,  # no AppRole credentials at all: Kubernetes is the only way in
            auth_method="kubernetes",
            kubernetes_token_file=str(token_file),
            **{**FAST, **overrides},
        )
        watch.add(token_file.read_text().strip())
        return watch.client(settings)


def assert_login_refused(cluster: Cluster, client: VaultClient, review: str) -> None:
    """What the app sees of a refused login, and what the (stand-in) API server answered."""
    assert client.is_available() is False
    assert client.last_error == "Kubernetes login refused"
    assert cluster.api.reviews[-1] == review


def make_ca(directory: Path) -> Path:
    """A CA certificate for auth/kubernetes/config (the stand-in is plain HTTP on loopback)."""
    ca = directory / "k8s-ca.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(directory / "k8s-ca.key"), "-out", str(ca), "-days", "1",
         "-subj", "/CN=kubernetes-standin"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return ca


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    files = tmp_path_factory.mktemp("k8s")
    with tokenreview_server() as (api, url):
        reviewer = files / "reviewer-jwt"
        reviewer.write_text(api.reviewer_jwt)
        env = {
            "K8S_HOST": url,
            "K8S_CA_CERT": str(make_ca(files)),
            "K8S_TOKEN_REVIEWER_JWT_FILE": str(reviewer),
            "K8S_AUDIENCE": AUDIENCE,
        }
        with running_openbao(dev=True, init_args=("--kubernetes",), init_env=env) as bao:
            yield Cluster(api, bao, files)


def test_init_vault_binds_the_role_to_the_service_account_and_namespace(cluster: Cluster) -> None:
    assert cluster.bao.init_result is not None
    out = cluster.bao.init_result.stdout
    assert "Kubernetes auth at auth/kubernetes/: enabled" in out
    assert cluster.api.reviewer_jwt not in out + cluster.bao.init_result.stderr
    role = cluster.bao.client("root").read("auth/kubernetes/role/flask-app")["data"]
    assert role["bound_service_account_names"] == ["flask-backend"]
    assert role["bound_service_account_namespaces"] == ["flask-app"]
    assert role["token_policies"] == ["app-policy"]
    assert role["token_no_default_policy"] is True
    assert role["audience"] == AUDIENCE
    config = cluster.bao.client("root").read("auth/kubernetes/config")["data"]
    assert config["kubernetes_host"].startswith("http://127.0.0.1:")


def test_init_vault_kubernetes_without_host_is_a_clear_error(cluster: Cluster) -> None:
    result = cluster.bao.run_script("init-vault.sh", "--kubernetes", env={"VAULT_TOKEN": "root"})
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "init-vault.sh: error: --kubernetes needs K8S_HOST (the Kubernetes API URL)"
    )


def test_pod_logs_in_with_its_service_account_token_and_reads_secrets(
    cluster: Cluster, secret_watch: SecretWatch
) -> None:
    secret_watch.add_server(cluster.bao)
    root = cluster.bao.client("root")
    expected = root.secrets.kv.v2.read_secret_version(
        path="app/flask", mount_point="secret", raise_on_deleted_version=True
    )["data"]["data"]
    mark = len(cluster.bao.audit_entries())
    client = cluster.client(secret_watch, cluster.token_file())
    assert client.get_app_secrets() == expected
    assert client.get_database_config()["host"]
    status = client.status()
    assert (status["source"], status["auth_method"], status["logins"]) == ("vault", "kubernetes", 1)
    assert audit_paths(cluster.bao, since=mark)["auth/kubernetes/login"] == 1
    assert cluster.api.reviews[-1] == "authenticated"


@pytest.mark.parametrize(
    "account",
    [ServiceAccount("flask-app", "default"), ServiceAccount("other-team", "flask-backend")],
    ids=["wrong service account", "wrong namespace"],
)
def test_token_of_another_service_account_or_namespace_is_refused(
    cluster: Cluster, secret_watch: SecretWatch, account: ServiceAccount
) -> None:
    client = cluster.client(secret_watch, cluster.token_file(account))
    assert client.is_available() is False
    assert client.last_error == "Kubernetes login refused"
    with pytest.raises(
        ConfigurationError, match=r"Vault is unavailable \(Kubernetes login refused\)"
    ):
        client.get_app_secrets()  # production without fallback values: nothing to serve


def test_forged_claims_are_refused_by_the_token_review(
    cluster: Cluster, secret_watch: SecretWatch
) -> None:
    """A token whose claims say flask-backend but which Kubernetes does not know (forged,
    or of a deleted pod): Vault believes the TokenReview, not the claims."""
    token_file = cluster.token_file()
    cluster.api.revoke(token_file.read_text().strip())
    client = cluster.client(secret_watch, token_file)
    assert_login_refused(cluster, client, "unauthenticated")


def test_token_for_the_api_server_audience_is_refused(
    cluster: Cluster, secret_watch: SecretWatch
) -> None:
    """The pod's general-purpose API token (audience: the API server) must not open Vault:
    only a token projected for Vault does, so a token leaked from Vault is useless elsewhere
    and vice versa."""
    client = cluster.client(
        secret_watch, cluster.token_file(audience="https://kubernetes.default.svc")
    )
    assert_login_refused(cluster, client, "unauthenticated")


def test_relogin_after_revocation_reads_the_rotated_token_file(
    cluster: Cluster, secret_watch: SecretWatch
) -> None:
    token_file = cluster.token_file()
    old_jwt = token_file.read_text().strip()
    client = cluster.client(secret_watch, token_file, cache_ttl=0)
    client.get_app_secrets()
    first = client.tokens.state
    assert first is not None
    # The kubelet rotates the projected token and the old one stops being valid; meanwhile
    # an operator revokes the app's Vault token. The next read must log in with the new file.
    new_jwt = cluster.api.issue(BACKEND, AUDIENCE)
    secret_watch.add(new_jwt)
    token_file.write_text(new_jwt + "\n")
    cluster.api.revoke(old_jwt)
    cluster.bao.client("root").auth.token.revoke_accessor(first.accessor)
    assert client.get_app_secrets()["jwt_secret"]
    assert client.source == "vault"
    assert client.tokens.logins == 2
    assert client.tokens.state is not None and client.tokens.state.accessor != first.accessor
    assert cluster.api.reviews[-1] == "authenticated"


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_renewal_and_relogin_are_the_approle_code_path(
    cluster: Cluster, secret_watch: SecretWatch
) -> None:
    root = cluster.bao.client("root")
    root.write_data(
        "auth/kubernetes/role/flask-app",
        # Short enough for renewals and a re-login at max TTL within the loop, long enough
        # that a busy 2-core machine still renews before expiry.
        data={"token_ttl": "3s", "token_max_ttl": "6s"},
    )
    try:
        client = cluster.client(secret_watch, cluster.token_file(), cache_ttl=0.3)
        mark = len(cluster.bao.audit_entries())
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            client.get_app_secrets()
            assert client.source == "vault"
            time.sleep(0.05)
        paths = audit_paths(cluster.bao, since=mark)
        assert paths["auth/token/renew-self"] >= 1, paths
        assert 2 <= paths["auth/kubernetes/login"] <= 4, paths  # re-login at max TTL, no storm
        assert (client.tokens.renewals, client.tokens.logins) == (
            paths["auth/token/renew-self"],
            paths["auth/kubernetes/login"],
        )
    finally:
        root.write_data(
            "auth/kubernetes/role/flask-app", data={"token_ttl": "1h", "token_max_ttl": "4h"}
        )


def test_settings_read_the_kubernetes_variables() -> None:
    from src.vault.settings import VaultSettings

    settings = VaultSettings.from_env(
        {"VAULT_AUTH_METHOD": "Kubernetes", "VAULT_KUBERNETES_ROLE": "r"}
    )
    assert (settings.auth_method, settings.kubernetes_role, settings.has_credentials) == (
        "kubernetes",
        "r",
        True,
    )
    assert settings.kubernetes_token_file == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert replace(settings, auth_method="approle").has_credentials is False


@pytest.mark.parametrize("value", ["token", "aws", "kube"])
def test_unknown_auth_method_is_a_clear_configuration_error(value: str) -> None:
    from src.vault.settings import VaultSettings

    with pytest.raises(ConfigurationError, match="VAULT_AUTH_METHOD must be approle or kubernetes"):
        VaultSettings.from_env({"VAULT_AUTH_METHOD": value})
