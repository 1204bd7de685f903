"""The secret cache: one immutable entry per KV path, swapped atomically.

A hit is a dict lookup and a monotonic-time compare, with no lock: entries are never
mutated, a new entry replaces the old one in a single dict assignment (atomic under the GIL).
An expired entry is refreshed by the one thread that wins the path's lock without waiting;
the others return the old value at once (stale-while-revalidate).
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

    def invalidate(self, path: str | None = None) -> None:
        """Force the next read to go to Vault; keep the values as stale-if-error backup."""
        paths = [path] if path is not None else list(self.entries)
        for key in paths:
            entry = self.entries.get(key)
            if entry is not None:
                self.entries[key] = replace(entry, fresh_until=0.0)

    def reset_locks(self) -> None:
        """After fork: locks held by threads of the parent would never be released here."""
        self._locks = {}
        self._locks_lock = threading.Lock()
