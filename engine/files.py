"""Where uploaded files' bytes live: a tiny storage interface and the local-disk store.

The database (``loom_files``) holds what a file is and who may see it; the
store holds only bytes, under names Loom makes up (random, never the user's
file name, so no upload can choose or guess a path).  An upload is streamed
into a temporary file in the same directory tree, counted and hashed as it
arrives, refused the moment it passes the size limit, and renamed into
place only when complete -- a failed or refused upload leaves nothing
behind, and a reader never sees half a file.

``FileStore`` is the whole interface the rest of Loom uses, so an
S3-compatible store would be one more class.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
import tempfile
from pathlib import Path
from typing import BinaryIO, Protocol

from sqlalchemy import delete, select

from . import platform as P
from .clock import to_db
from .sniff import HEAD_BYTES

FILES_ENV = "LOOM_FILES_DIR"
DEFAULT_DIR = "loom-files"
URL_PATTERN = "/api/files/{id}"     # where a stored file is downloaded (contract A3)
PENDING_TTL = dt.timedelta(hours=24)   # an upload never put on a record is removed after this


def file_url(file_id: int | str) -> str:
    return URL_PATTERN.format(id=file_id)


class FileTooLarge(Exception):
    """More bytes arrived than the limit allows; the partial upload is gone."""

    def __init__(self, limit: int):
        super().__init__(f"file larger than {limit} bytes")
        self.limit = limit


class PendingUpload(Protocol):
    """Bytes being received: ``write`` chunks, then ``commit`` (-> key) or ``abort``."""

    size: int
    head: bytes

    def write(self, chunk: bytes) -> None: ...
    def sha256(self) -> str: ...
    def commit(self) -> str: ...
    def abort(self) -> None: ...


class FileStore(Protocol):
    def begin(self, limit: int) -> PendingUpload: ...
    def open(self, key: str) -> BinaryIO: ...
    def local_path(self, key: str) -> Path | None: ...
    def delete(self, key: str) -> None: ...


class _LocalUpload:
    """A temporary file under ``<root>/.tmp``, renamed into ``<root>/<xx>/<random>`` on commit."""

    def __init__(self, root: Path, limit: int):
        self.root, self.limit = root, limit
        tmp_dir = root / ".tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="up-")
        self._file = os.fdopen(fd, "wb")
        self._tmp = Path(name)
        self._hash = hashlib.sha256()
        self.size = 0
        self.head = b""
        self._done = False

    def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.size += len(chunk)
        if self.size > self.limit:
            self.abort()
            raise FileTooLarge(self.limit)
        if len(self.head) < HEAD_BYTES:
            self.head += chunk[:HEAD_BYTES - len(self.head)]
        self._hash.update(chunk)
        self._file.write(chunk)

    def sha256(self) -> str:
        return self._hash.hexdigest()

    def commit(self) -> str:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        name = secrets.token_hex(16)
        key = f"{name[:2]}/{name}"
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._tmp, target)        # atomic on one file system: whole file or none
        self._done = True
        return key

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._file.close()
        finally:
            self._tmp.unlink(missing_ok=True)


class LocalFileStore:
    """Files on the local disk (one directory; several processes may share it)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()

    def begin(self, limit: int) -> _LocalUpload:
        return _LocalUpload(self.root, limit)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:       # keys are ours, but never follow one outside the root
            raise FileNotFoundError(key)
        return path

    def open(self, key: str) -> BinaryIO:
        return open(self._path(key), "rb")

    def local_path(self, key: str) -> Path | None:
        path = self._path(key)
        return path if path.is_file() else None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


def default_files_dir(db_url: str) -> Path:
    """``$LOOM_FILES_DIR``, else ``loom-files`` beside the SQLite file, else ``./loom-files``."""
    explicit = os.environ.get(FILES_ENV)
    if explicit:
        return Path(explicit)
    if db_url.startswith("sqlite") and ":memory:" not in db_url:
        db_path = Path(db_url.split("///", 1)[-1])
        return db_path.with_name(DEFAULT_DIR)
    return Path(DEFAULT_DIR)


def purge_abandoned_uploads(runtime, now: dt.datetime, batch: int = 500) -> dict:
    """Tick step: forget uploads never attached to a record within ``PENDING_TTL``.

    Rows go first, in one ``DELETE ... RETURNING`` (two workers can't both
    claim a row); the bytes are removed after the commit, so a crash in
    between leaves at worst an unreferenced file, never a row without bytes.
    """
    f = P.files
    cutoff = to_db(now - PENDING_TTL)
    with runtime.db.write() as conn:
        ids = select(f.c.id).where(f.c.status == "pending", f.c.created_at < cutoff).limit(batch)
        gone = conn.execute(delete(f).where(f.c.id.in_(ids.scalar_subquery())).returning(f.c.path)).scalars().all()
    for key in gone:
        try:
            runtime.files.delete(key)
        except OSError:
            pass
    return {"uploads_purged": len(gone)} if gone else {}
