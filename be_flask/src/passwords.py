"""Password hashing (argon2id) and the password policy (length and a common-password list)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from flask import Flask, current_app

from src.errors import ApiError

MIN_LENGTH = 12
# Long enough for any passphrase, short enough that hashing it is no denial of service.
MAX_LENGTH = 1024
COMMON_PASSWORDS_FILE = Path(__file__).resolve().parent.parent / "common-passwords.txt"


class Passwords:
    """Flask extension: the hasher, and a dummy hash so unknown users cost the same."""

    def init_app(self, app: Flask) -> None:
        """Build the hasher from settings (OWASP minimums: 19 MiB, 2 passes, 1 lane)."""
        hasher = PasswordHasher(
            time_cost=max(2, int(app.config["ARGON2_TIME_COST"])),
            memory_cost=max(19456, int(app.config["ARGON2_MEMORY_COST"])),
            parallelism=max(1, int(app.config["ARGON2_PARALLELISM"])),
            type=Type.ID,
        )
        app.extensions["passwords"] = (hasher, hasher.hash("dummy password for unknown users"))


def _hasher(app: Flask | None = None) -> tuple[PasswordHasher, str]:
    hasher, dummy = (app or current_app).extensions["passwords"]
    return hasher, dummy


def hash_password(password: str, app: Flask | None = None) -> str:
    """An argon2id hash of the password with this app's parameters."""
    return str(_hasher(app)[0].hash(password))


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when the password matches; an unknown user (None) is checked against a dummy hash."""
    hasher, dummy = _hasher()
    try:
        return bool(hasher.verify(password_hash or dummy, password)) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with other parameters than the current ones."""
    return bool(_hasher()[0].check_needs_rehash(password_hash))


@cache
def common_passwords() -> frozenset[str]:
    """The shipped list of common passwords, lower-cased."""
    lines = COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(x.strip().lower() for x in lines if x.strip() and not x.startswith("#"))


def check_password_policy(password: str, username: str = "") -> None:
    """Refuse short, huge, common or username-equal passwords (no composition rules: NIST)."""
    if len(password) < MIN_LENGTH:
        raise ApiError(400, f"password must be at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise ApiError(400, f"password must be at most {MAX_LENGTH} characters")
    if password.lower() in common_passwords() or password.lower() == username.lower():
        raise ApiError(400, "password is too common")
