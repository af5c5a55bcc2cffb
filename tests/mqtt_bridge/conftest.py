"""Fixtures of the bridge tests (helpers in tests/mqtt_bridge/ingest_rig.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mqtt_bridge.broker import EmbeddedBroker
from tests.fixtures.mosquitto import TestNames
from tests.mqtt_bridge.ingest_rig import IngestRig


@pytest.fixture
def ingest(mqtt_broker: EmbeddedBroker, pg_url: str, test_names: TestNames) -> Iterator[IngestRig]:
    """A rig on the test's own broker and database."""
    rig = IngestRig(mqtt_broker, pg_url, test_names)
    try:
        yield rig
    finally:
        rig.close()
