"""JWT signing-key rotation with kid: sessions survive rotate-jwt-key.sh, bad kids are 401."""

from __future__ import annotations

import base64
import json
import random
import secrets
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from unittest import mock

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient

from src import jwt_keys
from tests.harness.app import csrf_headers, login, put_secret, read_secret, remember_secrets


def access_token(client: FlaskClient) -> str:
    cookie = client.get_cookie("access_token_cookie", path="/api/")
    assert cookie is not None, "no access cookie"
    return cookie.value


def kid_of(client: FlaskClient) -> str:
    return str(jwt.get_unverified_header(access_token(client))["kid"])


def rotate(server: Any, *args: str) -> str:
    result = server.run_script("rotate-jwt-key.sh", *args, env={"VAULT_TOKEN": server.root_token})
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def newest_version(server: Any) -> int:
    metadata = server.client(server.root_token).secrets.kv.v2.read_secret_metadata(
        path="app/flask", mount_point="secret"
    )
    return int(metadata["data"]["current_version"])


OK = (200, None)


def refused(reason: str) -> tuple[int, str]:
    """me()'s answer for a token whose kid the key check refused for `reason`."""
    return 401, f"invalid token: {reason}"


def me(app: Flask, token: str) -> tuple[int, str | None]:
    """GET /api/auth/me with this access token: the status, and for a refusal its reason.

    The answer says only "invalid token" for every bad token (on purpose); the key check's
    own reason (KeyIdError) is added, so that a test of a kid sees that the kid was refused,
    not the signature, the claims or the session."""
    reasons: list[str] = []
    verification_key = jwt_keys.verification_key

    def recording(header: dict[str, Any]) -> str:
        try:
            return verification_key(header)
        except jwt_keys.KeyIdError as error:
            reasons.append(str(error))
            raise

    client = app.test_client(use_cookies=False)
    environ = {"HTTP_COOKIE": f"access_token_cookie={token}"}
    with mock.patch.object(jwt_keys, "verification_key", recording):
        response = client.get("/api/auth/me", environ_overrides=environ)
    if response.status_code < 400:
        return response.status_code, None
    return response.status_code, ": ".join([response.json["error"], *reasons])


@pytest.fixture
def restore_key(backend_openbao: Any) -> Iterator[int]:
    """The version before the test; afterwards its values are the newest again."""
    version = newest_version(backend_openbao)
    original = read_secret(backend_openbao, "app/flask")
    yield version
    put_secret(backend_openbao, "app/flask", original)


def test_sessions_survive_rotation_and_rollback(
    make_app: Callable[..., Flask],
    backend_openbao: Any,
    vault_secrets: dict[str, Any],
    restore_key: int,
) -> None:
    app = make_app(cache_ttl=0)  # every read goes to Vault: no refresh needed in between
    client = app.test_client()
    assert login(client, "user", vault_secrets["user_password"]).status_code == 200
    assert kid_of(client) == str(restore_key)
    old_token = access_token(client)

    output = rotate(backend_openbao)
    assert f"version {restore_key + 1}" in output
    assert read_secret(backend_openbao, "app/flask")["jwt_secret"] not in output
    assert client.get("/api/auth/me").status_code == 200  # signed with the previous key
    response = client.post("/api/auth/refresh", headers=csrf_headers(client, refresh=True))
    assert response.status_code == 200
    assert kid_of(client) == str(restore_key + 1)  # refresh issues tokens under the new key
    assert client.get("/api/auth/me").status_code == 200

    rotate(backend_openbao, "--rollback", str(restore_key))
    assert newest_version(backend_openbao) == restore_key + 2
    fresh = app.test_client()
    assert login(fresh, "user", vault_secrets["user_password"]).status_code == 200
    assert kid_of(fresh) == str(restore_key + 2)
    assert me(app, old_token) == OK  # version restore_key is still in service
    assert client.get("/api/auth/me").status_code == 200


def test_rollback_restores_only_the_signing_key(backend_openbao: Any, restore_key: int) -> None:
    """An old version also holds old passwords: --rollback brings back its jwt_secret only."""
    original = read_secret(backend_openbao, "app/flask")
    rotate(backend_openbao)
    rotated_later = {"redis_password": "redis-" + secrets.token_urlsafe(24)}
    remember_secrets(rotated_later["redis_password"])
    put_secret(
        backend_openbao, "app/flask", {**read_secret(backend_openbao, "app/flask"), **rotated_later}
    )
    before = read_secret(backend_openbao, "app/flask")

    output = rotate(backend_openbao, "--rollback", str(restore_key))

    after = read_secret(backend_openbao, "app/flask")
    expected = {**before, "jwt_secret": original["jwt_secret"]}
    # Names only in the failure message: the values are secrets.
    assert sorted(k for k in {**expected, **after} if after.get(k) != expected.get(k)) == []
    leaked = [k for data in (original, before) for k, v in data.items() if str(v) in output]
    assert leaked == []


