"""JSON and file helpers for the shell scripts in this directory (lib.sh) and for setup.sh's
orchestration package, which imports atomic_write, upsert_env and secret_id_expiry.

Secrets travel through stdin and files, never argv or stdout seen by a user: every command
here that handles a secret reads it from stdin or a file and writes to a file or a pipe.
Errors are one line on stderr and exit status 1, which lib.sh turns into its die() message.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import secrets
import socket
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path


class Fail(Exception):
    """A user-facing error: printed as one line, no traceback."""


def atomic_write(dest: Path, text: str, mode: int = 0o600) -> None:
    """Write text to dest with `mode` (0600 unless told) via a temp file and a rename."""
    if dest.is_dir():
        raise Fail(f"{dest} is a directory, not a file")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    except OSError as exc:
        raise Fail(f"cannot write in {dest.parent}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_text(path: Path) -> str:
    """Read a file a user gave us, turning every OS error into one clear line."""
    try:
        return path.read_text(encoding="utf-8")
    except IsADirectoryError:
        raise Fail(f"{path} is a directory, not a file") from None
    except FileNotFoundError:
        raise Fail(f"{path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise Fail(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None


def read_stdin_json() -> dict:
    """Parse the CLI's -format=json output piped in."""
    try:
        data = json.load(sys.stdin)
    except json.JSONDecodeError:
        raise Fail("the Vault CLI did not answer JSON") from None
    if not isinstance(data, dict):
        raise Fail("the Vault CLI answered JSON that is not an object")
    return data


def cmd_get(field: str) -> None:
    """Print one dotted field of the JSON on stdin (empty line when absent or null)."""
    value: object = read_stdin_json()
    for part in field.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, bool):
        print("true" if value else "false")
    elif isinstance(value, (dict, list)):
        print(json.dumps(value))
    else:
        print("" if value is None else value)


def load_keys(path: Path) -> dict:
    """Load vault-keys.json, saying exactly what is wrong with it."""
    if not path.exists():
        raise Fail(f"keys file {path} not found (run init-vault.sh first or set VAULT_KEYS_FILE)")
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError:
        raise Fail(f"keys file {path} is corrupt: not valid JSON") from None
    if not isinstance(data, dict):
        raise Fail(f"keys file {path} is corrupt: not a JSON object")
    return data


def key_shares(data: dict) -> list:
    """The Shamir shares of a keys file: unseal keys, or with auto-unseal the recovery keys
    (which generate-root takes instead; they never unseal)."""
    return data.get("unseal_keys_b64") or data.get("recovery_keys_b64") or []


def cmd_keys_check(path: str, threshold: str) -> None:
    """Fail unless the keys file holds at least `threshold` unseal (or recovery) keys."""
    keys = key_shares(load_keys(Path(path)))
    if not keys or not all(isinstance(k, str) and k for k in keys):
        raise Fail(f"keys file {path} is corrupt: no unseal_keys_b64 or recovery_keys_b64 list")
    if len(keys) < int(threshold):
        raise Fail(f"keys file {path} holds {len(keys)} unseal keys, the server needs {threshold}")


def cmd_unseal_body(path: str, index: str) -> None:
    """Print the sys/unseal request body for key number `index` (goes straight into a pipe)."""
    keys = load_keys(Path(path))["unseal_keys_b64"]
    print(json.dumps({"key": keys[int(index)]}))


def cmd_keys_field(path: str, field: str) -> None:
    """Print a field of the keys file, e.g. a token that the caller exports without echoing."""
    value = load_keys(Path(path)).get(field)
    print(value if isinstance(value, str) else "")


def cmd_keys_set(path: str, field: str) -> None:
    """Set `field` of the keys file (created if absent) to the value on stdin, atomically."""
    dest = Path(path)
    data = load_keys(dest) if dest.exists() else {}
    data[field] = sys.stdin.read().strip()
    atomic_write(dest, json.dumps(data, indent=2) + "\n")


def cmd_read_token(path: str) -> None:
    """Print the token held in a token file (first line, stripped)."""
    text = read_text(Path(path)).strip()
    print(text.splitlines()[0] if text else "")


def cmd_keys_del(path: str, field: str) -> None:
    """Remove `field` from the keys file if present (e.g. a token that moved to its own file)."""
    data = load_keys(Path(path))
    if field in data:
        del data[field]
        atomic_write(Path(path), json.dumps(data, indent=2) + "\n")


def cmd_unseal_key(path: str, index: str) -> None:
    """Print unseal key number `index` alone (goes straight into the CLI's stdin, never argv)."""
    print(key_shares(load_keys(Path(path)))[int(index)])


