"""Device credentials (``device_credentials``, migration 8): one bearer token per unit.

A token is 32 random bytes (``secrets.token_urlsafe``, 43 characters), shown once
when issued and stored only as its SHA-256. A fast hash is enough here, and
Argon2 would be wrong: slow hashes protect *low-entropy* secrets (human
passwords) against guessing after a database leak, while 256 random bits cannot
be guessed whatever the hash costs; a fast hash also lets every ingest request
be checked by an indexed lookup instead of a deliberate ~50 ms of CPU.

A unit has at most one live token: issuing a new one revokes the previous ones
(a lost phone is cut off by issuing its replacement's token). HTTP ingest checks
tokens (see :mod:`api.routes.ingest`). The same token is the unit's MQTT password
(username: the unit id): ``mqtt_hash`` (migration 10) keeps it hashed as Mosquitto
checks it (:mod:`tracker.mosquitto_hash`), and :func:`broker_credentials_sync` is
what the broker's password file and ACL are rendered from (:mod:`mqtt_bridge.broker_acl`).
Tokens issued before migration 10 have no ``mqtt_hash``: they work on HTTP only until reissued.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import psycopg

from tracker.errors import StorageError, UnitNotFoundError
from tracker.mosquitto_hash import mosquitto_hash
from tracker.store.pool import AsyncDb, storage, sync_storage

TOKEN_BYTES = 32


def token_digest(token: str) -> bytes:
    """SHA-256 of a token as stored (see the module docstring for why SHA-256)."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def issue_token_sync(conninfo: str, unit_id: str) -> str:
    """Create a new token for ``unit_id`` (revoking its previous ones) and return it, once."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    with sync_storage(conninfo, "store the credential") as conn, conn.transaction():
        row = conn.execute("SELECT 1 FROM units WHERE unit_id = %s FOR UPDATE", (unit_id,)).fetchone()
        if row is None:
            raise UnitNotFoundError(unit_id)
        conn.execute(
            "UPDATE device_credentials SET revoked_at = now() WHERE unit_id = %s AND revoked_at IS NULL",
            (unit_id,),
        )
        conn.execute(
            "INSERT INTO device_credentials (unit_id, token_sha256, mqtt_hash) VALUES (%s, %s, %s)",
            (unit_id, token_digest(token), mosquitto_hash(token)),
        )
    return token


def revoke_tokens_sync(conninfo: str, unit_id: str) -> int:
    """Revoke every live token of ``unit_id``; return how many were live."""
    with sync_storage(conninfo, "revoke credentials") as conn, conn.transaction():
        cur = conn.execute(
            "UPDATE device_credentials SET revoked_at = now() WHERE unit_id = %s AND revoked_at IS NULL",
            (unit_id,),
        )
    return cur.rowcount


async def unit_for_token(db: AsyncDb, token: str) -> str | None:
    """The unit a live token belongs to, or None (unknown or revoked)."""
    async with storage(db, "check the device token") as conn:
        cur = await conn.execute(
            "SELECT unit_id FROM device_credentials WHERE token_sha256 = %s AND revoked_at IS NULL",
            (token_digest(token),),
        )
        row = await cur.fetchone()
    return None if row is None else str(row[0])


@dataclass(frozen=True, slots=True)
class BrokerCredential:
    """A live credential: its unit (MQTT username), ``$7$`` hash ("" before migration 10), external ids."""

    unit_id: str
    mqtt_hash: str
    external_ids: dict[str, str]


_BROKER_CREDENTIALS_SQL = """
SELECT c.unit_id, coalesce(c.mqtt_hash, ''), u.external_ids
FROM device_credentials c JOIN units u USING (unit_id)
WHERE c.revoked_at IS NULL
ORDER BY c.unit_id, c.credential_id
"""

# Changes whenever a credential is issued or revoked or any external id changes (an OwnTracks
# user or DJI serial moves the ACL): cheap enough to run every few seconds, and it ignores the
# status updates that touch ``units`` all day long. One pass over each table.
_FINGERPRINT_SQL = """
SELECT c.issued, c.last_change, c.live, e.ids, e.digest
FROM (SELECT count(*) AS issued,
             max(greatest(created_at, revoked_at)) AS last_change,
             count(*) FILTER (WHERE revoked_at IS NULL) AS live
        FROM device_credentials) c,
     (SELECT count(*) AS ids,
             coalesce(sum(hashtext(protocol || ' ' || external_id || ' ' || unit_id)::bigint), 0) AS digest
        FROM unit_external_ids) e
"""


def _rows(conn: psycopg.Connection[Any] | str, sql: str, what: str) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` on ``conn`` (a connection, or a conninfo to connect to for the occasion)."""
    try:
        if isinstance(conn, str):
            with psycopg.connect(conn, autocommit=True) as own:
                return own.execute(sql).fetchall()
        return conn.execute(sql).fetchall()
    except psycopg.Error as exc:
        raise StorageError(f"cannot {what}: {exc}") from exc


def broker_credentials_sync(conn: psycopg.Connection[Any] | str) -> list[BrokerCredential]:
    """Every live credential with its unit's external ids (ordered by unit id); ``mqtt_hash`` "" if none."""
    rows = _rows(conn, _BROKER_CREDENTIALS_SQL, "load the device credentials")
    return [
        BrokerCredential(str(u), str(h), {str(k): str(v) for k, v in (e or {}).items()}) for u, h, e in rows
    ]


def credentials_fingerprint_sync(conn: psycopg.Connection[Any] | str) -> tuple[object, ...]:
    """A value that changes when the broker's password file or ACL would (see ``_FINGERPRINT_SQL``)."""
    rows = _rows(conn, _FINGERPRINT_SQL, "read the device credentials")
    return tuple(rows[0]) if rows else ()


__all__ = [
    "BrokerCredential",
    "broker_credentials_sync",
    "credentials_fingerprint_sync",
    "issue_token_sync",
    "revoke_tokens_sync",
    "token_digest",
    "unit_for_token",
]
