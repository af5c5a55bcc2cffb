"""``/api/v1/users``, ``/api/v1/tokens`` (administrators) and ``/api/v1/audit`` (supervisors).

The same operations as ``serenazgo user ...`` (:mod:`api.cli`), over HTTP for an
administration screen or a provisioning script. A token is shown once, in the
answer that creates it. Disabling a user or revoking a token takes effect at once
in this process (its cache of checked secrets is emptied).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api.access import ADMIN, SUPERVISE, Actor, admits
from api.auth import forget
from api.deps import Context, Pool
from api.schemas import Problem
from tracker.errors import DuplicateUserError, UnknownUserError, UserError
from tracker.store.audit import select_audit
from tracker.store.users import (
    TokenRow,
    UserRow,
    add_user_sync,
    issue_api_token_sync,
    list_tokens_sync,
    list_users_sync,
    revoke_token_id_sync,
    set_disabled_sync,
    set_password_sync,
)
from tracker.users import Role

router = APIRouter(tags=["users"])

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "no such user or token"},
    409: {"model": Problem, "description": "the user already exists"},
    422: {"model": Problem, "description": "bad user name, role or password (the detail says what to send)"},
}


class UserCreate(BaseModel):
    """Body of ``POST /api/v1/users``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"username": "op-ana", "role": "operator", "password": "••••••••••"}]
        },
    )

    username: Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)]
    role: Role
    password: str | None = Field(None, max_length=1024, description="None: a token-only account")
    display_name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] = ""


class UserUpdate(BaseModel):
    """Body of ``PATCH /api/v1/users/{username}``."""

    model_config = ConfigDict(extra="forbid")

    disabled: bool | None = None
    password: str | None = Field(None, max_length=1024, description="a new password (ends its sessions)")


class TokenCreate(BaseModel):
    """Body of ``POST /api/v1/users/{username}/tokens``."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] = ""
    expires_days: float | None = Field(None, gt=0, le=3650, description="None: until revoked")


def _user_json(row: UserRow) -> dict[str, Any]:
    return {
        "username": row.username,
        "role": row.role.value,
        "display_name": row.display_name,
        "disabled": row.disabled,
        "can_log_in": row.can_log_in,
        "created_at": row.created_at.isoformat(),
        "created_by": row.created_by,
        "live_tokens": row.live_tokens,
    }


def _token_json(row: TokenRow) -> dict[str, Any]:
    def iso(ts: datetime | None) -> str | None:
        return None if ts is None else ts.isoformat()

    return {
        "token_id": row.token_id,
        "username": row.username,
        "kind": row.kind,
        "name": row.name,
        "origin": row.origin,
        "created_at": row.created_at.isoformat(),
        "expires_at": iso(row.expires_at),
        "revoked_at": iso(row.revoked_at),
        "last_used_at": iso(row.last_used_at),
    }


def _http(exc: UserError) -> HTTPException:
    if isinstance(exc, UnknownUserError):
        return HTTPException(status.HTTP_404_NOT_FOUND, str(exc))
    if isinstance(exc, DuplicateUserError):
        return HTTPException(status.HTTP_409_CONFLICT, str(exc))
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc))


@router.get("/api/v1/users", summary="Every user and its role", **admits(ADMIN))
async def list_users(ctx: Context) -> list[dict[str, Any]]:
    """Users by name (never their password hashes)."""
    return [_user_json(r) for r in await asyncio.to_thread(list_users_sync, ctx.conninfo)]


@router.post(
    "/api/v1/users",
    status_code=status.HTTP_201_CREATED,
    summary="Add a user",
    responses=ERRORS,
    **admits(ADMIN),
)
async def add_user(body: UserCreate, ctx: Context, actor: Actor) -> dict[str, Any]:
    """Create the user; 409 when the name is taken, 422 for a bad name or a short password."""
    try:
        await asyncio.to_thread(
            lambda: add_user_sync(
                ctx.conninfo, body.username, body.role, body.password, display_name=body.display_name,
                created_by=actor.username, min_password_length=ctx.settings.auth.min_password_length,
            )
        )  # fmt: skip
    except UserError as exc:
        raise _http(exc) from exc
    return {"username": body.username, "role": body.role.value}


@router.patch(
    "/api/v1/users/{username}",
    summary="Disable, enable, or set a password",
    responses=ERRORS,
    **admits(ADMIN),
)
async def update_user(username: str, body: UserUpdate, ctx: Context) -> dict[str, Any]:
    """A disabled user's sessions and tokens stop working at once; a new password ends its sessions."""
    try:
        if body.password is not None:
            await asyncio.to_thread(
                lambda: set_password_sync(
                    ctx.conninfo,
                    username,
                    body.password or "",
                    min_password_length=ctx.settings.auth.min_password_length,
                )
            )
        if body.disabled is not None:
            await asyncio.to_thread(set_disabled_sync, ctx.conninfo, username, body.disabled)
    except UserError as exc:
        raise _http(exc) from exc
    forget(ctx)
    rows = await asyncio.to_thread(list_users_sync, ctx.conninfo, username)
    if not rows:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no user named {username!r}")
    return _user_json(rows[0])


@router.post(
    "/api/v1/users/{username}/tokens",
    status_code=status.HTTP_201_CREATED,
    summary="Issue an API token (shown once)",
    responses=ERRORS,
    **admits(ADMIN),
)
async def issue_token(username: str, body: TokenCreate, ctx: Context) -> dict[str, Any]:
    """``{"token": ...}``: send it as ``Authorization: Bearer <token>``; it is not stored in clear."""
    expires = None if body.expires_days is None else timedelta(days=body.expires_days)
    try:
        token = await asyncio.to_thread(
            lambda: issue_api_token_sync(ctx.conninfo, username, body.name, expires_in=expires)
        )
    except UserError as exc:
        raise _http(exc) from exc
    return {"username": username, "name": body.name, "token": token}


@router.get("/api/v1/tokens", summary="API tokens and sessions (never the secrets)", **admits(ADMIN))
async def list_tokens(
    ctx: Context, username: Annotated[str | None, Query(max_length=64)] = None
) -> list[dict[str, Any]]:
    """Newest first; ``username`` keeps one user's."""
    return [_token_json(r) for r in await asyncio.to_thread(list_tokens_sync, ctx.conninfo, username)]


@router.delete(
    "/api/v1/tokens/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke an API token or end a session",
    responses=ERRORS,
    **admits(ADMIN),
)
async def revoke_token(token_id: int, ctx: Context) -> None:
    """404 when no live token has that id."""
    if not await asyncio.to_thread(revoke_token_id_sync, ctx.conninfo, token_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no live token with id {token_id}")
    forget(ctx)


@router.get("/api/v1/audit", tags=["audit"], summary="The audit trail, newest first", **admits(SUPERVISE))
async def audit(
    pool: Pool,
    since: datetime | None = None,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
) -> list[dict[str, Any]]:
    """Who did what, when and from where: ``since`` an ISO time, ``actor`` one user."""
    rows = await select_audit(pool, since=since, actor=actor, limit=limit)
    return [
        {
            "audit_id": r.audit_id,
            "at": r.at.isoformat(),
            "actor": r.actor,
            "origin": r.origin,
            "action": r.action,
            "subject": r.subject,
            "detail": r.detail,
        }
        for r in rows
    ]
