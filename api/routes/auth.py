"""``/api/v1/auth``: log in to the console (a session cookie), log out, and who am I.

Logging in checks the Argon2id hash in a worker thread; failures are counted per
user name and per address (:class:`api.auth.LoginLimiter`) and answered 429 with
``Retry-After`` past the limit. Every attempt, good or bad, is in the audit trail
(:mod:`api.audit`). Wrong user and wrong password get the same answer, in the same
time, so the login does not reveal which user names exist.
"""

from __future__ import annotations

import asyncio
import math
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Request, Response, status
from pydantic import BaseModel, ConfigDict, StringConstraints

from api.access import READ, Actor, admits, public
from api.auth import SESSION_COOKIE, client_address, forget
from api.deps import Context, Pool
from api.schemas import Problem
from tracker.passwords import hash_password, needs_rehash, verify_password
from tracker.store.users import create_session, login_row, rehash_password, revoke_token_id
from tracker.users import Principal

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])

BAD_LOGIN = "wrong user name or password"


class LoginBody(BaseModel):
    """Body of ``POST /api/v1/auth/login``."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"username": "operator", "password": "••••••••••"}]}
    )

    username: Annotated[
        str, StringConstraints(strip_whitespace=True, to_lower=True, min_length=1, max_length=64)
    ]
    password: Annotated[str, StringConstraints(min_length=1, max_length=1024)]


def me_json(principal: Principal) -> dict[str, Any]:
    """What the console needs to know about who is logged in."""
    return {
        "username": principal.username,
        "display_name": principal.display_name or principal.username,
        "role": principal.role.value,
        "via": principal.token_kind,
        "expires_at": None if principal.expires_at is None else principal.expires_at.isoformat(),
    }


@router.post(
    "/login",
    summary="Log in: sets the HttpOnly session cookie the console and its WebSocket use",
    responses={
        401: {"model": Problem, "description": "wrong user name or password, or a disabled account"},
        429: {"model": Problem, "description": "too many failed logins: wait Retry-After seconds"},
    },
    **public("this is how a user gets a session"),
)
async def login(
    body: LoginBody, request: Request, response: Response, ctx: Context, pool: Pool
) -> dict[str, Any]:
    """Check the password and open a session of ``SERENAZGO_AUTH__SESSION_HOURS`` hours."""
    request.state.audit_actor = body.username
    address = client_address(request)
    limiter = ctx.login_limiter
    assert limiter is not None, "create_app() sets the login limiter"
    wait = limiter.retry_after(body.username, address)
    if wait > 0:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many failed logins for this user or from this address: try again in {math.ceil(wait)} s",
            headers={"Retry-After": str(math.ceil(wait))},
        )
    row = await login_row(pool, body.username)
    ok = await asyncio.to_thread(verify_password, None if row is None else row.password_hash, body.password)
    if row is None or not ok:
        limiter.failed(body.username, address)
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, BAD_LOGIN)
    if row.disabled:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "this account is disabled: ask an administrator")
    limiter.succeeded(body.username)
    if row.password_hash is not None and needs_rehash(row.password_hash):
        await rehash_password(pool, row.user_id, await asyncio.to_thread(hash_password, body.password, 1))
    auth = ctx.settings.auth
    token, session = await create_session(pool, row, address, auth.session_hours)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(auth.session_hours * 3600),
        httponly=True,
        secure=auth.cookie_secure,
        samesite="strict",
        path="/",
    )
    return me_json(session)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, summary="End this session", **admits(READ))
async def logout(actor: Actor, ctx: Context, pool: Pool) -> Response:
    """Revoke the session the request came with and clear its cookie (API tokens are not ended here)."""
    if actor.token_kind == "api":  # noqa: S105 (a kind of token, not a secret)
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            "this is an API token, not a session: an administrator revokes it (serenazgo user revoke)",
        )
    await revoke_token_id(pool, actor.token_id)
    forget(ctx)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=ctx.settings.auth.cookie_secure
    )
    return response


@router.get("/me", summary="Who this session or token acts as", **admits(READ))
async def me(actor: Actor) -> dict[str, Any]:
    """User name, display name, role, and when the session ends."""
    return me_json(actor)