def test_compromised_key_stops_verifying_in_every_worker_after_a_refresh(
    make_app: Callable[..., Flask],
    backend_openbao: Any,
    vault_secrets: dict[str, Any],
    restore_key: int,
) -> None:
    """rotate-jwt-key.sh --rollback N --compromised: tokens of the abandoned key are 401 in
    every worker within a second of POST /api/admin/vault/refresh; those of version N live on.
    Two apps with their own Vault clients (300 s cache) stand for two workers."""
    worker_a, worker_b = make_app(), make_app()
    admin, restored = worker_a.test_client(), worker_b.test_client()
    assert login(admin, "admin", vault_secrets["admin_password"]).status_code == 200
    assert login(restored, "user", vault_secrets["user_password"]).status_code == 200
    assert kid_of(restored) == str(restore_key)
    rotate(backend_openbao)
    for worker in (worker_a, worker_b):
        worker.extensions["vault"].invalidate_cache()
    abandoned = worker_b.test_client()
    assert login(abandoned, "user", vault_secrets["user_password"]).status_code == 200
    assert kid_of(abandoned) == str(restore_key + 1)
    token = access_token(abandoned)
    assert (me(worker_a, token), me(worker_b, token)) == (OK, OK)  # cached by both now

    output = rotate(backend_openbao, "--rollback", str(restore_key), "--compromised")

    assert f"{restore_key + 1}" in output
    response = admin.post("/api/admin/vault/refresh", headers=csrf_headers(admin))
    assert response.status_code == 200
    deadline = time.monotonic() + 2.5  # the refresh bound (1 s) with room for a busy machine
    destroyed = refused("unknown key id")
    while (answers := (me(worker_a, token), me(worker_b, token))) != (destroyed, destroyed):
        assert time.monotonic() < deadline, f"not every worker refuses the destroyed key: {answers}"
        time.sleep(0.1)
    assert (
        abandoned.post("/api/auth/refresh", headers=csrf_headers(abandoned, True)).status_code
        == 401
    )
    for worker in (worker_a, worker_b):
        assert me(worker, access_token(restored)) == OK  # the restored key's sessions live on
    fresh = worker_b.test_client()
    assert login(fresh, "user", vault_secrets["user_password"]).status_code == 200
    assert kid_of(fresh) == str(restore_key + 2)


def test_compromised_rotation_destroys_every_version_of_the_key(
    make_app: Callable[..., Flask],
    backend_openbao: Any,
    real_claims: dict[str, Any],
    restore_key: int,
) -> None:
    """A key outlives its version when another key of the secret is patched: every version
    holding it goes, and nothing else (neither older keys nor the new one)."""
    rotate(backend_openbao)  # restore_key + 1: key B
    leaked = read_secret(backend_openbao, "app/flask")
    redis_password = secrets.token_hex(16)
    remember_secrets(redis_password)
    put_secret(backend_openbao, "app/flask", {**leaked, "redis_password": redis_password})
    token = sign(real_claims, leaked["jwt_secret"], kid=str(restore_key + 2))  # key B again
    app = make_app(cache_ttl=0)
    assert me(app, token) == OK

    output = rotate(backend_openbao, "--compromised")

    metadata = backend_openbao.client(backend_openbao.root_token).secrets.kv.v2
    versions = metadata.read_secret_metadata(path="app/flask", mount_point="secret")["data"]
    destroyed = sorted(int(n) for n, v in versions["versions"].items() if v["destroyed"])
    assert [restore_key + 1, restore_key + 2] == [n for n in destroyed if n > restore_key]
    assert not versions["versions"][str(restore_key)]["destroyed"]
    assert me(app, token) == refused("unknown key id")  # its version is destroyed
    assert leaked["jwt_secret"] not in output
    result = backend_openbao.run_script(
        "rotate-jwt-key.sh",
        "--rollback",
        str(restore_key + 1),
        env={"VAULT_TOKEN": backend_openbao.root_token},
    )
    assert result.returncode == 1 and "holds no jwt_secret" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert newest_version(backend_openbao) == restore_key + 3  # nothing written


def test_rollback_to_a_missing_version_is_a_clear_error(backend_openbao: Any) -> None:
    for bad in ("0", "abc", "-1", "99999999"):
        result = backend_openbao.run_script(
            "rotate-jwt-key.sh", "--rollback", bad, env={"VAULT_TOKEN": backend_openbao.root_token}
        )
        assert result.returncode != 0
        assert "Traceback" not in result.stderr and result.stderr.strip()


