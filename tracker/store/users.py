"""Users, console sessions and API tokens (``users``, ``user_tokens``, migration 10).

Sessions and API tokens are the same kind of secret: 32 random bytes, handed out
once with a prefix that says what they are (``szs_`` a console session, ``sza_``
an API token: a leaked one is recognisable in a log or a paste) and stored only as
their SHA-256. As for device tokens (:mod:`tracker.store.credentials`), a fast
hash is right for 256 random bits; Argon2 is for the users' passwords
(:mod:`tracker.passwords`).

A token is honoured while it is not revoked, not expired, and its user is not
disabled: one indexed statement checks all three and stamps ``last_used_at``.

Synchronous functions serve the CLI and the first start; asynchronous ones the API.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from tracker.errors import DuplicateUserError, UnknownUserError
from tracker.passwords import hash_password
from tracker.store.credentials import token_digest
from tracker.store.pool import AsyncDb, storage, sync_storage
from tracker.users import Principal, Role, TokenKind, parse_role, validate_username

TOKEN_BYTES = 32
# One statement for the CLI's (sync) and the API's (async) revocation.
_REVOKE_SQL = "UPDATE user_tokens SET revoked_at = now() WHERE token_id = %s AND revoked_at IS NULL"
TOKEN_PREFIX: dict[TokenKind, str] = {"session": "szs_", "api": "sza_"}


@dataclass(frozen=True, slots=True)
class UserRow:
    """A user as listed (never with its password hash)."""

    username: str
    role: Role
    display_name: str
    disabled: bool
    can_log_in: bool
    created_at: datetime
    created_by: str
    live_tokens: int


@dataclass(frozen=True, slots=True)
class TokenRow:
    """An API token or session as listed (never the secret itself)."""

    token_id: int
    username: str
    kind: TokenKind
    name: str
    origin: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class LoginRow:
    """What a login needs to know about a user name."""

    user_id: int
    username: str
    role: Role
    display_name: str
    password_hash: str | None
    disabled: bool


def new_token(kind: TokenKind) -> str:
    """A fresh secret of ``kind`` (shown once, stored as its SHA-256)."""
    return TOKEN_PREFIX[kind] + secrets.token_urlsafe(TOKEN_BYTES)


# ----- synchronous: the CLI and the first start --------------------------------------------------


def add_user_sync(
    conninfo: str,
    username: str,
    role: Role | str,
    password: str | None,
    *,
    display_name: str = "",
    created_by: str = "",
    min_password_length: int = 10,
) -> None:
    """Create a user; ``password`` None makes a token-only account. :class:`UserError` if it exists."""
    validate_username(username)
    role = parse_role(str(role))
    password_hash = None if password is None else hash_password(password, min_password_length)
    with sync_storage(conninfo, "add the user") as conn:
        try:
            conn.execute(
                "INSERT INTO users (username, role, password_hash, display_name, created_by) "
                "VALUES (%s, %s, %s, %s, %s)",
                (username, role.value, password_hash, display_name, created_by),
            )
        except psycopg.errors.UniqueViolation:
            raise DuplicateUserError(f"user {username!r} already exists") from None


def count_users_sync(conninfo: str) -> int:
    """How many users exist (0 on a first start)."""
    with sync_storage(conninfo, "count users") as conn:
        row = conn.execute("SELECT count(*) FROM users").fetchone()
    return int(row[0]) if row else 0


def list_users_sync(conninfo: str, username: str | None = None) -> list[UserRow]:
    """Every user (or the one named), by name, with how many live sessions and tokens each has."""
    with sync_storage(conninfo, "list users") as conn:
        rows = conn.execute(
            "SELECT u.username, u.role, u.display_name, u.disabled_at IS NOT NULL, "
            "u.password_hash IS NOT NULL, u.created_at, u.created_by, "
            "(SELECT count(*) FROM user_tokens t WHERE t.user_id = u.user_id AND t.revoked_at IS NULL "
            " AND (t.expires_at IS NULL OR t.expires_at > now())) "
            "FROM users u WHERE %s::text IS NULL OR u.username = %s ORDER BY u.username",
            (username, username),
        ).fetchall()
    return [UserRow(r[0], Role(r[1]), r[2], r[3], r[4], r[5], r[6], int(r[7])) for r in rows]


def _user_id(conn: psycopg.Connection[Any], username: str) -> int:
    row = conn.execute("SELECT user_id FROM users WHERE username = %s", (username,)).fetchone()
    if row is None:
        raise UnknownUserError(f"no user named {username!r} (see `serenazgo user list`)")
    return int(row[0])


def set_disabled_sync(conninfo: str, username: str, disabled: bool = True) -> None:
    """Disable (or enable again) a user: its sessions and tokens stop working at their next check."""
    with sync_storage(conninfo, "change the user") as conn:
        _user_id(conn, username)
        conn.execute(
            "UPDATE users SET disabled_at = CASE WHEN %s THEN coalesce(disabled_at, now()) END "
            "WHERE username = %s",
            (disabled, username),
        )


def set_password_sync(conninfo: str, username: str, password: str, *, min_password_length: int = 10) -> None:
    """Set a user's password and end its console sessions (API tokens stay)."""
    password_hash = hash_password(password, min_password_length)
    with sync_storage(conninfo, "change the password") as conn, conn.transaction():
        user_id = _user_id(conn, username)
        conn.execute("UPDATE users SET password_hash = %s WHERE user_id = %s", (password_hash, user_id))
        conn.execute(
            "UPDATE user_tokens SET revoked_at = now() "
            "WHERE user_id = %s AND kind = 'session' AND revoked_at IS NULL",
            (user_id,),
        )


