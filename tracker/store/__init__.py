"""Storage on PostgreSQL (TimescaleDB when present), through psycopg 3.

- :mod:`tracker.store.embedded`: the private PostgreSQL server of the embedded default and the tests.
- :mod:`tracker.store.schema` / :mod:`tracker.store.migrations`: versioned schema, both storage paths.
- :mod:`tracker.store.writer`: the ingest hot path (one batch, one transaction).
- :mod:`tracker.store.partitions`: day partitions and retention.
- :mod:`tracker.store.units`, :mod:`tracker.store.queries`: reads and the unit registry table.
"""
