"""Reading an app package from a folder or a ``.zip`` -- safely.

Packages come from admins' uploads, so a zip is treated as hostile: no paths
outside the root (zip-slip), no symlinks, bounded file count, file size and
total uncompressed size (zip bombs).  The result is an in-memory map of
relative path -> bytes; nothing is extracted to disk.
"""
from __future__ import annotations

import io
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

MAX_FILES = 2000
MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_TOTAL_BYTES = 100 * 1024 * 1024
MAX_RATIO = 200  # uncompressed / compressed, per member

DEFINITION_DIRS = ("forms", "flows", "rules", "reports")


# What a damaged or exotic zip raises besides BadZipFile: bad deflate data,
# truncation, unknown compression methods, encryption, odd header values.
_CORRUPT = (zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError, OSError, OverflowError)


class PackageError(Exception):
    """The package cannot be read at all (not a folder/zip, unsafe, too big)."""


@dataclass(frozen=True)
class SourcePackage:
    files: dict[str, bytes]  # posix relative path -> content
    origin: str

    def text(self, path: str) -> str:
        return self.files[path].decode("utf-8")

    def yaml_files(self, folder: str) -> list[str]:
        return sorted(p for p in self.files if p.startswith(folder + "/") and p.endswith((".yaml", ".yml"))
                      and p.count("/") == 1)

    def to_zip(self) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(self.files):
                zf.writestr(path, self.files[path])
        return buf.getvalue()


def _safe_relpath(name: str) -> str:
    p = PurePosixPath(name.replace("\\", "/"))
    unsafe = (not p.parts or p.is_absolute() or name.startswith("/") or ".." in p.parts
              or ":" in p.parts[0])
    if unsafe:
        raise PackageError(f"unsafe path in package: '{name}' (paths must stay inside the package)")
    return str(p)


def read_package(path: str | os.PathLike | bytes) -> SourcePackage:
    """Read a package from a folder path, a ``.zip`` path, or zip bytes."""
    if isinstance(path, (bytes, bytearray)):
        return _read_zip(bytes(path), "<upload>")
    p = Path(path)
    if p.is_dir():
        return _read_dir(p)
    if p.is_file():
        if not zipfile.is_zipfile(p):
            raise PackageError(f"{p}: not a package folder or .zip file")
        return _read_zip(p.read_bytes(), str(p))
    raise PackageError(f"{p}: no such folder or file")


def _read_dir(root: Path) -> SourcePackage:
    files: dict[str, bytes] = {}
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__")))
        for fn in sorted(filenames):
            if fn.startswith(".") or fn.endswith((".pyc", "~")) or fn == "__init__.py":
                continue
            full = Path(dirpath) / fn
            if full.is_symlink():
                continue
            rel = full.relative_to(root).as_posix()
            data = full.read_bytes()
            total += len(data)
            if len(data) > MAX_FILE_BYTES or total > MAX_TOTAL_BYTES or len(files) >= MAX_FILES:
                raise PackageError(f"{rel}: package too large (limits: {MAX_FILES} files, "
                                   f"{MAX_FILE_BYTES // 2**20} MB per file, {MAX_TOTAL_BYTES // 2**20} MB in all)")
            files[rel] = data
    if "app.yaml" not in files:
        raise PackageError(f"{root}: not an app package (no app.yaml at its root)")
    return SourcePackage(files, str(root))


def _read_zip(blob: bytes, origin: str) -> SourcePackage:
    try:
        zf = zipfile.ZipFile(io.BytesIO(blob))
    except (zipfile.BadZipFile, *_CORRUPT):
        raise PackageError(f"{origin}: not a valid .zip file") from None
    members = [m for m in zf.infolist() if not m.is_dir()]
    if len(members) > MAX_FILES:
        raise PackageError(f"{origin}: too many files ({len(members)} > {MAX_FILES})")
    names = [_safe_relpath(m.filename) for m in members]
    # A package zipped with its folder (automotive_crm/app.yaml) is accepted too.
    prefix = ""
    if "app.yaml" not in names:
        tops = {n.split("/", 1)[0] for n in names}
        if len(tops) == 1 and f"{next(iter(tops))}/app.yaml" in names:
            prefix = next(iter(tops)) + "/"
        else:
            raise PackageError(f"{origin}: not an app package (no app.yaml at its root)")
    files: dict[str, bytes] = {}
    total = 0
    for m, name in zip(members, names):
        if (m.external_attr >> 16) & 0o170000 == 0o120000:
            raise PackageError(f"{origin}: '{m.filename}' is a symbolic link; links are not allowed")
        if m.file_size > MAX_FILE_BYTES:
            raise PackageError(f"{origin}: '{m.filename}' is too large ({m.file_size} bytes > {MAX_FILE_BYTES})")
        if m.compress_size and m.file_size / m.compress_size > MAX_RATIO and m.file_size > 1_000_000:
            raise PackageError(f"{origin}: '{m.filename}' looks like a zip bomb (compression ratio "
                               f"{m.file_size // max(m.compress_size, 1)}:1)")
        total += m.file_size
        if total > MAX_TOTAL_BYTES:
            raise PackageError(f"{origin}: package too large when unpacked (> {MAX_TOTAL_BYTES // 2**20} MB)")
        try:
            with zf.open(m) as fh:
                data = fh.read(MAX_FILE_BYTES + 1)
        except (zipfile.BadZipFile, *_CORRUPT) as exc:
            raise PackageError(f"{origin}: '{m.filename}' cannot be read -- the .zip is damaged or uses an "
                               f"unsupported feature ({exc}); zip the package again") from None
        if len(data) > MAX_FILE_BYTES:
            raise PackageError(f"{origin}: '{m.filename}' is too large")
        rel = name[len(prefix):] if prefix and name.startswith(prefix) else name
        if rel.startswith(("__MACOSX/",)) or PurePosixPath(rel).name.startswith("."):
            continue
        files[rel] = data
    return SourcePackage(files, origin)
