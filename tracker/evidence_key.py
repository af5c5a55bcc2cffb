"""The installation's Ed25519 signing key for evidence exports: found, or generated once, on disk.

The private key never leaves this module's callers' memory: it is neither
logged nor returned by the API. Default place: ``<data_dir>/evidence/ed25519.key``
(PEM, PKCS#8, unencrypted, mode 0600 in a 0700 folder) with ``ed25519.pub``
(PEM SubjectPublicKeyInfo) beside it; ``SERENAZGO_EVIDENCE__KEY_FILE`` names an
existing key instead (e.g. one kept by the municipality's IT on a mounted secret).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tracker.config import Settings
from tracker.errors import ConfigError
from tracker.evidence import fingerprint, public_key_pem

log = logging.getLogger(__name__)

KEY_NAME = "ed25519.key"
PUB_NAME = "ed25519.pub"


@dataclass(frozen=True, slots=True)
class SigningKey:
    """The loaded key, where it lives, and whether this call created it."""

    key: Ed25519PrivateKey
    path: Path
    public_path: Path | None  # the .pub beside a generated key; None for a key given by setting
    created: bool

    @property
    def fingerprint(self) -> str:
        """SHA-256 (hex) of the raw public key."""
        return fingerprint(self.key.public_key())

    def __repr__(self) -> str:
        # Keep the private key out of logs and tracebacks that print locals.
        return f"SigningKey(path={self.path!s}, fingerprint={self.fingerprint}, created={self.created})"


def default_key_path(settings: Settings) -> Path:
    """Where the generated key lives: ``<data_dir>/evidence/ed25519.key``."""
    return settings.data_dir / "evidence" / KEY_NAME


def _read_key(path: Path) -> Ed25519PrivateKey:
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the evidence signing key {path}: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{path} is not an unencrypted PEM private key ({exc}); "
            "make one with `openssl genpkey -algorithm ed25519 -out FILE`"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} holds a {type(key).__name__}; evidence is signed with Ed25519 only")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("the evidence signing key %s is readable by others (mode %o): chmod 600 it", path, mode)
    return key


def _write_public(key: Ed25519PrivateKey, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(public_key_pem(key.public_key()), encoding="ascii")
    tmp.chmod(0o644)
    tmp.replace(path)


def load_signing_key(settings: Settings) -> SigningKey:
    """The installation's key: ``evidence.key_file`` if set, else the default one, generated if absent."""
    given = settings.evidence.key_file
    if given is not None:
        if not given.exists():
            raise ConfigError(
                f"SERENAZGO_EVIDENCE__KEY_FILE={given} does not exist: point it at an Ed25519 PEM key, "
                "or unset it to use (and generate) the one under the data folder"
            )
        return SigningKey(_read_key(given), given, None, created=False)
    path = default_key_path(settings)
    pub = path.with_name(PUB_NAME)
    if path.exists():
        key = _read_key(path)
        if not pub.exists():
            _write_public(key, pub)
        return SigningKey(key, path, pub, created=False)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Written whole to a private temporary file, then hard-linked into place: link() fails if the key
    # exists, so two processes starting together never both create one, and none reads a half-written one.
    tmp = path.with_name(f".{KEY_NAME}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            existing = _read_key(path)
            if not pub.exists():
                _write_public(existing, pub)
            return SigningKey(existing, path, pub, created=False)
    except OSError as exc:
        raise ConfigError(f"cannot create the evidence signing key {path}: {exc.strerror}") from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    _write_public(key, pub)
    log.info("generated the evidence signing key %s (fingerprint %s)", path, fingerprint(key.public_key()))
    return SigningKey(key, path, pub, created=True)


def installation_id(settings: Settings, key: SigningKey) -> str:
    """``evidence.installation_id``, or one derived from the key's fingerprint when unset."""
    return settings.evidence.installation_id or f"serenazgo-{key.fingerprint[:16]}"


def software_version() -> str:
    """serenazgo's installed version (``unknown`` when run from a tree that was never installed)."""
    try:
        return dist_version("serenazgo")
    except PackageNotFoundError:
        return "unknown"
