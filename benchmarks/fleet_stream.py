"""The message stream of the ingest benchmarks: a seeded fleet driving around Miraflores.

Patrol cars publish native JSON (``serenazgo/units/{id}/position``, epoch-ms ``ts``)
and a share of serenos on foot publish OwnTracks ``location`` messages from their
phones (``owntracks/{user}/phone``, whole-second ``tst``, km/h ``vel``). Every unit
drives (or walks) street legs with 90° turns at corners, stops now and then (its
fixes then wander inside their error circle, so the JITTER filter fires), and
reports every ``interval_s`` seconds of device time with GPS noise consistent
with its reported accuracy. Nothing is implausible on purpose: every message must
be stored and every unit's last fix must reach the LiveFleet, so the benchmarks
can check counts exactly. Timestamps increase per unit and the stream ends a
minute before it is generated.

Arrival order interleaves units (a fresh shuffle per reporting round), as a
broker sees a real fleet. :attr:`Stream.keys` gives each message's
``(unit_id, ts in epoch ms)`` as it will be stored, in publish order.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
import psycopg

from tracker.model import Unit, UnitKind
from tracker.store.units import create_unit_sync

CENTRE = (-12.1211, -77.0297)  # Miraflores, Parque Kennedy
SPREAD_DEG = 0.02  # units start within about ±2 km of the centre
M_PER_DEG_LAT = 110_574.0
M_PER_DEG_LON = 108_900.0  # at 12° S
BLOCK_M = 110.0  # Miraflores blocks are about 100-120 m
GRID_ANGLE = math.radians(-38.0)  # the street grid is rotated from north
Key = tuple[str, int]


@dataclass(slots=True)
class Stream:
    """Units to register and the messages they publish, in publish order."""

    units: list[Unit]
    messages: list[tuple[str, bytes]]
    keys: list[Key]  # (unit_id, ts epoch ms) per message, as stored
    interval_s: float

    @property
    def payload_bytes(self) -> int:
        """Total payload size."""
        return sum(len(p) for _, p in self.messages)


@dataclass(slots=True)
class _Mover:
    """True state of one unit between fixes."""

    lat: float
    lon: float
    heading: float  # radians, along the street grid
    speed: float  # m/s while moving
    top: float  # the unit's top speed (m/s)
    to_corner_m: float
    stopped_for: int  # fixes left standing still
    battery: float


def make_stream(
    n: int,
    units: int,
    seed: int,
    *,
    owntracks_share: float = 0.1,
    interval_s: float = 5.0,
    end_ms: int | None = None,
) -> Stream:
    """``n`` messages from ``units`` units (a share on OwnTracks), reporting every ``interval_s`` s."""
    if n < 1 or units < 1:
        raise ValueError("n and units must be positive")
    rng = random.Random(seed)
    n_ot = round(units * owntracks_share)
    fleet: list[Unit] = []
    topics: list[str] = []
    for i in range(units):
        if i < units - n_ot:
            uid = f"mira-car-{i:05d}"
            fleet.append(Unit(uid, UnitKind.PATROL_CAR, callsign=f"Móvil {i}", sector=f"S{i % 9 + 1}"))
            topics.append(f"serenazgo/units/{uid}/position")
        else:
            uid = f"mira-ser-{i:05d}"
            topic = f"owntracks/sereno{i:05d}/phone"
            fleet.append(Unit(uid, UnitKind.FOOT, callsign=f"Sereno {i}", external_ids={"owntracks": topic}))
            topics.append(topic)
    owntracks = [u.kind is UnitKind.FOOT for u in fleet]
    movers = [
        _Mover(
            lat=CENTRE[0] + rng.uniform(-SPREAD_DEG, SPREAD_DEG),
            lon=CENTRE[1] + rng.uniform(-SPREAD_DEG, SPREAD_DEG),
            heading=GRID_ANGLE + rng.randrange(4) * math.pi / 2,
            speed=rng.uniform(0.9, 1.8) if ot else rng.uniform(4.0, 14.0),
            top=2.0 if ot else 16.0,
            to_corner_m=rng.uniform(0, BLOCK_M),
            stopped_for=0,
            battery=rng.uniform(40, 100),
        )
        for ot in owntracks
    ]
    rounds = -(-n // units)
    interval_ms = round(interval_s * 1000)
    if any(owntracks) and interval_ms < 1000:
        raise ValueError("OwnTracks timestamps are whole seconds: interval_s must be at least 1")
    end = end_ms if end_ms is not None else int(time.time() * 1000) - 60_000
    start = end - rounds * interval_ms
    # Each unit reports at its own phase within the interval (whole seconds keep OwnTracks exact).
    phase = [rng.randrange(0, max(1, interval_ms // 1000)) * 1000 for _ in range(units)]
    order = list(range(units))
    messages: list[tuple[str, bytes]] = []
    keys: list[Key] = []
    dumps = orjson.dumps
    for k in range(rounds):
        rng.shuffle(order)
        for u in order:
            if len(messages) == n:
                break
            m = movers[u]
            moving = _advance(m, interval_s, rng)
            ts_ms = start + k * interval_ms + phase[u]
            acc = rng.uniform(3.0, 12.0) if moving else rng.uniform(5.0, 15.0)
            noise = acc / 3.0  # reported accuracy ≈ 3 σ of the position error
            lat = m.lat + rng.gauss(0.0, noise) / M_PER_DEG_LAT
            lon = m.lon + rng.gauss(0.0, noise) / M_PER_DEG_LON
            speed = max(0.0, m.speed + rng.gauss(0.0, 0.3)) if moving else 0.0
            heading = math.degrees(m.heading) % 360.0
            if owntracks[u]:
                m.battery = max(5.0, m.battery - rng.uniform(0.0, 0.05))
                body = {
                    "_type": "location", "tid": f"s{u % 100:02d}", "tst": ts_ms // 1000,
                    "lat": round(lat, 7), "lon": round(lon, 7), "acc": round(acc), "alt": rng.randint(70, 90),
                    "vac": rng.randint(3, 12), "vel": round(speed * 3.6), "cog": round(heading),
                    "batt": round(m.battery), "conn": "m", "t": "t",
                }  # fmt: skip
                keys.append((fleet[u].unit_id, ts_ms // 1000 * 1000))
            else:
                body = {
                    "ts": ts_ms, "lat": round(lat, 7), "lon": round(lon, 7),
                    "alt": round(rng.uniform(70.0, 90.0), 1), "speed": round(speed, 2),
                    "heading": round(heading, 1), "accuracy": round(acc, 1),
                }  # fmt: skip
                keys.append((fleet[u].unit_id, ts_ms))
            messages.append((topics[u], dumps(body)))
    return Stream(fleet, messages, keys, interval_s)


def _advance(m: _Mover, dt: float, rng: random.Random) -> bool:
    """Move one unit ``dt`` seconds along its street; return False when it is standing still."""
    if m.stopped_for > 0:
        m.stopped_for -= 1
        return False
    if rng.random() < 0.03:  # a stop: a call, a checkpoint, a red light, a coffee
        m.stopped_for = rng.randint(2, 12)
        return False
    left = m.speed * dt
    while left > 0:
        step = min(left, m.to_corner_m)
        m.lat += step * math.cos(m.heading) / M_PER_DEG_LAT
        m.lon += step * math.sin(m.heading) / M_PER_DEG_LON
        left -= step
        m.to_corner_m -= step
        if m.to_corner_m <= 0:
            m.to_corner_m = BLOCK_M * rng.uniform(0.8, 1.2)
            turn = rng.random()
            if turn < 0.25:
                m.heading += math.pi / 2
            elif turn < 0.5:
                m.heading -= math.pi / 2
            # Stay in the district: head back towards the centre when too far out.
            if abs(m.lat - CENTRE[0]) > 1.5 * SPREAD_DEG or abs(m.lon - CENTRE[1]) > 1.5 * SPREAD_DEG:
                m.heading = math.atan2(
                    (CENTRE[1] - m.lon) * M_PER_DEG_LON, (CENTRE[0] - m.lat) * M_PER_DEG_LAT
                )
    m.speed = min(m.top, max(0.8, m.speed + rng.gauss(0.0, 0.1 * m.top)))
    return True


def register_units(conninfo: str, units: Sequence[Unit]) -> None:
    """Register ``units`` in one transaction (one commit, not one per unit)."""
    with psycopg.connect(conninfo) as conn, conn.transaction():
        for unit in units:
            create_unit_sync(conn, unit)


def write_keys(path: Path, keys: Sequence[Key]) -> None:
    """Write ``(unit_id, ts_ms)`` per message, one ``unit_id ts_ms`` line each, in publish order."""
    path.write_text("".join(f"{u} {t}\n" for u, t in keys))


def read_keys(path: Path) -> list[Key]:
    """Read what :func:`write_keys` wrote."""
    out: list[Key] = []
    for line in path.read_text().splitlines():
        unit, ts = line.split(" ")
        out.append((unit, int(ts)))
    return out
