"""Per-file check results keyed by content, so re-validating only re-checks what changed.

Validating a package is mostly pure functions of one file's text (does this
template parse, what does it declare).  An analyst's loop -- edit one file,
run ``loom validate`` again, or type in the studio, which re-validates on
every pause -- repeats those checks for files that did not change.  This
cache remembers small JSON results under a key that covers everything the
result depends on (the file's path and bytes plus a fingerprint of the
checking code), so a stale answer is impossible by construction: any change
to the file or to the checker is a different key.

Results live in memory for the process; the CLI also keeps them on disk
(``$LOOM_CACHE_DIR``, default ``~/.cache/loom``; ``loom validate --no-cache``
or ``LOOM_CACHE_DIR=`` turns that off).  A missing, unreadable or corrupt
cache file is simply an empty cache.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

MAX_ENTRIES = 4000   # per namespace; a CRM-sized package has ~100 checked files


def fingerprint(*parts: str | bytes) -> str:
    """A short, stable digest of ``parts`` (code version, path, file bytes...)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8") if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:40]


def source_fingerprint(module_file: str, *extra: str) -> str:
    """Fingerprint of a checker module's own source: editing the checker invalidates its results."""
    return fingerprint(Path(module_file).read_bytes(), *extra)


def default_directory() -> Path | None:
    configured = os.environ.get("LOOM_CACHE_DIR")
    if configured is not None:
        return Path(configured) if configured.strip() else None
    return Path.home() / ".cache" / "loom"


class CheckCache:
    """Namespaced ``key -> JSON value`` memory cache with optional disk persistence."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._memory: dict[str, dict[str, Any]] = {}
        self._directory: Path | None = None
        self._loaded: set[str] = set()
        self._dirty: set[str] = set()

    def use_directory(self, directory: Path | None) -> None:
        """Persist to ``directory`` (``None``: memory only). Call before checks run."""
        with self._lock:
            self._directory = directory
            self._loaded.clear()

    def _file(self, namespace: str) -> Path | None:
        return None if self._directory is None else self._directory / f"{namespace}.json"

    def _table(self, namespace: str) -> dict[str, Any]:
        table = self._memory.setdefault(namespace, {})
        path = self._file(namespace)
        if path is not None and namespace not in self._loaded:
            self._loaded.add(namespace)
            try:
                stored = json.loads(path.read_text("utf-8"))
                if isinstance(stored, dict):
                    table.update({k: v for k, v in stored.items() if k not in table})
            except (OSError, ValueError):
                pass
        return table

    def get(self, namespace: str, key: str) -> Any | None:
        with self._lock:
            return self._table(namespace).get(key)

    def put(self, namespace: str, key: str, value: Any) -> None:
        with self._lock:
            table = self._table(namespace)
            table.pop(key, None)          # re-insert: dicts keep order, so the oldest entries go first
            table[key] = value
            while len(table) > MAX_ENTRIES:
                del table[next(iter(table))]
            self._dirty.add(namespace)

    def flush(self) -> None:
        """Write changed namespaces to disk atomically; failures only lose the cache."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            if self._directory is None:
                return
            for namespace in dirty:
                path = self._file(namespace)
                tmp = None
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{namespace}.", suffix=".tmp")
                    with os.fdopen(fd, "w", encoding="utf-8") as out:
                        json.dump(self._memory.get(namespace, {}), out, ensure_ascii=False, separators=(",", ":"))
                    os.replace(tmp, path)
                except OSError:
                    if tmp is not None:
                        Path(tmp).unlink(missing_ok=True)


checks = CheckCache()
