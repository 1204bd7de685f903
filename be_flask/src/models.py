"""Tables of the backend: users, revoked tokens and the cache generation shared by workers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Boolean, DateTime, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ROLES = ("admin", "user")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base whose metadata Alembic migrations describe."""


class User(Base):
    """An account; token_version is bumped to end every session of the user at once."""

    __tablename__ = "users"
    # Ids are never reused (tokens name users by id): SQLite needs AUTOINCREMENT for that.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False, default="user")
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    token_version: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    def to_dict(self) -> dict[str, Any]:
        """The public view of a user (never the password hash)."""
        return public_user(self)


def public_user(user: Any) -> dict[str, Any]:
    """The public view of a user row, ORM or not (never the password hash)."""
    return {
        "id": user.id,
        "username": user.username,
        "role": user.role,
        "enabled": user.enabled,
        "created_at": user.created_at.isoformat() if user.created_at else None,
    }


class RevokedToken(Base):
    """A token id that must not be accepted again (logout, or a refresh token rotated away)."""

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_type: Mapped[str] = mapped_column(String(16), nullable=False)
    reason: Mapped[str] = mapped_column(String(16), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    revoked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RevokedFamily(Base):
    """A login session (all tokens descending from one login) ended by logout or token reuse."""

    __tablename__ = "revoked_families"

    family: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(16), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    revoked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CacheGeneration(Base):
    """A counter bumped by POST /api/admin/vault/refresh; each worker drops its cache on change."""

    __tablename__ = "cache_generation"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    generation: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class Seed(Base):
    """A one-time seed that has run (default users): never run again, even if undone."""

    __tablename__ = "seeds"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    seeded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=utcnow)
