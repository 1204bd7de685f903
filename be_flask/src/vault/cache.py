"""The secret cache: one immutable entry per KV path, swapped atomically.

A hit is a dict lookup and a monotonic-time compare, with no lock: entries are never
mutated, a new entry replaces the old one in a single dict assignment (atomic under the GIL).
An expired entry is refreshed by the one thread that wins the path's lock without waiting;
the others return the old value at once (stale-while-revalidate). A path Vault said is gone
(deleted or destroyed) loses its entry at once, so it is never served stale, and is remembered
as missing until its TTL ends, so that asking again costs Vault nothing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Any, Literal

Source = Literal["vault", "cache", "fallback"]


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """A secret value and where/when it came from."""

    data: dict[str, Any]
    fresh_until: float  # monotonic; a hit needs now < fresh_until
    fetched_at: float  # monotonic time it was read (or built, for fallback)
    source: Source  # "cache": a vault value served on past its TTL while Vault is down
    version: int | None = None
    created_time: str | None = None  # when Vault wrote this version (ISO 8601), if known


class SecretCache:
    """Entries by path, plus a lock per path for the single refresher."""

    def __init__(self) -> None:
        self.entries: dict[str, CacheEntry] = {}
        self.missing: dict[str, float] = {}  # path -> monotonic time until which it is gone
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def lock_for(self, path: str) -> threading.Lock:
        """The lock that elects the refresher of one path."""
        lock = self._locks.get(path)
        if lock is None:
            with self._locks_lock:
                lock = self._locks.setdefault(path, threading.Lock())
        return lock

    def put(self, path: str, entry: CacheEntry) -> None:
        """Publish a new entry for readers (one atomic assignment)."""
        self.entries[path] = entry

    def forget(self, path: str, missing_until: float | None = None) -> None:
        """Vault refuses `path` now: drop its value (no stale-if-error); with `missing_until`,
        remember until then that it is gone."""
        self.entries.pop(path, None)
        if missing_until is not None:
            self.missing[path] = missing_until

    def is_missing(self, path: str, now: float) -> bool:
        """True while Vault's last answer for `path` (within its TTL) was that it is gone."""
        until = self.missing.get(path)
        return until is not None and now < until

    def invalidate(self, path: str | None = None) -> None:
        """Force the next read to go to Vault; keep the values as stale-if-error backup."""
        if path is None:
            self.missing.clear()
        else:
            self.missing.pop(path, None)
        paths = [path] if path is not None else list(self.entries)
        for key in paths:
            entry = self.entries.get(key)
            if entry is not None:
                self.entries[key] = replace(entry, fresh_until=0.0)

    def reset_locks(self) -> None:
        """After fork: locks held by threads of the parent would never be released here."""
        self._locks = {}
        self._locks_lock = threading.Lock()
