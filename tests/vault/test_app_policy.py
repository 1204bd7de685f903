"""app-policy as the backend meets it: its AppRole token reads two paths and nothing else."""

from __future__ import annotations

from collections.abc import Callable

import hvac
import hvac.exceptions
import pytest

from tests.harness.openbao import OpenBao, read_env
from tests.vault.conftest import app_login

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def app(openbao: OpenBao) -> hvac.Client:
    """Log in with the credentials init-vault.sh wrote to .env, as the backend would."""
    env = read_env(openbao.workdir / ".env")
    return openbao.client(app_login(openbao, env["VAULT_ROLE_ID"], env["VAULT_SECRET_ID"]))


@pytest.mark.parametrize("path", ["app/flask", "database/postgres"])
def test_app_reads_its_secrets(app: hvac.Client, path: str) -> None:
    data = app.secrets.kv.v2.read_secret_version(path=path, raise_on_deleted_version=True)
    assert data["data"]["data"]


DENIED: dict[str, Callable[[hvac.Client], object]] = {
    "write app secret": lambda c: c.secrets.kv.v2.create_or_update_secret(
        path="app/flask", secret={"jwt_secret": "x"}
    ),
    "write database secret": lambda c: c.secrets.kv.v2.create_or_update_secret(
        path="database/postgres", secret={"password": "x"}
    ),
    "read sys/mounts": lambda c: c.sys.list_mounted_secrets_engines(),
    "read sys/policy": lambda c: c.sys.read_policy("admin-policy"),
    "list secret/metadata/": lambda c: c.secrets.kv.v2.list_secrets(path=""),
    "list secret/metadata/app": lambda c: c.secrets.kv.v2.list_secrets(path="app"),
    "read another path": lambda c: c.secrets.kv.v2.read_secret_version(
        path="other/thing", raise_on_deleted_version=True
    ),
    "read another path under app/": lambda c: c.secrets.kv.v2.read_secret_version(
        path="app/other", raise_on_deleted_version=True
    ),
    "read another path under database/": lambda c: c.secrets.kv.v2.read_secret_version(
        path="database/other", raise_on_deleted_version=True
    ),
    "read the database's bootstrap login": lambda c: c.secrets.kv.v2.read_secret_version(
        path="database/bootstrap", raise_on_deleted_version=True
    ),
    "read metadata": lambda c: c.secrets.kv.v2.read_secret_metadata(path="app/flask"),
    "write its cubbyhole (default policy)": lambda c: c.adapter.post(
        "/v1/cubbyhole/stash", json={"k": "v"}
    ),
    "wrap data (default policy)": lambda c: c.adapter.post(
        "/v1/sys/wrapping/wrap", json={"k": "v"}
    ),
    "create a token": lambda c: c.auth.token.create(policies=["app-policy"]),
    "issue a secret ID": lambda c: c.auth.approle.generate_secret_id("flask-app"),
}


@pytest.mark.parametrize("action", DENIED.values(), ids=DENIED.keys())
def test_app_is_denied(app: hvac.Client, action: Callable[[hvac.Client], object]) -> None:
    with pytest.raises(hvac.exceptions.Forbidden):
        action(app)


CAPABILITIES = {
    "secret/data/app/flask": ["read"],
    "secret/data/database/postgres": ["read"],
    "secret/metadata/app/flask": ["deny"],
    "secret/data/app/other": ["deny"],
    "cubbyhole/stash": ["deny"],
    "secret/metadata/": ["deny"],
    "secret/data/other": ["deny"],
    "sys/mounts": ["deny"],
    "sys/policies/acl/app-policy": ["deny"],
    "auth/token/create": ["deny"],
    "auth/approle/role/flask-app/secret-id": ["deny"],
    # Dynamic database credentials: its own role's logins and leases, nothing of the engine.
    "database/creds/flask-app": ["read"],
    "database/creds/other-role": ["deny"],
    # Neither the database's bootstrap login nor the owner's migration logins (issue 23).
    "secret/data/database/bootstrap": ["deny"],
    "database/creds/flask-migrate": ["deny"],
    "database/config/app-postgres": ["deny"],
    "database/roles/flask-app": ["deny"],
    "database/rotate-root/app-postgres": ["deny"],
    "sys/leases/renew/database/creds/flask-app/x1": ["update"],
    "sys/leases/revoke/database/creds/flask-app/x1": ["update"],
    # (sys/leases/renew by body is in Vault's default policy: renewal only extends a lease.)
    "sys/leases/revoke": ["deny"],  # the body form would take any lease_id
    "sys/leases/revoke/auth/approle/login/x1": ["deny"],
    "sys/leases/revoke-prefix/database/creds/flask-app": ["deny"],
}


def test_app_token_carries_app_policy_only(app: hvac.Client) -> None:
    assert app.auth.token.lookup_self()["data"]["policies"] == ["app-policy"]


def test_capabilities_match_the_policy(openbao: OpenBao, app: hvac.Client) -> None:
    # Asked by root: without the default policy the app may not ask sys/capabilities-self.
    answer = openbao.client(openbao.root_token).adapter.post(
        "/v1/sys/capabilities", json={"token": app.token, "paths": list(CAPABILITIES)}
    )
    assert {path: answer[path] for path in CAPABILITIES} == CAPABILITIES
