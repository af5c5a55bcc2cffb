"""One module per resource: units, tracks, live positions, health and metrics."""
