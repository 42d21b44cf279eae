"""Encryption of personal data at rest (fields marked ``pii: true``).

* Values are encrypted with AES-256-GCM; the stored text is
  ``<key id>:<base64(nonce | ciphertext)>`` so keys can rotate: new writes use
  the newest key, old values stay readable until ``loom keys rotate``
  re-encrypts them.
* Exact-match search uses a *blind index*: HMAC-SHA256 of the normalised
  value under a separate derived key, stored beside the ciphertext.
* Keys come from ``LOOM_SECRET_KEYS`` (comma-separated ``id=base64key``,
  newest last), else ``LOOM_SECRET_KEY``, else a key file next to a SQLite
  database (created with mode 0600 on first use).  A database dump therefore
  holds no plaintext phone or ID numbers.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class CryptoError(Exception):
    pass


@dataclass(frozen=True)
class KeyRing:
    keys: dict[str, bytes]   # id -> 32-byte key, insertion order = age
    current: str

    @classmethod
    def from_environment(cls, keyfile: Path | None = None) -> "KeyRing":
        spec = os.environ.get("LOOM_SECRET_KEYS")
        if spec:
            keys = {}
            for part in spec.split(","):
                kid, _, b64 = part.strip().partition("=")
                keys[kid] = _decode_key(b64)
            return cls(keys, list(keys)[-1])
        single = os.environ.get("LOOM_SECRET_KEY")
        if single:
            return cls({"k1": _decode_key(single)}, "k1")
        path = keyfile or Path(".loom-secret-key")
        if path.exists():
            return cls.from_environment_text(path.read_text())
        key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"k1={key}\n")
        return cls({"k1": _decode_key(key)}, "k1")

    @classmethod
    def from_environment_text(cls, text: str) -> "KeyRing":
        keys = {}
        for line in text.splitlines():
            if "=" in line:
                kid, _, b64 = line.strip().partition("=")
                keys[kid] = _decode_key(b64)
        if not keys:
            raise CryptoError("the key file holds no keys (expected lines like k1=<base64 key>)")
        return cls(keys, list(keys)[-1])

    def _index_key(self) -> bytes:
        # The blind-index key derives from the *first* key so rotation does not
        # change search hashes.
        first = next(iter(self.keys.values()))
        return hashlib.sha256(b"loom-blind-index" + first).digest()

    def encrypt(self, plaintext: str) -> str:
        nonce = secrets.token_bytes(12)
        ct = AESGCM(self.keys[self.current]).encrypt(nonce, plaintext.encode("utf-8"), None)
        return f"{self.current}:{base64.urlsafe_b64encode(nonce + ct).decode()}"

    def decrypt(self, stored: str) -> str:
        kid, _, b64 = stored.partition(":")
        key = self.keys.get(kid)
        if key is None:
            raise CryptoError(f"value encrypted with unknown key '{kid}'; add it to LOOM_SECRET_KEYS")
        raw = base64.urlsafe_b64decode(b64.encode())
        return AESGCM(key).decrypt(raw[:12], raw[12:], None).decode("utf-8")

    def blind_index(self, plaintext: str) -> str:
        norm = "".join(str(plaintext).split()).lower()
        return hmac.new(self._index_key(), norm.encode("utf-8"), hashlib.sha256).hexdigest()

    def needs_rotation(self, stored: str) -> bool:
        return not stored.startswith(self.current + ":")


def _decode_key(b64: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(b64.strip() + "=" * (-len(b64.strip()) % 4))
    except Exception:
        raise CryptoError("secret key is not valid base64") from None
    if len(key) != 32:
        raise CryptoError("secret key must be 32 bytes (base64 of 32 random bytes)")
    return key


def mask(value: str | None) -> str | None:
    """``13812341234`` -> ``138****1234``; ID numbers keep the first 3 and last 4."""
    if value is None:
        return None
    s = str(value)
    if len(s) <= 4:
        return "*" * len(s)
    if len(s) <= 7:
        return s[:1] + "*" * (len(s) - 2) + s[-1:]
    return s[:3] + "*" * (len(s) - 7) + s[-4:]
