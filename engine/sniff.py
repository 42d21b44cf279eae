"""What a file really is, from its first bytes -- never from what the client says.

Browsers send whatever the OS guesses from the file name, and an attacker
sends whatever they like; so an upload's type is decided here from magic
bytes (a small hand-written table covering what a CRM receives: photos,
scans, PDFs, Office documents, recordings).  ``classify`` combines the
sniffed kind with the declared type and the name's extension:

* a type we can sniff must agree with the content (an ``.exe`` declared
  ``image/png``, or HTML renamed ``.png``, is refused);
* content we recognise as dangerous (HTML, SVG, scripts, executables) is
  refused unless the field explicitly accepts that very type;
* content we can't sniff (plain text, CSV...) keeps the declared type,
  provided the declared type is not one we *could* have sniffed.

A hand-written table rather than a library: the formats that matter are
few and stable, the check must also cover our "same family" rules (a
``.docx`` is a zip, ``audio/mp4`` and ``video/mp4`` share a container),
and no well-kept pure-Python package does both.
"""
from __future__ import annotations

import mimetypes
from dataclasses import dataclass

HEAD_BYTES = 4096   # how much of the start of a file the sniffer looks at


@dataclass(frozen=True)
class Kind:
    """A family of content types that share one on-disk signature."""

    name: str
    canonical: str                # the type stored when the declared one is not in ``types``
    types: frozenset[str]         # declared types this content may legitimately carry
    image: bool = False           # a raster image (image fields accept only these)
    inline: bool = False          # safe to show inline in a browser (<img>)
    dangerous: bool = False       # active content: refused unless the field accepts exactly it


def _k(name, canonical, *types, **kw) -> Kind:
    return Kind(name, canonical, frozenset((canonical,) + types), **kw)


PNG = _k("png", "image/png", "image/x-png", "image/apng", image=True, inline=True)
JPEG = _k("jpeg", "image/jpeg", "image/jpg", "image/pjpeg", image=True, inline=True)
GIF = _k("gif", "image/gif", image=True, inline=True)
WEBP = _k("webp", "image/webp", image=True, inline=True)
BMP = _k("bmp", "image/bmp", "image/x-bmp", "image/x-ms-bmp", image=True)
TIFF = _k("tiff", "image/tiff", image=True)
HEIC = _k("heic", "image/heic", "image/heif", "image/heic-sequence", "image/heif-sequence", image=True)
AVIF = _k("avif", "image/avif", image=True)
PDF = _k("pdf", "application/pdf", "application/x-pdf")
ZIP = _k("zip", "application/zip", "application/x-zip-compressed", "application/x-zip",
         "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
         "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
         "application/vnd.openxmlformats-officedocument.presentationml.presentation",
         "application/vnd.oasis.opendocument.text", "application/vnd.oasis.opendocument.spreadsheet",
         "application/epub+zip")
OLE = _k("ole", "application/x-ole-storage", "application/msword", "application/vnd.ms-excel",
         "application/vnd.ms-powerpoint", "application/vnd.ms-outlook")
GZIP = _k("gzip", "application/gzip", "application/x-gzip")
SEVENZ = _k("7z", "application/x-7z-compressed")
RAR = _k("rar", "application/vnd.rar", "application/x-rar-compressed", "application/x-rar")
MP4 = _k("mp4", "video/mp4", "audio/mp4", "audio/x-m4a", "audio/m4a", "video/x-m4v", "video/quicktime", "video/3gpp",
         "audio/3gpp", "audio/aac")
MP3 = _k("mp3", "audio/mpeg", "audio/mp3", "audio/x-mpeg")
WAV = _k("wav", "audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave")
WEBM = _k("webm", "video/webm", "audio/webm", "video/x-matroska", "audio/x-matroska")
OGG = _k("ogg", "audio/ogg", "video/ogg", "application/ogg", "audio/opus")
AMR = _k("amr", "audio/amr")
HTML = _k("html", "text/html", "application/xhtml+xml", dangerous=True)
SVG = _k("svg", "image/svg+xml", dangerous=True)
XML = _k("xml", "application/xml", "text/xml")
EXE = _k("exe", "application/x-msdownload", "application/vnd.microsoft.portable-executable",
         "application/x-dosexec", "application/x-executable", "application/x-elf", "application/x-mach-binary",
         dangerous=True)
SCRIPT = _k("script", "text/x-shellscript", "application/x-sh", dangerous=True)

KINDS = (PNG, JPEG, GIF, WEBP, BMP, TIFF, HEIC, AVIF, PDF, ZIP, OLE, GZIP, SEVENZ, RAR, MP4, MP3, WAV, WEBM, OGG, AMR,
         HTML, SVG, XML, EXE, SCRIPT)
# declared type -> the kind that owns it; a declared type in here must match the content
SNIFFABLE = {t: k for k in KINDS for t in k.types}
INLINE_TYPES = frozenset(t for k in KINDS if k.inline for t in k.types)

