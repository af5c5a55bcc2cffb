"""Password hashing for console users: Argon2id (argon2-cffi), PHC strings in ``users.password_hash``.

argon2-cffi's defaults are RFC 9106's low-memory profile (t=3, 64 MiB, 4 lanes):
about 50 ms of CPU per check on the 2-core reference box, which is what makes a
stolen database expensive to guess against. Checks run in a worker thread
(:func:`verify_password` is called via ``asyncio.to_thread``) so a login never
stalls the event loop that carries the live feed.
"""

from __future__ import annotations

from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from tracker.errors import UserError

_HASHER = PasswordHasher()


def hash_password(password: str, min_length: int = 10) -> str:
    """The Argon2id PHC string of ``password``; :class:`UserError` when it is too short."""
    if len(password) < min_length:
        raise UserError(f"the password is too short: use at least {min_length} characters")
    return _HASHER.hash(password)


@cache
def _dummy_hash() -> str:
    return _HASHER.hash("serenazgo: no such user")


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when ``password`` matches ``password_hash``.

    With no hash (unknown user, or a token-only account) a dummy hash is checked
    anyway, so a wrong user name costs the same time as a wrong password and the
    answer time does not reveal which user names exist.
    """
    try:
        return _HASHER.verify(password_hash or _dummy_hash(), password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when ``password_hash`` was made with weaker parameters than today's (rehash at next login)."""
    return _HASHER.check_needs_rehash(password_hash)
