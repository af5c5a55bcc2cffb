"""Users of the console and the API: their roles and who a request acts as.

Roles (what each may do is declared per route in :mod:`api.access`):

* ``admin``: everything, including users and tokens;
* ``supervisor``: everything operational (incidents, assignments, sectors, airspace,
  evidence exports, the audit trail), not users;
* ``operator``: radio operators: incidents and assignments, read everything else;
* ``planner``: the drone squadron: coverage, sorties, airspace, sectors;
* ``viewer``: read only (a wall screen, a visiting officer);
* ``integration``: other systems through API tokens (the video platform exports
  evidence, a WhatsApp or 911 gateway files incidents, Prometheus reads metrics).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal

from tracker.errors import UserError

_USERNAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


class Role(StrEnum):
    """A user's role (one per user)."""

    ADMIN = "admin"
    SUPERVISOR = "supervisor"
    OPERATOR = "operator"
    PLANNER = "planner"
    VIEWER = "viewer"
    INTEGRATION = "integration"


TokenKind = Literal["session", "api"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as: a user, through one of its sessions or API tokens."""

    user_id: int
    username: str
    role: Role
    display_name: str
    token_id: int
    token_kind: TokenKind
    expires_at: datetime | None


def validate_username(username: str) -> str:
    """Return ``username`` unchanged, or raise :class:`UserError` saying what a valid one looks like."""
    if _USERNAME_RE.fullmatch(username) is None:
        raise UserError(
            f"invalid user name {username[:80]!r}: use 1-64 characters from a-z 0-9 _ . -, "
            "starting with a letter or digit"
        )
    return username


def parse_role(value: str) -> Role:
    """The :class:`Role` named ``value``, or :class:`UserError` listing the roles."""
    try:
        return Role(value)
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise UserError(f"unknown role {value[:40]!r}: use one of {roles}") from None
