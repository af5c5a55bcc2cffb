"""Device credentials (``device_credentials``, migration 8): one bearer token per unit.

A token is 32 random bytes (``secrets.token_urlsafe``, 43 characters), shown once
when issued and stored only as its SHA-256. A fast hash is enough here, and
Argon2 would be wrong: slow hashes protect *low-entropy* secrets (human
passwords) against guessing after a database leak, while 256 random bits cannot
be guessed whatever the hash costs; a fast hash also lets every ingest request
be checked by an indexed lookup instead of a deliberate ~50 ms of CPU.

A unit has at most one live token: issuing a new one revokes the previous ones
(a lost phone is cut off by issuing its replacement's token). HTTP ingest checks
tokens (see :mod:`api.routes.ingest`); the broker ACL will reuse this table.
"""

from __future__ import annotations

import hashlib
import secrets

import psycopg

from tracker.errors import StorageError, UnitNotFoundError
from tracker.store.pool import AsyncDb, connection

TOKEN_BYTES = 32


def token_digest(token: str) -> bytes:
    """SHA-256 of a token as stored (see the module docstring for why SHA-256)."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def issue_token_sync(conninfo: str, unit_id: str) -> str:
    """Create a new token for ``unit_id`` (revoking its previous ones) and return it, once."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    try:
        with psycopg.connect(conninfo) as conn, conn.transaction():
            row = conn.execute("SELECT 1 FROM units WHERE unit_id = %s FOR UPDATE", (unit_id,)).fetchone()
            if row is None:
                raise UnitNotFoundError(unit_id)
            conn.execute(
                "UPDATE device_credentials SET revoked_at = now() WHERE unit_id = %s AND revoked_at IS NULL",
                (unit_id,),
            )
            conn.execute(
                "INSERT INTO device_credentials (unit_id, token_sha256) VALUES (%s, %s)",
                (unit_id, token_digest(token)),
            )
    except psycopg.Error as exc:
        raise StorageError(f"cannot store the credential: {exc}") from exc
    return token


def revoke_tokens_sync(conninfo: str, unit_id: str) -> int:
    """Revoke every live token of ``unit_id``; return how many were live."""
    try:
        with psycopg.connect(conninfo) as conn, conn.transaction():
            cur = conn.execute(
                "UPDATE device_credentials SET revoked_at = now() WHERE unit_id = %s AND revoked_at IS NULL",
                (unit_id,),
            )
            return cur.rowcount
    except psycopg.Error as exc:
        raise StorageError(f"cannot revoke credentials: {exc}") from exc


async def unit_for_token(db: AsyncDb, token: str) -> str | None:
    """The unit a live token belongs to, or None (unknown or revoked)."""
    try:
        async with connection(db) as conn:
            cur = await conn.execute(
                "SELECT unit_id FROM device_credentials WHERE token_sha256 = %s AND revoked_at IS NULL",
                (token_digest(token),),
            )
            row = await cur.fetchone()
    except psycopg.Error as exc:
        raise StorageError(f"cannot check the device token: {exc}") from exc
    return None if row is None else str(row[0])


__all__ = ["issue_token_sync", "revoke_tokens_sync", "token_digest", "unit_for_token"]