def decode_root(otp: str, encoded: str) -> str:
    """The root token: generate-root's last encoded_token XOR the attempt's one-time pad."""
    if not encoded:
        raise Fail("generate-root did not complete: not enough unseal keys?")
    raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
    if len(raw) != len(otp):
        raise Fail("generate-root answered a token that does not match the one-time pad")
    return bytes(a ^ b for a, b in zip(raw, otp.encode(), strict=True)).decode()


def cmd_decode_root(attempt: str, last: str) -> None:
    """Print the root token decoded from the saved attempt and last update answers."""
    otp = json.loads(read_text(Path(attempt)))["otp"]
    print(decode_root(otp, json.loads(read_text(Path(last))).get("encoded_token") or ""))


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket: the Vault listener setup.sh --local keeps in a private dir,
    a backend replica's socket (setup.sh --status)."""

    def __init__(self, socket_path: str, timeout: float = 30) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def socket_call(socket_path: str, method: str, path: str, body: dict | None = None) -> dict:
    """One Vault API call over the Unix socket; a Fail naming the path and Vault's errors."""
    connection = UnixHTTPConnection(socket_path)
    try:
        connection.request(method, path, body=None if body is None else json.dumps(body))
        response = connection.getresponse()
        text = response.read().decode(errors="replace")
    except OSError as error:
        raise Fail(f"cannot reach Vault on {socket_path}: {error.strerror or error}") from None
    finally:
        connection.close()
    answer = json.loads(text) if text.strip() else {}
    if response.status >= 400:
        errors = "; ".join(answer.get("errors") or []) if isinstance(answer, dict) else ""
        raise Fail(f"{path} on {socket_path}: HTTP {response.status} {errors}".rstrip())
    return answer if isinstance(answer, dict) else {}


def cmd_generate_root_socket(socket_path: str, keys_path: str, threshold: str) -> None:
    """Print a root token made with `threshold` unseal keys over the unauthenticated
    sys/generate-root endpoints, which only the private socket's listener serves: the way in
    when no token is left (the operator token expired or was lost)."""
    keys = key_shares(load_keys(Path(keys_path)))[: int(threshold)]
    # An attempt someone left half done would swallow our keys: start from zero.
    socket_call(socket_path, "DELETE", "/v1/sys/generate-root/attempt")
    attempt = socket_call(socket_path, "PUT", "/v1/sys/generate-root/attempt", {})
    step: dict = {}
    for key in keys:
        body = {"key": key, "nonce": attempt["nonce"]}
        step = socket_call(socket_path, "PUT", "/v1/sys/generate-root/update", body)
    print(decode_root(attempt["otp"], step.get("encoded_token") or ""))


def cmd_keys_install(raw: str, dest: str) -> None:
    """Check `operator init -format=json` output saved next to dest, then install it as dest.

    The raw file is written in dest's own dir so that the only copy of the unseal keys is never
    in a temp dir that a cleanup could remove; on a failed check it stays for the operator.
    """
    data = load_keys(Path(raw))
    if not key_shares(data) or not data.get("root_token"):
        raise Fail(f"operator init answered without unseal keys or root token (kept in {raw})")
    # Shamir seal: unseal keys; auto-unseal: recovery keys. Drop the other kind's empty fields.
    kept = {k: v for k, v in data.items() if not (k.startswith(("recovery_", "unseal_")) and not v)}
    atomic_write(Path(dest), json.dumps(kept, indent=2) + "\n")
    Path(raw).unlink()


def parse_env_lines(text: str) -> list[tuple[str | None, str]]:
    """Split .env text into (key or None, raw line) so untouched lines survive byte for byte."""
    parsed: list[tuple[str | None, str]] = []
    for line in text.splitlines():
        body = line.strip()
        body = body[len("export ") :] if body.startswith("export ") else body
        key = body.split("=", 1)[0].strip() if "=" in body and not body.startswith("#") else None
        parsed.append((key, line))
    return parsed


def cmd_env_check(path: str) -> None:
    """Fail now, before anything changes, if .env exists but cannot be read and replaced."""
    env = Path(path)
    if env.exists() or env.is_symlink():
        read_text(env)
    if not os.access(env.parent, os.W_OK):
        raise Fail(f"cannot write in {env.parent}: permission denied")


