"""Database chores: the default users admin and user, with passwords from secret/app/flask."""

from __future__ import annotations

import logging

from flask import Flask
from sqlalchemy import Connection, select

from src.app_secrets import app_secrets
from src.database import insert_ignoring_conflict
from src.models import Seed, User, utcnow
from src.passwords import hash_password

log = logging.getLogger(__name__)

DEFAULT_USERS = (("admin", "admin", "admin_password"), ("user", "user", "user_password"))


DEFAULT_USERS_SEED = "default_users"


def create_default_users(connection: Connection, app: Flask) -> list[str]:
    """Create admin and user once per database; never overwritten, never brought back."""
    if connection.scalar(select(Seed.name).where(Seed.name == DEFAULT_USERS_SEED)):
        return []
    existing = set(connection.scalars(select(User.username)).all())
    missing = [entry for entry in DEFAULT_USERS if entry[0] not in existing]
    if not missing:
        _remember_seeded(connection)
        return []
    log.info("creating default users", extra={"users": [name for name, _, _ in missing]})
    secrets = app_secrets(app)
    created = []
    for username, role, secret_key in missing:
        values = {
            "username": username,
            "password_hash": hash_password(secrets[secret_key], app),
            "role": role,
            "enabled": True,
            "token_version": 0,
            "created_at": utcnow(),
        }
        # A concurrent worker may insert the same user first: that row wins, ours is dropped.
        result = connection.execute(
            insert_ignoring_conflict(connection.dialect.name, User, values, "username")
        )
        if result.rowcount:
            created.append(username)
    _remember_seeded(connection)
    log.info("creating default users: ok", extra={"users_created": created})
    return created


def _remember_seeded(connection: Connection) -> None:
    values = {"name": DEFAULT_USERS_SEED, "seeded_at": utcnow()}
    connection.execute(insert_ignoring_conflict(connection.dialect.name, Seed, values, "name"))
    connection.commit()
