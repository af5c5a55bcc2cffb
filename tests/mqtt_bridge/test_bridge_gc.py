"""The bridge's garbage-collector tuning: thresholds only ever raised, a disabled collector left alone."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from mqtt_bridge.bridge import INGEST_GC_THRESHOLDS, tune_gc


@pytest.fixture(autouse=True)
def _restore_thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


def test_default_thresholds_are_raised_to_the_ingest_ones() -> None:
    gc.set_threshold(700, 10, 10)
    tune_gc()
    assert gc.get_threshold() == INGEST_GC_THRESHOLDS


def test_higher_thresholds_are_kept() -> None:
    higher = tuple(t * 2 for t in INGEST_GC_THRESHOLDS)
    gc.set_threshold(*higher)
    tune_gc()
    assert gc.get_threshold() == higher


def test_threshold_zero_keeps_automatic_collection_off() -> None:
    gc.set_threshold(0, 10, 10)
    tune_gc()
    assert gc.get_threshold() == (0, 10, 10)
