"""Secrets at rest: AES-256-GCM under the master key.

A sealed secret is `v1` ‖ 12-byte nonce ‖ ciphertext+tag, and the row's name is
bound in as associated data, so a ciphertext copied onto another endpoint's row
does not open there.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from receiver.core import base64url, config
from receiver.core.errors import ConfigError, SecretDecryptError

log = logging.getLogger("receiver.core.crypto")

_VERSION = b"\x01"
_KEY_FILE = "master.key"


def generate_key() -> str:
    """A fresh master key as URL-safe base64 (what `receiver keygen` prints)."""
    return base64url.encode(secrets.token_bytes(config.MASTER_KEY_BYTES))


def master_key(settings: config.Settings) -> bytes:
    """RECEIVER_MASTER_KEY, or in development a key file kept under RECEIVER_HOME."""
    if settings.master_key is not None:
        return settings.master_key
    path = settings.home / _KEY_FILE
    if path.exists():
        return _read_key_file(path)
    settings.home.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(generate_key() + "\n")
    log.warning(
        "RECEIVER_MASTER_KEY is not set: created a development key at %s (mode 0600); "
        "set RECEIVER_MASTER_KEY in production (`receiver keygen`)",
        path,
    )
    return _read_key_file(path)


def _read_key_file(path: Path) -> bytes:
    try:
        return config.decode_master_key(path.read_text().strip())
    except ValueError:
        raise ConfigError(
            f"{path}: not a {config.MASTER_KEY_BYTES}-byte URL-safe base64 key; delete it or set RECEIVER_MASTER_KEY"
        ) from None


def seal(key: bytes, plaintext: str, *, context: str) -> bytes:
    """Encrypt `plaintext`, binding it to `context` (the owning row's name)."""
    nonce = secrets.token_bytes(12)
    return _VERSION + nonce + AESGCM(key).encrypt(nonce, plaintext.encode(), context.encode())


def open_sealed(key: bytes, sealed: bytes, *, context: str) -> str:
    """Decrypt what `seal` produced; SecretDecryptError when the key or context is wrong."""
    if len(sealed) < 1 + 12 + 16 or sealed[:1] != _VERSION:
        raise SecretDecryptError(f"secret of {context!r} is not in a known sealed format")
    try:
        return AESGCM(key).decrypt(sealed[1:13], sealed[13:], context.encode()).decode()
    except InvalidTag:
        raise SecretDecryptError(
            f"secret of {context!r} does not open under the configured RECEIVER_MASTER_KEY"
        ) from None
