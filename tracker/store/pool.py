"""Async connections for the API and the queries: a pool, or one connection, used alike."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from tracker.errors import StorageError

# Query functions accept either: a pool (the API) or a connection (tests, scripts, transactions).
AsyncDb = AsyncConnectionPool[AsyncConnection[Any]] | AsyncConnection[Any]


async def open_pool(conninfo: str, *, min_size: int = 1, max_size: int = 10) -> AsyncConnectionPool[Any]:
    """Open an autocommit connection pool explicitly (never in the constructor: see EXAMPLES.md)."""
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        open=False,
        check=AsyncConnectionPool.check_connection,
        kwargs={"autocommit": True},
        name="serenazgo",
    )
    await pool.open(wait=True, timeout=30.0)
    return pool


@asynccontextmanager
async def connection(db: AsyncDb) -> AsyncIterator[AsyncConnection[Any]]:
    """Yield a connection: borrowed from the pool, or the given connection itself."""
    if isinstance(db, AsyncConnection):
        yield db
    else:
        async with db.connection() as conn:
            yield conn


@asynccontextmanager
async def storage(db: AsyncDb, what: str) -> AsyncIterator[AsyncConnection[Any]]:
    """:func:`connection` for one call; any database error in it becomes ``StorageError("cannot <what>")``."""
    try:
        async with connection(db) as conn:
            yield conn
    except psycopg.Error as exc:
        raise StorageError(f"cannot {what}: {exc}") from exc


@contextmanager
def sync_storage(conninfo: str, what: str) -> Iterator[psycopg.Connection[Any]]:
    """A synchronous connection for one call (the CLI, start-up); errors as in :func:`storage`."""
    try:
        with psycopg.connect(conninfo) as conn:
            yield conn
    except psycopg.Error as exc:
        raise StorageError(f"cannot {what}: {exc}") from exc
