"""Reading a KV version 2 secret: its data and its version number."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from .errors import SecretNotFoundError
from .transport.ha import HAAdapter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SecretVersion:
    """One version of a KV v2 secret (the latest unless the path asks for ?version=N)."""

    data: dict[str, Any]
    version: int | None
    created_time: str | None = None


def read_secret_version(adapter: HAAdapter, mount: str, path: str) -> SecretVersion:
    """GET <mount>/data/<path> (the adapter adds the token and retries idempotent reads)."""
    path = path.strip("/")
    log.debug("reading secret %s/%s", mount, path)
    response = adapter.get(f"/v1/{mount}/data/{path}")
    body = response.get("data") if isinstance(response, dict) else None
    if not body or body.get("data") is None:
        raise SecretNotFoundError(f"{mount}/{path} has no current version")
    metadata = body.get("metadata") or {}
    version = metadata.get("version")
    log.debug("reading secret %s/%s: ok (version %s)", mount, path, version)
    return SecretVersion(dict(body["data"]), version, metadata.get("created_time"))
