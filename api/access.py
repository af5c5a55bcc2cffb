"""Who may call what: every route declares the roles it admits, and one gate enforces them.

A route admits roles with ``**admits(DISPATCH)`` in its decorator, or declares
itself open with ``**public("why")`` (login, health probes, the console page
itself, device ingest which checks device tokens instead). :func:`check_routes`
refuses to build an app with a route that does neither, so a new route cannot
ship unprotected by omission. The declaration is also in the OpenAPI document
(``x-roles`` / ``x-public``), from which the tests generate the access table.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.routing import APIRoute
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from api.auth import SESSION_COOKIE, authenticate, device_unit, presented_token
from api.context import ApiContext
from tracker.errors import ConfigError, StorageError
from tracker.users import Principal, Role

# Role sets, named for what they let a user do.
READ = frozenset(Role)  # everyone with an account sees the picture
DISPATCH = frozenset({Role.ADMIN, Role.SUPERVISOR, Role.OPERATOR})  # incidents and assignments
REPORT = DISPATCH | {Role.INTEGRATION}  # file an incident (a WhatsApp or 911 gateway too)
PLAN = frozenset({Role.ADMIN, Role.SUPERVISOR, Role.PLANNER})  # coverage, sorties, airspace, sectors
ADVISE = PLAN | {Role.OPERATOR}  # compute advice (placement) without changing anything
EXPORT = frozenset({Role.ADMIN, Role.SUPERVISOR, Role.INTEGRATION})  # evidence for prosecutors and courts
FLEET = frozenset({Role.ADMIN, Role.SUPERVISOR, Role.INTEGRATION})  # register units
MONITOR = frozenset({Role.ADMIN, Role.SUPERVISOR, Role.INTEGRATION})  # metrics for Prometheus
SUPERVISE = frozenset({Role.ADMIN, Role.SUPERVISOR})  # the audit trail
ADMIN = frozenset({Role.ADMIN})  # users and tokens

UNAUTHENTICATED = (
    "log in (POST /api/v1/auth/login, or the console at /) or send 'Authorization: Bearer <API token>'; "
    "a session or token that was revoked, has expired or belongs to a disabled user no longer works"
)


# Declared so the OpenAPI document (and /docs' "Authorize" button) shows both ways in; the gate
# reads the request itself (api/auth.py), these only describe it.
BEARER = HTTPBearer(auto_error=False, description="an API token (serenazgo user token)")
COOKIE = APIKeyCookie(name=SESSION_COOKIE, auto_error=False, description="the console's session")


def unauthenticated(detail: str = UNAUTHENTICATED) -> HTTPException:
    """The 401 every gate answers without a valid secret (it says how to get one)."""
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})


class Gate:
    """The dependency a route's :func:`admits` installs: 401 without a valid secret, 403 for other roles."""

    def __init__(self, roles: Iterable[Role]) -> None:
        self.roles = frozenset(roles)

    async def __call__(
        self,
        request: Request,
        _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)] = None,
        _cookie: Annotated[str | None, Depends(COOKIE)] = None,
    ) -> Principal:
        """The principal, when its role is admitted."""
        principal = await authenticate(request)
        if principal is None:
            raise unauthenticated()
        return self.admit(principal)

    def admit(self, principal: Principal) -> Principal:
        """``principal`` when its role is admitted, else 403 naming the roles that are."""
        if principal.role not in self.roles:
            allowed = ", ".join(sorted(r.value for r in self.roles))
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"role {principal.role.value!r} may not do this; it needs one of: {allowed}",
            )
        return principal


class UnitGate:
    """A unit's own route (``/units/{unit_id}/...``): users of the admitted roles, or the unit itself.

    A device presents its device token (``serenazgo unit credentials UNIT``) as a
    bearer token; it may act only under its own unit id. The audit trail names it
    ``unit:<id>``.
    """

    def __init__(self, roles: Iterable[Role]) -> None:
        self.gate = Gate(roles)

    async def __call__(
        self,
        request: Request,
        _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)] = None,
        _cookie: Annotated[str | None, Depends(COOKIE)] = None,
    ) -> Principal | None:
        """The user (role admitted), or None when the unit itself acts; else 401 or 403."""
        principal = await authenticate(request)
        if principal is not None:
            return self.gate.admit(principal)
        ctx: ApiContext = request.app.state.ctx
        token = presented_token(request) if request.headers.get("authorization") else None
        unit_id = request.path_params.get("unit_id")
        owner = None
        if token is not None and unit_id:
            try:
                owner = await device_unit(ctx, token, fresh=True)  # reports are rare: see revocations now
            except StorageError as exc:
                raise HTTPException(
                    status.HTTP_503_SERVICE_UNAVAILABLE, f"cannot check the token: {exc}"
                ) from exc
        if owner is None:
            raise unauthenticated(f"{UNAUTHENTICATED}; or the unit's own device token")
        if owner != unit_id:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"this device token belongs to unit {owner!r}, not {unit_id!r}"
            )
        request.state.audit_actor = f"unit:{owner}"
        return None


def admits(roles: Iterable[Role]) -> dict[str, Any]:
    """Decorator arguments that admit ``roles`` to a route (and say so in the OpenAPI document)."""
    roles = frozenset(roles)
    return _declared(Gate(roles), roles)


def admits_unit(roles: Iterable[Role]) -> dict[str, Any]:
    """Like :func:`admits`, and the unit named in the path may act with its own device token."""
    roles = frozenset(roles)
    return _declared(UnitGate(roles), roles, {"x-device": "the unit's own device token"})


def _declared(
    gate: Gate | UnitGate, roles: Iterable[Role], extra: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "dependencies": [Depends(gate)],
        "openapi_extra": {"x-roles": sorted(r.value for r in roles), **(extra or {})},
    }


def public(reason: str) -> dict[str, Any]:
    """Decorator arguments of a route open without a user, with the reason it may be."""
    return {"openapi_extra": {"x-public": reason}}


async def current_principal(request: Request) -> Principal:
    """Who the request acts as (for routes that record it); the route's gate has already checked."""
    principal = await authenticate(request)
    if principal is None:  # only reached by a public route that asked for a principal
        raise unauthenticated()
    return principal


Actor = Annotated[Principal, Depends(current_principal)]


def acting_as(principal: Principal, on_behalf_of: str = "") -> str:
    """The actor recorded in the audit trail: the user, and whom an integration acts for if it says."""
    other = on_behalf_of.strip()
    if not other or other == principal.username:
        return principal.username
    return f"{principal.username} (for {other[:128]})"


def check_routes(routes: Iterable[Any]) -> None:
    """Raise :class:`ConfigError` naming each API route that neither admits roles nor is public."""
    missing = []
    for route in routes:
        if not isinstance(route, APIRoute):
            continue
        extra = route.openapi_extra or {}
        gated = any(isinstance(d.dependency, Gate | UnitGate) for d in route.dependencies)
        if gated != ("x-roles" in extra) or not (gated or "x-public" in extra):
            missing.append(f"{','.join(sorted(route.methods or ()))} {route.path}")
    if missing:
        listed = "; ".join(missing)
        raise ConfigError(f"routes without an access declaration (admits() or public()): {listed}")
