"""Domain model, GPS quality filters, live fleet state, storage and configuration."""
