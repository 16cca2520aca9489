"""Authenticated encryption for data at rest, from `cryptography` (no home-made primitives).

- `derive_key`: HKDF-SHA256 turns one configured secret into independent keys, one per purpose
  (the `info` string), so the key that hashes chat ids never encrypts anything and the key of
  the queue's blobs is not the key of the bot's records.
- `Sealer`: AES-256-GCM. A sealed blob is `version (1 byte) | nonce (12) | ciphertext | tag
  (16)`; the associated data binds a blob to its place (a job id and a field name), so a blob
  copied to another job or field does not open. Tampering raises `TamperedError`, never a
  misread value.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = b"\x01"
NONCE_BYTES = 12
OVERHEAD = len(VERSION) + NONCE_BYTES + 16
_SALT = b"hbscreen/hkdf/v1"


class TamperedError(ValueError):
    """A sealed blob failed authentication: altered, truncated, from another place, or sealed
    with another key."""


def derive_key(secret: bytes, info: str, length: int = 32) -> bytes:
    """One key per purpose (`info`) from the one configured secret (HKDF-SHA256)."""
    if not secret:
        raise ValueError("the secret must not be empty")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=_SALT, info=info.encode())
    return hkdf.derive(secret)


class Sealer:
    """AES-256-GCM with a random 96-bit nonce per blob (safe far beyond this service's volume:
    2^32 blobs per key keep the collision risk below 2^-32)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("an AES-256 key has 32 bytes")
        self._aead = AESGCM(key)

    @classmethod
    def from_secret(cls, secret: bytes, info: str) -> Sealer:
        return cls(derive_key(secret, info))

    def seal(self, plain: bytes, aad: bytes = b"") -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return VERSION + nonce + self._aead.encrypt(nonce, plain, aad)

    def open(self, blob: bytes, aad: bytes = b"") -> bytes:
        if len(blob) < OVERHEAD or blob[:1] != VERSION:
            raise TamperedError("not a sealed blob of this version")
        nonce, body = blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, aad)
        except InvalidTag:
            raise TamperedError("sealed blob failed authentication") from None
