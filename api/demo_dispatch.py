"""The demo's dispatch room: simulated incidents become real ones, and simulated units obey real assignments.

In ``serenazgo up --demo`` the simulated fleet reports incidents at Central
Alerta's rate instead of dispatching itself. Each becomes a real incident
(through :class:`~tracker.incidents.IncidentService`, so it shows on the console,
is stored and counts in the statistics), with the channel mix of Central Alerta
(68 % detected by patrols). A person at the console may take it: click, assign.
If nobody has after a while, an automatic colleague ("demo") assigns the
first recommended unit, so the demo stays alive without anyone at the console.

Every assignment, whoever made it, reaches the simulation through the incident
messages of the live feed: the unit sets off, reports ``en_route``, drives there
(its arrival is then detected from its positions, like a real one), stays on
scene, and when its time there is over the automatic colleague closes the
incident, which frees the unit; the simulation sends it back on patrol.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from tracker.dispatch import Candidate
from tracker.errors import SerenazgoError
from tracker.feed import FeedListener
from tracker.incidents import Channel, IncidentCategory, IncidentService, IncidentStatus
from tracker.simulation import FleetSimulation

log = logging.getLogger(__name__)

DEMO_OPERATOR = "demo"
# Left for a person at the console first; then the automatic colleague assigns it.
AUTO_ASSIGN_AFTER_S = (45.0, 120.0)
TICK_S = 1.0

# Central Alerta's channels: 68 % of incidents are detected by the patrols themselves.
CHANNEL_WEIGHTS = {
    Channel.PATROL: 68,
    Channel.CAMERA: 12,
    Channel.PHONE: 10,
    Channel.WHATSAPP: 6,
    Channel.SOCIAL: 3,
    Channel.OTHER: 1,
}
CATEGORY_WEIGHTS = {
    IncidentCategory.SEGURIDAD_CIUDADANA: 35,
    IncidentCategory.FISCALIZACION: 25,
    IncidentCategory.SEGURIDAD_VIAL: 15,
    IncidentCategory.OBRAS_SERVICIOS: 10,
    IncidentCategory.APOYO_TURISTA: 8,
    IncidentCategory.DEFENSA_CIVIL: 4,
    IncidentCategory.OTRO: 3,
}
DESCRIPTIONS = {
    IncidentCategory.SEGURIDAD_CIUDADANA: "Persona sospechosa merodeando vehículos",
    IncidentCategory.FISCALIZACION: "Comercio ambulatorio en la vía pública",
    IncidentCategory.SEGURIDAD_VIAL: "Vehículo mal estacionado obstruye la ciclovía",
    IncidentCategory.OBRAS_SERVICIOS: "Poste de alumbrado apagado",
    IncidentCategory.APOYO_TURISTA: "Turista extraviado solicita orientación",
    IncidentCategory.DEFENSA_CIVIL: "Cables colgando tras caída de rama",
    IncidentCategory.OTRO: "Ruidos molestos reportados por vecinos",
}


class DemoDispatch:
    """Connects a :class:`FleetSimulation` (``external_dispatch=True``) to the real incident service.

    Build it, pass :meth:`feed` as the incident service's feed listener (it
    forwards everything to ``forward``), then run :meth:`run` as a task on the
    service's loop.
    """

    def __init__(
        self,
        sim: FleetSimulation,
        forward: FeedListener,
        recommend: Callable[[float, float, int], list[Candidate]],
        *,
        seed: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sim = sim
        self.forward = forward
        self.recommend = recommend
        self.incidents: IncidentService | None = None  # set before run()
        self._rng = random.Random(seed)
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._following: dict[str, int] = {}  # unit -> incident it was sent to
        self._auto_assign: dict[int, float] = {}  # open incident -> when the colleague takes it
        self.created = self.auto_assigned = self.closed = 0

    def feed(self, kind: str, payload: dict[str, Any]) -> None:
        """FeedListener: forward, and let the simulation follow the assignments in incident messages."""
        self.forward(kind, payload)
        loop = self._loop
        if kind == "incident" and loop is not None:
            loop.call_soon_threadsafe(self._follow, payload)

    def _follow(self, incident: dict[str, Any]) -> None:
        """Apply one incident message to the simulation (on the loop)."""
        incident_id = int(incident["incident_id"])
        if incident["status"] != IncidentStatus.OPEN:
            self._auto_assign.pop(incident_id, None)
        for a in incident.get("assignments", ()):
            unit = str(a["unit_id"])
            if a["open"] and self._following.get(unit) != incident_id:
                if self.sim.dispatch_to(unit, float(incident["lat"]), float(incident["lon"])):
                    self._following[unit] = incident_id
            elif not a["open"] and self._following.get(unit) == incident_id:
                del self._following[unit]
                self.sim.release(unit)

    def bind(self) -> None:
        """Follow incident messages on the running loop from now on (:meth:`run` does it itself)."""
        self._loop = asyncio.get_running_loop()

    async def run(self, stop: asyncio.Event) -> None:
        """Report, auto-assign and close incidents until ``stop`` is set; errors are logged, never fatal."""
        self.bind()
        while not stop.is_set():
            try:
                await self.tick()
            except (SerenazgoError, OSError) as exc:
                log.warning("demo dispatch: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TICK_S)

    async def tick(self) -> None:
        """One round: report new incidents, assign those left open too long, close cleared ones."""
        service = self.incidents
        if service is None:
            return
        rng = self._rng
        for reported in self.sim.take_incidents():
            category = rng.choices(list(CATEGORY_WEIGHTS), weights=list(CATEGORY_WEIGHTS.values()))[0]
            channel = rng.choices(list(CHANNEL_WEIGHTS), weights=list(CHANNEL_WEIGHTS.values()))[0]
            incident, _ = await service.create(
                lat=reported.lat, lon=reported.lon, category=category, channel=channel,
                priority=rng.choice((2, 3, 3, 3, 4)), description=DESCRIPTIONS[category],
                reported_by=DEMO_OPERATOR, operator=DEMO_OPERATOR,
            )  # fmt: skip
            self.created += 1
            self._auto_assign[incident.incident_id] = self._clock() + rng.uniform(*AUTO_ASSIGN_AFTER_S)
        now = self._clock()
        for incident_id, due in list(self._auto_assign.items()):
            # _follow (same loop, between awaits) may have removed it: someone assigned it first.
            if due <= now and self._auto_assign.pop(incident_id, None) is not None:
                await self._assign_first_free(service, incident_id)
        for unit in self.sim.take_cleared():
            job = service.watched().get(unit)
            if job is None:
                self.sim.release(unit)  # released meanwhile by someone else
                continue
            with contextlib.suppress(SerenazgoError):
                await service.close(job, "Atendido", DEMO_OPERATOR)
                self.closed += 1

    async def _assign_first_free(self, service: IncidentService, incident_id: int) -> None:
        """Assign the best recommended unit that accepts (someone may have taken it meanwhile)."""
        incident = await service.get(incident_id)
        if incident.status is not IncidentStatus.OPEN:
            return
        for candidate in self.recommend(incident.lat, incident.lon, 5):
            try:
                await service.assign(incident_id, candidate.unit_id, DEMO_OPERATOR)
            except SerenazgoError:
                continue
            self.auto_assigned += 1
            return