@pytest.fixture
def real_claims(logged_in_client: FlaskClient) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(
        access_token(logged_in_client), options={"verify_signature": False}
    )
    return claims


def sign(claims: dict[str, Any], key: str, **headers: Any) -> str:
    return jwt.encode(claims, key, algorithm="HS256", headers=headers)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        pytest.param({}, "token has no key id", id="no kid"),
        pytest.param({"kid": ""}, "token has no key id", id="empty"),
        pytest.param({"kid": "999999"}, "unknown key id", id="never existed"),
        pytest.param({"kid": "0"}, "malformed key id", id="zero"),
        pytest.param({"kid": "x1"}, "malformed key id", id="malformed"),
        pytest.param({"kid": "env"}, "key id not in service", id="fallback kid"),
    ],
)
def test_token_with_a_bad_kid_is_401(
    app: Flask,
    real_claims: dict[str, Any],
    vault_secrets: dict[str, Any],
    headers: Any,
    reason: str,
) -> None:
    """Signed with the real key, so only the kid is wrong."""
    assert me(app, sign(real_claims, vault_secrets["jwt_secret"], **headers)) == refused(reason)


def test_token_with_a_retired_kid_is_401(
    make_app: Callable[..., Flask],
    backend_openbao: Any,
    real_claims: dict[str, Any],
    vault_secrets: dict[str, Any],
    restore_key: int,
) -> None:
    rotate(backend_openbao)  # restore_key is superseded now
    token = sign(real_claims, vault_secrets["jwt_secret"], kid=str(restore_key))
    short = make_app(
        cache_ttl=0, JWT_REFRESH_TOKEN_EXPIRES=timedelta(seconds=1), JWT_KEY_RETIRE_LEEWAY=0
    )
    long = make_app(cache_ttl=0)
    time.sleep(1.5)
    assert me(long, token) == OK  # the control: still in service for a 7-day refresh lifetime
    assert me(short, token) == refused(
        "key id retired"
    )  # superseded longer ago than any of its tokens lives
    remember_secrets(read_secret(backend_openbao, "app/flask")["jwt_secret"])


def anonymous_token(kid: Any) -> str:
    """What anyone can make without a key: a header naming `kid`, empty claims, no signature."""
    header = json.dumps({"alg": "HS256", "kid": kid}, separators=(",", ":"), ensure_ascii=False)
    header_bytes = header.encode()
    return f"{base64.urlsafe_b64encode(header_bytes).decode().rstrip('=')}.e30.AAAA"


@pytest.mark.parametrize("kid", ["²", "\u0663", "\uff11", "0", "01", "1" * 10, "1 ", 1, None])
def test_anonymous_token_with_a_malformed_kid_is_401(app: Flask, kid: Any) -> None:
    """'²' passes str.isdigit() and int() refuses it (it was a 500)."""
    reason = "malformed key id" if isinstance(kid, str) else "token has no key id"
    assert me(app, anonymous_token(kid)) == refused(reason)


def test_kid_in_other_digits_is_401(
    app: Flask, real_claims: dict[str, Any], vault_secrets: dict[str, Any], backend_openbao: Any
) -> None:
    """int() reads Arabic-Indic digits: the current version spelled so is not a kid we issue."""
    arabic = "".join(chr(0x660 + int(digit)) for digit in str(newest_version(backend_openbao)))
    token = sign(real_claims, vault_secrets["jwt_secret"], kid=arabic)
    assert me(app, token) == refused("malformed key id")


def test_made_up_kids_cost_vault_no_requests_and_the_worker_no_memory(
    make_app: Callable[..., Flask], backend_openbao: Any
) -> None:
    """200 anonymous tokens naming versions that do not exist: a handful of Vault reads at
    most (the current secret re-read at most once a second) and no state per made-up kid."""
    app = make_app()
    cache = app.extensions["vault"].cache
    assert me(app, anonymous_token("1"))[0] == 401  # warm: the versions that exist are cached
    current = newest_version(backend_openbao)
    state = (len(cache.entries), len(cache._locks), len(cache.missing))
    mark = len(backend_openbao.audit_entries())
    started = time.monotonic()
    kids = [str(current + n) for n in range(1, 101)]
    kids += [str(random.randint(current + 1, 999_999_999)) for _ in range(100)]
    answers = {me(app, anonymous_token(kid)) for kid in kids}
    elapsed = time.monotonic() - started
    reads = [
        entry
        for entry in backend_openbao.audit_entries()[mark:]
        if entry.get("type") == "request" and entry["request"]["path"].startswith("secret/")
    ]
    assert answers == {refused("unknown key id")}
    assert (len(cache.entries), len(cache._locks), len(cache.missing)) == state
    assert len(reads) <= elapsed + 2, f"{len(reads)} Vault reads in {elapsed:.1f} s"
