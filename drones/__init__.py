"""Drone telemetry (DJI Cloud API, MAVLink), endurance, airspace and sortie planning."""