def issue_api_token_sync(
    conninfo: str, username: str, name: str = "", *, expires_in: timedelta | None = None
) -> str:
    """A new API token for ``username`` (returned once); ``expires_in`` None never expires."""
    token = new_token("api")
    with sync_storage(conninfo, "issue the token") as conn:
        user_id = _user_id(conn, username)
        conn.execute(
            "INSERT INTO user_tokens (user_id, kind, name, token_sha256, expires_at) "
            "VALUES (%s, 'api', %s, %s, now() + %s)",
            (user_id, name, token_digest(token), expires_in),
        )
    return token


def list_tokens_sync(conninfo: str, username: str | None = None) -> list[TokenRow]:
    """API tokens and sessions (of one user, or all), newest first; never the secrets."""
    with sync_storage(conninfo, "list tokens") as conn:
        rows = conn.execute(
            "SELECT t.token_id, u.username, t.kind, t.name, t.origin, t.created_at, t.expires_at, "
            "t.revoked_at, t.last_used_at FROM user_tokens t JOIN users u USING (user_id) "
            "WHERE %s::text IS NULL OR u.username = %s ORDER BY t.created_at DESC, t.token_id DESC",
            (username, username),
        ).fetchall()
    return [TokenRow(*r) for r in rows]


def revoke_token_id_sync(conninfo: str, token_id: int) -> bool:
    """Revoke one API token or session by id; False when there is no live one with that id."""
    with sync_storage(conninfo, "revoke the token") as conn:
        cur = conn.execute(
            _REVOKE_SQL,
            (token_id,),
        )
        return cur.rowcount == 1


# ----- asynchronous: the API -------------------------------------------------------------------


async def login_row(db: AsyncDb, username: str) -> LoginRow | None:
    """The user a login names, or None."""
    async with storage(db, "look the user up") as conn:
        cur = await conn.execute(
            "SELECT user_id, username, role, display_name, password_hash, disabled_at IS NOT NULL "
            "FROM users WHERE username = %s",
            (username,),
        )
        row = await cur.fetchone()
    return None if row is None else LoginRow(row[0], row[1], Role(row[2]), row[3], row[4], row[5])


async def create_session(db: AsyncDb, user: LoginRow, origin: str, hours: float) -> tuple[str, Principal]:
    """A new console session for ``user``: the secret (for the cookie) and who it acts as."""
    token = new_token("session")
    async with storage(db, "open the session") as conn:
        cur = await conn.execute(
            "INSERT INTO user_tokens (user_id, kind, token_sha256, origin, expires_at) "
            "VALUES (%s, 'session', %s, %s, now() + %s) RETURNING token_id, expires_at",
            (user.user_id, token_digest(token), origin[:200], timedelta(hours=hours)),
        )
        row = await cur.fetchone()
    assert row is not None
    return token, Principal(
        user.user_id, user.username, user.role, user.display_name, row[0], "session", row[1]
    )


async def rehash_password(db: AsyncDb, user_id: int, password_hash: str) -> None:
    """Store a stronger hash of the same password (after a login that found the old one weak)."""
    async with storage(db, "store the password hash") as conn:
        await conn.execute("UPDATE users SET password_hash = %s WHERE user_id = %s", (password_hash, user_id))


async def principal_for_token(db: AsyncDb, digest: bytes) -> Principal | None:
    """Who a session or API token (by its SHA-256) acts as, or None: unknown, revoked, expired, disabled."""
    async with storage(db, "check the token") as conn:
        cur = await conn.execute(
            "UPDATE user_tokens t SET last_used_at = now() FROM users u "
            "WHERE t.token_sha256 = %s AND t.revoked_at IS NULL "
            "AND (t.expires_at IS NULL OR t.expires_at > now()) "
            "AND u.user_id = t.user_id AND u.disabled_at IS NULL "
            "RETURNING u.user_id, u.username, u.role, u.display_name, t.token_id, t.kind, t.expires_at",
            (digest,),
        )
        row = await cur.fetchone()
    if row is None:
        return None
    return Principal(row[0], row[1], Role(row[2]), row[3], row[4], row[5], row[6])


async def revoke_token_id(db: AsyncDb, token_id: int) -> bool:
    """Revoke one session or API token by id (logout); False when it was not live."""
    async with storage(db, "revoke the token") as conn:
        cur = await conn.execute(
            _REVOKE_SQL,
            (token_id,),
        )
    return cur.rowcount == 1


# ----- first start and demo ----------------------------------------------------------------------

FIRST_ADMIN = "admin"
DEMO_PASSWORD = "serenazgo-demo"  # noqa: S105 (the demo's published password, printed at start)


def ensure_first_admin_sync(conninfo: str) -> str | None:
    """On a database without users, create ``admin`` with a random password and return it (else None)."""
    if count_users_sync(conninfo) > 0:
        return None
    password = secrets.token_urlsafe(12)
    try:
        add_user_sync(
            conninfo,
            FIRST_ADMIN,
            Role.ADMIN,
            password,
            display_name="Administrator",
            created_by="first start",
        )
    except DuplicateUserError:  # another process made it between the count and here
        return None
    return password


def ensure_demo_users_sync(conninfo: str) -> list[str]:
    """One user per role, named after it, with :data:`DEMO_PASSWORD` (integration: token only).

    Returns the users created now (none when they exist already).
    """
    # Every start of the demo comes here: only the missing users cost an Argon2 hash (~50 ms each).
    existing = {u.username for u in list_users_sync(conninfo)}
    created = []
    for role in Role:
        if role.value in existing:
            continue
        password = None if role is Role.INTEGRATION else DEMO_PASSWORD
        try:
            add_user_sync(
                conninfo, role.value, role, password, display_name=f"Demo {role.value}", created_by="demo"
            )
        except DuplicateUserError:
            continue
        created.append(role.value)
    return created