def upsert_env(env: Path, updates: dict[str, str], mode: str = "replace") -> None:
    """Set KEY=VALUE lines in a .env file, keeping every other line byte for byte.

    With mode "keep", keys already in the file keep their value (an operator's choice).
    """
    updates = dict(updates)
    old = parse_env_lines(read_text(env)) if env.exists() else []
    if mode == "keep":
        for key, _ in old:
            updates.pop(key or "", None)
    lines = [f"{key}={updates.pop(key)}" if key in updates else raw for key, raw in old]
    lines += [f"{key}={value}" for key, value in updates.items()]
    atomic_write(env, "\n".join(lines) + "\n")


def cmd_env_upsert(path: str, mode: str = "replace") -> None:
    """Set the KEY=VALUE lines read on stdin in a .env file (see upsert_env)."""
    lines = sys.stdin.read().splitlines()
    upsert_env(Path(path), dict(line.split("=", 1) for line in lines if "=" in line.strip()), mode)


def cmd_write_file(path: str, mode: str = "0600") -> None:
    """Write stdin to a file (0600, or the octal mode given) atomically unless it already holds
    that; say which. 0640 is for the files containers read through the SECRETS_GID group."""
    dest, text = Path(path), sys.stdin.read()
    if dest.is_file() and read_text(dest) == text:
        os.chmod(dest, int(mode, 8))
        print("kept")
        return
    atomic_write(dest, text, int(mode, 8))
    print("written")


def cmd_secret_id_file(env_path: str, path: str) -> None:
    """Copy .env's VAULT_SECRET_ID into the 0640 file the backend re-reads at each login
    (VAULT_SECRET_ID_FILE), by a rename, so a directory bind mount sees the new one."""
    value = ""
    for key, line in parse_env_lines(read_text(Path(env_path))):
        if key == "VAULT_SECRET_ID":
            value = line.split("=", 1)[1].strip().strip("'\"")
    if not value:
        raise Fail(f"{env_path} has no VAULT_SECRET_ID")
    atomic_write(Path(path), value + "\n", 0o640)


def kv_data(path: str) -> dict:
    """The data of a `kv get -format=json` answer saved in `path` ({} for an empty file)."""
    text = Path(path).read_text(encoding="utf-8").strip() if path else ""
    return (json.loads(text).get("data") or {}).get("data") or {} if text else {}


def cmd_missing(current: str, fresh: str) -> None:
    """Print the keys of `fresh` absent from the KV read in `current` (empty if no secret)."""
    have = kv_data(current)
    new = json.loads(Path(fresh).read_text(encoding="utf-8"))
    print(json.dumps({key: value for key, value in new.items() if key not in have}))


def cmd_keys_of(path: str) -> None:
    """Print the key names of a JSON object file, comma-separated (names only, no values)."""
    print(",".join(json.loads(Path(path).read_text(encoding="utf-8"))))


def cmd_secret_id_body(env_path: str) -> None:
    """Print {"secret_id": ...} for the VAULT_SECRET_ID of a .env file, or nothing if unset."""
    env = Path(env_path)
    lines = parse_env_lines(read_text(env)) if env.exists() else []
    for key, line in lines:
        if key == "VAULT_SECRET_ID":
            value = line.split("=", 1)[1].strip().strip("'\"")
            if value:
                print(json.dumps({"secret_id": value}))
            return


def cmd_gen_app() -> None:
    """Print the fresh JSON body of secret/app/flask."""
    print(
        json.dumps(
            {
                "jwt_secret": secrets.token_hex(32),  # 256 random bits
                "admin_password": secrets.token_urlsafe(24),  # 32 chars, 192 bits
                "user_password": secrets.token_urlsafe(24),
                # What Redis (the rate-limit counters) asks the backend for; URL-safe
                # characters, so it fits a redis.conf line unquoted.
                "redis_password": secrets.token_urlsafe(32),
            }
        )
    )


def cmd_gen_jwt_key() -> None:
    """Print {"jwt_secret": ...}: a new signing key (256 random bits) for kv patch."""
    print(json.dumps({"jwt_secret": secrets.token_hex(32)}))


def cmd_jwt_key(what: str, required: str = "required") -> None:
    """Print {"jwt_secret": ...} of the `kv get -format=json` answer on stdin, for a variable
    or a pipe into kv patch; a version without one (deleted, destroyed) fails unless optional
    (then an empty line)."""
    data = (read_stdin_json().get("data") or {}).get("data") or {}
    key = data.get("jwt_secret")
    if isinstance(key, str) and key:
        print(json.dumps({"jwt_secret": key}))
    elif required == "optional":
        print("")
    else:
        raise Fail(f"{what} holds no jwt_secret (deleted or destroyed?)")