_HEIC_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}
_HTML_MARKERS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<script", b"<iframe", b"<object", b"<embed",
                 b"<meta", b"<a ", b"<img", b"<style", b"<title", b"<form", b"<frameset")


# plain leading signatures; sniff() tries them after the checks that need more than a prefix
_SIGNATURES = (
    (b"%PDF-", PDF), ((b"PK\x03\x04", b"PK\x05\x06"), ZIP), (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", OLE),
    (b"\x1f\x8b", GZIP), (b"7z\xbc\xaf\x27\x1c", SEVENZ), (b"Rar!\x1a\x07", RAR), (b"ID3", MP3),
    (b"\x1a\x45\xdf\xa3", WEBM), (b"OggS", OGG), (b"#!AMR", AMR),
)


def sniff(head: bytes) -> Kind | None:
    """The kind of content starting with ``head``, or ``None`` if it has no signature we know."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith((b"GIF87a", b"GIF89a")):
        return GIF
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return WAV
    if head.startswith(b"BM") and len(head) > 14 and head[6:10] == b"\0\0\0\0":
        return BMP
    if head.startswith((b"II*\0", b"MM\0*")):
        return TIFF
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _HEIC_BRANDS:
            return HEIC
        if brand in _AVIF_BRANDS:
            return AVIF
        return MP4
    for prefixes, kind in _SIGNATURES:
        if head.startswith(prefixes):
            return kind
    if len(head) > 1 and head[0] == 0xFF and head[1] in (0xFB, 0xF3, 0xF2, 0xFA):     # MP3 frame without ID3
        return MP3
    if head.startswith(b"MZ") or head.startswith(b"\x7fELF") or head[:4] in (
            b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe"):
        return EXE
    if head.startswith(b"#!"):
        return SCRIPT
    return _sniff_markup(head)


def _sniff_markup(head: bytes) -> Kind | None:
    """HTML / SVG / XML text, as a browser would take it (BOM, blanks and case ignored)."""
    text = head.lstrip(b"\xef\xbb\xbf").lstrip(b" \t\r\n\f").lower()
    if not text.startswith(b"<"):
        return None
    if text.startswith(b"<svg") or b"<svg" in text:
        return SVG
    if any(m in text for m in _HTML_MARKERS):
        return HTML
    if text.startswith(b"<?xml"):
        return XML
    return None


def extension_type(filename: str) -> str | None:
    """The type a file name's extension implies (``None`` when there is no extension we know)."""
    guessed, _ = mimetypes.guess_type(filename, strict=False)
    if guessed is None:
        lower = filename.lower()
        for ext, t in ((".heic", "image/heic"), (".heif", "image/heif"), (".webp", "image/webp"), (".amr", "audio/amr"),
                       (".m4a", "audio/mp4"), (".avif", "image/avif")):
            if lower.endswith(ext):
                return t
    return guessed


@dataclass(frozen=True)
class Verdict:
    """The outcome of ``classify``: the type to store, or why the file is refused."""

    content_type: str | None
    kind: Kind | None
    problem: str | None = None       # 'mismatch' | 'dangerous' | 'not_image'
    claimed: str | None = None       # the declared/extension type the content contradicts


def normalise(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def classify(head: bytes, declared: str | None, filename: str, *, image: bool = False,
             accept: tuple[str, ...] | list[str] = ()) -> Verdict:
    """Decide the stored content type of an upload from its first bytes.

    ``image``: the field holds images, so the content must be a raster image.
    ``accept``: the field's accept list; a dangerous kind passes only if it
    names that exact type (someone really wants HTML attachments).
    """
    kind = sniff(head)
    claimed = [t for t in (normalise(declared), normalise(extension_type(filename))) if t]
    for t in claimed:
        owner = SNIFFABLE.get(t)
        if owner is not None and owner is not kind and not (kind is SVG and owner is XML):
            return Verdict(None, kind, "mismatch", t)
    if kind is not None and kind.dangerous:
        explicit = {normalise(a) for a in accept}
        if not (kind.types & explicit):
            return Verdict(None, kind, "dangerous", claimed[0] if claimed else None)
    if image and (kind is None or not kind.image):
        return Verdict(None, kind, "not_image", claimed[0] if claimed else None)
    if kind is not None:
        chosen = next((t for t in claimed if t in kind.types), kind.canonical)
        return Verdict(chosen, kind)
    chosen = next((t for t in claimed if t != "application/octet-stream"), "application/octet-stream")
    if b"\0" in head and chosen.startswith("text/"):
        chosen = "application/octet-stream"    # binary content is not text, whatever the name says
    return Verdict(chosen, None)


def inline_safe(content_type: str) -> bool:
    """May a browser show this inline?  Only raster images it decodes itself."""
    return normalise(content_type) in INLINE_TYPES
