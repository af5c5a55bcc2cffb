"""Miraflores (the shipped boundary) and its resolution-10 grid, shared by the geo tests."""

from __future__ import annotations

import json

import pytest

from geo.area import Area, area_from_geojson
from geo.hexgrid import HexGrid, hexgrid
from tracker.config import DEFAULT_DISTRICTS_FILE


@pytest.fixture(scope="module")
def miraflores() -> Area:
    return area_from_geojson(json.loads(DEFAULT_DISTRICTS_FILE.read_text(encoding="utf-8")), "Miraflores")


@pytest.fixture(scope="module")
def mgrid(miraflores: Area) -> HexGrid:
    return hexgrid(miraflores, 10)