def cmd_live_versions() -> None:
    """Print the versions of `kv metadata get -format=json` on stdin that still hold data
    (neither deleted nor destroyed), oldest first, separated by spaces."""
    versions = (read_stdin_json().get("data") or {}).get("versions") or {}
    live = [
        int(number)
        for number, meta in versions.items()
        if not meta.get("destroyed") and not meta.get("deletion_time")
    ]
    print(" ".join(str(number) for number in sorted(live)))


def cmd_gen_db() -> None:
    """Print the fresh JSON body of secret/database/postgres: where to connect, no login.

    The backend reads this path. Its login is a lease (dynamic mode) or, in static mode, a
    non-superuser role the operator creates and writes here (VAULT_INTEGRATION.md).
    """
    print(
        json.dumps(
            {
                "host": os.environ.get("DB_HOST", "db"),
                "port": os.environ.get("DB_PORT", "5432"),
                "database": os.environ.get("DB_NAME", "appdb"),
            }
        )
    )


def cmd_gen_db_bootstrap(current: str = "") -> None:
    """Print the fresh JSON body of secret/database/bootstrap (operator-only).

    The database's bootstrap login: the Compose db container's superuser (POSTGRES_USER, the
    Docker secret db_password.txt), the database owner of setup.sh --local. A deployment from
    before this path existed kept that login in secret/database/postgres (`current`, a KV
    read): it carries over, since an existing database knows that password.
    """
    old = kv_data(current)
    if old.get("username") and old.get("password"):
        print(json.dumps({"username": old["username"], "password": old["password"]}))
        return
    # URL-safe alphabet: the password goes into a connection URL without quoting.
    body = {"username": os.environ.get("DB_USER", "app"), "password": secrets.token_urlsafe(24)}
    print(json.dumps(body))


def cmd_login_keys(current: str) -> None:
    """Print "yes" when the KV read in `current` holds a login (username or password)."""
    print("yes" if {"username", "password"} & set(kv_data(current)) else "")


def cmd_live_versions_below(metadata: str) -> None:
    """Comma-separated KV versions older than the current one and not destroyed yet."""
    data = json.loads(Path(metadata).read_text(encoding="utf-8")).get("data") or {}
    current = int(data.get("current_version") or 0)
    versions = data.get("versions") or {}
    live = sorted(
        int(v) for v, meta in versions.items() if int(v) < current and not meta["destroyed"]
    )
    print(",".join(str(v) for v in live))


def secret_id_expiry(answer: dict, warn_days: float) -> str:
    """One status line from a secret-id/lookup answer (never the secret ID itself)."""
    data = answer.get("data") or {}
    if not data:
        return "UNKNOWN TO VAULT (expired or destroyed): run vault/scripts/rotate-secret-id.sh"
    expires = str(data.get("expiration_time") or "")
    if not expires or expires.startswith("0001-01-01"):
        return "never expires (rotate it with vault/scripts/rotate-secret-id.sh)"
    when = datetime.fromisoformat(expires.replace("Z", "+00:00"))
    days = (when - datetime.now(UTC)).total_seconds() / 86400
    day = when.strftime("%Y-%m-%d %H:%M UTC")
    if days < warn_days:
        return f"EXPIRES {day} ({days:.1f} days): run vault/scripts/rotate-secret-id.sh now"
    return f"expires {day} ({days:.0f} days)"


COMMANDS = {
    "get": cmd_get,
    "keys-check": cmd_keys_check,
    "keys-field": cmd_keys_field,
    "keys-set": cmd_keys_set,
    "keys-install": cmd_keys_install,
    "keys-del": cmd_keys_del,
    "read-token": cmd_read_token,
    "unseal-key": cmd_unseal_key,
    "decode-root": cmd_decode_root,
    "generate-root-socket": cmd_generate_root_socket,
    "unseal-body": cmd_unseal_body,
    "env-check": cmd_env_check,
    "env-upsert": cmd_env_upsert,
    "write-file": cmd_write_file,
    "missing": cmd_missing,
    "keys-of": cmd_keys_of,
    "secret-id-body": cmd_secret_id_body,
    "secret-id-file": cmd_secret_id_file,
    "gen-app": cmd_gen_app,
    "gen-db": cmd_gen_db,
    "gen-db-bootstrap": cmd_gen_db_bootstrap,
    "login-keys": cmd_login_keys,
    "live-versions-below": cmd_live_versions_below,
    "gen-jwt-key": cmd_gen_jwt_key,
    "jwt-key": cmd_jwt_key,
    "live-versions": cmd_live_versions,
}


def main(argv: list[str]) -> int:
    """Dispatch one subcommand; any Fail becomes one line on stderr."""
    try:
        COMMANDS[argv[0]](*argv[1:])
    except Fail as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
