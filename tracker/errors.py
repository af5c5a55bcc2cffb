"""One exception hierarchy for serenazgo.

Bad *input* (a malformed ping, an out-of-range fix) is not an exception: it is a
:class:`tracker.model.Rejection` value that ends in the dead-letter table. These
exceptions are for operations that cannot proceed: configuration, storage,
requests against the registry.
"""

from __future__ import annotations


class SerenazgoError(Exception):
    """Base class of every error serenazgo raises on purpose."""


class ConfigError(SerenazgoError):
    """The configuration cannot work; the message says which setting to fix."""


class StorageError(SerenazgoError):
    """The database refused or could not be reached; retrying later may succeed."""


class StorageDataError(StorageError):
    """The database refused the data itself (SQLSTATE class 22 or 23): retrying as is never succeeds.

    The bridge answers by splitting the batch until the offending message is
    found, and dead-letters that one message instead of stalling ingest.
    """


class EmbeddedServerError(SerenazgoError):
    """An embedded PostgreSQL or MQTT broker could not be started or stopped."""


class InvalidUnitIdError(SerenazgoError, ValueError):
    """A unit id does not match the wire contract."""

    def __init__(self, unit_id: str) -> None:
        self.unit_id = unit_id
        super().__init__(
            f"invalid unit id {unit_id[:80]!r}: use 1-64 characters from A-Z a-z 0-9 _ . : -, "
            "starting with a letter or digit"
        )


class UnitNotFoundError(SerenazgoError, LookupError):
    """No unit with that id is registered."""

    def __init__(self, unit_id: str) -> None:
        self.unit_id = unit_id
        super().__init__(f"unit {unit_id!r} is not registered")


class DuplicateUnitError(SerenazgoError):
    """A unit id (or one of its external ids) is already registered."""

    def __init__(self, unit_id: str, detail: str = "") -> None:
        self.unit_id = unit_id
        super().__init__(detail or f"unit {unit_id!r} already exists")


class UserError(SerenazgoError, ValueError):
    """A user cannot be created or changed as asked (bad name, weak password, unknown or duplicate user)."""


class UnknownUserError(UserError, LookupError):
    """No user has that name."""


class DuplicateUserError(UserError):
    """A user with that name already exists."""
