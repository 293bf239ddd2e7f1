"""Encryption of stored secrets (API keys, consumer secrets, webhook secrets).

Fernet (AES-128-CBC + HMAC-SHA256) through ``MultiFernet``: the first key encrypts, every key
decrypts, so a key can be rotated without downtime. The key comes from
``UPAY_BRIDGE_SECRET_KEY``; on the embedded default, when it is not set, a key is generated once
into the data directory (mode 0600) so a first run needs no setup.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import ConfigError

logger = logging.getLogger(__name__)

KEY_FILE = "secret.key"


class SecretBox:
    def __init__(self, keys: Iterable[str]) -> None:
        keys = [k for k in keys if k]
        if not keys:
            raise ConfigError("no encryption key configured")
        self._keys = keys
        try:
            self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])
        except (ValueError, TypeError) as exc:
            raise ConfigError("UPAY_BRIDGE_SECRET_KEY is not a valid Fernet key "
                              "(generate one with `upay-bridge secret-key`)") from exc

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except InvalidToken as exc:
            raise ConfigError("a stored secret cannot be decrypted with the configured keys") from exc

    def derive(self, purpose: bytes) -> bytes:
        """A key for another purpose (signing sessions), derived from the newest key."""
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                    info=b"upay-bridge:" + purpose).derive(self._keys[0].encode("ascii"))

    def rotate(self, token: str) -> str:
        try:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")
        except InvalidToken as exc:
            raise ConfigError("a stored secret cannot be decrypted with the configured keys "
                              "(keep the old key after the new one in UPAY_BRIDGE_SECRET_KEY "
                              "until rotate-secrets has run); nothing was changed") from exc


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")


def _file_key(path: Path) -> str | None:
    """The key generated into the data directory, when there is a valid one."""
    try:
        key = path.read_text().strip()
        Fernet(key.encode())
    except (OSError, ValueError, TypeError, UnicodeError):
        return None
    return key


def load_or_create_keys(configured: tuple[str, ...], data_dir: Path) -> tuple[str, ...]:
    path = data_dir / KEY_FILE
    if configured:
        # A bridge that started without the variable encrypted its secrets with the generated
        # key: once the variable is set (the warning below asks for it), that key still
        # decrypts, after the configured ones, until `rotate-secrets` has re-encrypted them.
        generated = _file_key(path)
        if generated is not None and generated not in configured:
            return (*configured, generated)
        return configured
    if path.exists():
        return (path.read_text().strip(),)
    data_dir.mkdir(parents=True, exist_ok=True)
    key = generate_key()
    # O_EXCL: two processes starting at once must not each write a different key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return (path.read_text().strip(),)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    logger.warning("UPAY_BRIDGE_SECRET_KEY is not set: generated an encryption key in %s; "
                   "set the variable in production", path)
    return (key,)
