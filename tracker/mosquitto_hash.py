"""Passwords hashed the way Mosquitto 2.0 checks them: ``$7$<iterations>$<base64 salt>$<base64 hash>``.

This is the format ``mosquitto_passwd`` writes (PBKDF2-HMAC-SHA512, a 12-byte
salt, a 64-byte derived key, standard base64 with padding), checked against
Debian's ``mosquitto_passwd`` 2.0.11 and a real broker in
``tests/mqtt_bridge/test_broker_acl.py``. A device token is hashed once, when it
is issued (:func:`tracker.store.credentials.issue_token_sync`), because the
broker's password file cannot be derived from the SHA-256 kept for HTTP ingest.

:data:`ITERATIONS` is ``mosquitto_passwd``'s own default (101), not a high
count: the secrets hashed here are 256 random bits (device tokens, service
account passwords) that no iteration count makes easier or harder to guess,
while Mosquitto runs the PBKDF2 on its single thread at every CONNECT, so a
high count would slow down a fleet reconnecting after a broker restart.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

PREFIX = "$7$"
ITERATIONS = 101
SALT_BYTES = 12
KEY_BYTES = 64


def mosquitto_hash(password: str, *, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    """``password`` hashed for a Mosquitto 2.0 password file (``$7$``, PBKDF2-SHA512)."""
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    key = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, KEY_BYTES)
    return f"{PREFIX}{iterations}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"


def verify_mosquitto_hash(password: str, encoded: str) -> bool:
    """True when ``password`` matches the ``$7$`` hash ``encoded`` (False for any other format)."""
    if not encoded.startswith(PREFIX):
        return False
    parts = encoded[len(PREFIX) :].split("$")
    if len(parts) != 3 or not parts[0].isdigit():
        return False
    try:
        salt = base64.b64decode(parts[1], validate=True)
        key = base64.b64decode(parts[2], validate=True)
    except (binascii.Error, ValueError):
        return False
    iterations = int(parts[0])
    if iterations < 1 or not key:
        return False
    got = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, len(key))
    return hmac.compare_digest(got, key)


__all__ = ["ITERATIONS", "mosquitto_hash", "verify_mosquitto_hash"]
