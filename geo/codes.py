"""Small integer codes for unit kinds and statuses, as the columnar engine stores them.

``geo`` never imports ``tracker``, so the names are spelled here once; a test in
``tests/tracker`` asserts they equal ``tracker.model.UnitKind`` / ``UnitStatus``
values in the same order. A code is the position of its name in the tuple.
"""

from __future__ import annotations

from collections.abc import Iterable

KIND_NAMES: tuple[str, ...] = ("patrol_car", "motorcycle", "bicycle", "foot", "drone")
STATUS_NAMES: tuple[str, ...] = ("available", "dispatched", "en_route", "on_scene", "out_of_service")

KIND_CODE: dict[str, int] = {name: code for code, name in enumerate(KIND_NAMES)}
STATUS_CODE: dict[str, int] = {name: code for code, name in enumerate(STATUS_NAMES)}

N_KINDS = len(KIND_NAMES)
N_STATUSES = len(STATUS_NAMES)
ALL_KINDS_MASK = (1 << N_KINDS) - 1
ALL_STATUSES_MASK = (1 << N_STATUSES) - 1


def kind_mask(codes: Iterable[int] | None) -> int:
    """Bit mask (bit ``code`` set) of an iterable of kind codes; ``None`` means every kind.

    >>> kind_mask([0, 4])
    17
    >>> kind_mask(None) == ALL_KINDS_MASK
    True
    """
    if codes is None:
        return ALL_KINDS_MASK
    mask = 0
    for code in codes:
        if not 0 <= int(code) < N_KINDS:
            raise ValueError(f"kind code {code} is not one of 0..{N_KINDS - 1} ({', '.join(KIND_NAMES)})")
        mask |= 1 << int(code)
    return mask


def status_mask(codes: Iterable[int] | None) -> int:
    """Bit mask of an iterable of status codes; ``None`` means every status.

    >>> status_mask([0])
    1
    """
    if codes is None:
        return ALL_STATUSES_MASK
    mask = 0
    for code in codes:
        if not 0 <= int(code) < N_STATUSES:
            raise ValueError(f"status code {code} is not one of 0..{N_STATUSES - 1}")
        mask |= 1 << int(code)
    return mask
