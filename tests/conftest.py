"""Shared fixtures: real PostgreSQL and Mosquitto started on free ports by the tests."""

pytest_plugins = ["tests.fixtures.postgres", "tests.fixtures.mosquitto", "tests.fixtures.ingest"]
