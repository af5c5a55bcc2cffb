"""tracker.metrics: the bulk histogram agrees with prometheus_client's own Histogram."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from tracker.metrics import LAG_BUCKETS, REGISTRY, BulkHistogram


@given(st.lists(st.floats(min_value=0.0, max_value=10_000.0), max_size=200), st.integers(1, 5))
def test_bulk_histogram_matches_prometheus_histogram(values: list[float], chunks: int) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    bulk = BulkHistogram("lag_seconds", "lag", LAG_BUCKETS, ours)
    reference = Histogram("lag_seconds", "lag", buckets=LAG_BUCKETS, registry=theirs)
    step = max(1, len(values) // chunks)
    for i in range(0, len(values), step):
        bulk.observe_many(values[i : i + step])
    for v in values:
        reference.observe(v)

    def samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
        return {
            (s.name, s.labels.get("le", "")): s.value
            for family in registry.collect()
            for s in family.samples
            if not s.name.endswith("_created")
        }

    got, want = samples(ours), samples(theirs)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert abs(got[key] - value) <= 1e-6 * max(1.0, abs(value)), key


def test_registry_exposes_serenazgo_and_process_metrics() -> None:
    text = generate_latest(REGISTRY).decode()
    for name in (
        "serenazgo_pings_stored_total",
        "serenazgo_ingest_lag_seconds_bucket",
        "process_cpu_seconds_total",
    ):
        assert name in text
