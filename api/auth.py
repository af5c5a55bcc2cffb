"""Authentication: who a request or WebSocket acts as, from its session cookie or bearer token.

* Console users log in (``POST /api/v1/auth/login``) and get a session cookie,
  :data:`SESSION_COOKIE`: HttpOnly (page scripts cannot read it), SameSite=Strict
  (other sites cannot make the browser send it, which is what stops cross-site
  request forgery), Secure unless ``SERENAZGO_AUTH__COOKIE_SECURE=false``.
* Other systems send ``Authorization: Bearer <API token>`` (``serenazgo user token``).

Either secret is looked up by its SHA-256 (:func:`tracker.store.users.principal_for_token`)
and the answer kept for ``SERENAZGO_AUTH__CACHE_S`` seconds, so a console's
requests do not each cost a database round trip; revocations made through the
API empty the cache at once, those made by the CLI bite within that time.

Failed logins are counted per user name and per client address
(:class:`LoginLimiter`); what each role may do is :mod:`api.access`.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from starlette.requests import HTTPConnection

from api.context import ApiContext
from tracker.errors import StorageError
from tracker.store.credentials import token_digest, unit_for_token
from tracker.store.users import principal_for_token
from tracker.users import Principal

SESSION_COOKIE = "serenazgo_session"
MAX_TOKEN_LENGTH = 256  # ours are 47 characters; anything much longer is not one of ours
MAX_CACHED = 10_000  # principals kept in memory; beyond it the cache starts over
MAX_DEVICES_CACHED = 100_000  # device tokens kept in memory: a metropolis has ~10,000 devices


def presented_token(conn: HTTPConnection) -> str | None:
    """The secret a request presents: its bearer token, else its session cookie, else None."""
    header = conn.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        token = value.strip() if scheme.lower() == "bearer" else ""
    else:
        token = conn.cookies.get(SESSION_COOKIE, "")
    return token if 0 < len(token) <= MAX_TOKEN_LENGTH else None


async def authenticate(conn: HTTPConnection) -> Principal | None:
    """Who ``conn`` acts as, or None (no, unknown, revoked or expired secret, or a disabled user).

    The answer is remembered on the request (``state.principal``) for the audit trail.
    """
    known: Principal | None = getattr(conn.state, "principal", None)
    if known is not None:
        return known
    principal = await check_secret(conn)
    if principal is not None:
        conn.state.principal = principal
    return principal


async def check_secret(conn: HTTPConnection) -> Principal | None:
    """Look the presented secret up now: from the cache while it is fresh, else in the database.

    A long-lived connection (the live feed) calls this again and again: a revoked
    session, a disabled user or an expired token stops it within the cache's time.
    """
    token = presented_token(conn)
    if token is None:
        return None
    ctx: ApiContext = conn.app.state.ctx
    digest = token_digest(token)
    now = time.monotonic()
    cached = ctx.auth_cache.get(digest)
    if cached is not None and cached[1] > now and not _expired(cached[0]):
        return cached[0]
    if ctx.pool is None:
        return None
    principal = await principal_for_token(ctx.pool, digest)
    if principal is None:
        ctx.auth_cache.pop(digest, None)
    else:
        if len(ctx.auth_cache) >= MAX_CACHED:
            ctx.auth_cache.clear()
        ctx.auth_cache[digest] = (principal, now + ctx.settings.auth.cache_s)
    return principal


async def device_unit(ctx: ApiContext, token: str, *, fresh: bool = False) -> str | None:
    """The unit a live device token belongs to, or None (unknown or revoked).

    Kept for ``SERENAZGO_INGEST_AUTH_CACHE_S`` in ``ctx.ingest_tokens``: HTTP ingest asks this
    on every phone request. ``fresh``: ask the database whatever the cache says (a rare request
    that must see a revocation at once). :class:`StorageError` when the database cannot say.
    """
    digest = token_digest(token)
    now = time.monotonic()
    cached = ctx.ingest_tokens.get(digest)
    if cached is not None and cached[1] > now and not fresh:
        return cached[0]
    if ctx.pool is None:
        raise StorageError("the database pool is not open")
    unit_id = await unit_for_token(ctx.pool, token)
    if unit_id is None:
        ctx.ingest_tokens.pop(digest, None)
        return None
    if len(ctx.ingest_tokens) > MAX_DEVICES_CACHED:
        ctx.ingest_tokens.clear()
    ctx.ingest_tokens[digest] = (unit_id, now + ctx.settings.ingest_auth_cache_s)
    return unit_id


def _expired(principal: Principal) -> bool:
    if principal.expires_at is None:
        return False
    return principal.expires_at <= datetime.now(UTC)


def forget(ctx: ApiContext) -> None:
    """Drop every remembered principal (after a revocation, a disabled user, a password change)."""
    ctx.auth_cache.clear()


def client_address(conn: HTTPConnection) -> str:
    """The client's address as the server saw it (behind a proxy: uvicorn's ``--proxy-headers``)."""
    return conn.client.host if conn.client is not None else ""


@dataclass
class LoginLimiter:
    """Failed logins per user name and per client address within a sliding window.

    In memory: a restart forgets the counts, which costs an attacker a restart per
    few guesses against a ~50 ms Argon2 check; the audit trail keeps every failure.
    """

    max_failures: int
    window_s: float
    per_address_factor: int = 4
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def retry_after(self, username: str, address: str) -> float:
        """Seconds until a login for ``username`` from ``address`` may be tried again (0: now)."""
        now = time.monotonic()
        waits = [
            self._wait(f"u:{username}", self.max_failures, now),
            self._wait(f"a:{address}", self.max_failures * self.per_address_factor, now),
        ]
        return max(waits)

    def failed(self, username: str, address: str) -> None:
        """Count one failure against both the user name and the address."""
        now = time.monotonic()
        for key in (f"u:{username}", f"a:{address}"):
            self._failures.setdefault(key, deque()).append(now)
        if len(self._failures) > MAX_CACHED:  # bound memory under a spray of user names
            self._prune(now)

    def succeeded(self, username: str) -> None:
        """A good password clears the user name's count (not the address's)."""
        self._failures.pop(f"u:{username}", None)

    def _wait(self, key: str, limit: int, now: float) -> float:
        times = self._failures.get(key)
        if not times:
            return 0.0
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if len(times) < limit:
            return 0.0
        return times[-limit] + self.window_s - now

    def _prune(self, now: float) -> None:
        for key in [k for k, t in self._failures.items() if not t or t[-1] <= now - self.window_s]:
            del self._failures[key]
