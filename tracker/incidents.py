"""Incidents and assignments: placeholder until the incidents work fills it in."""

from __future__ import annotations


class IncidentService:
    """Placeholder."""
