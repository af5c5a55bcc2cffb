"""DJI Cloud API end to end on a real Mosquitto and PostgreSQL: dock, aircraft and topology messages in,
positions and drone telemetry stored, the live fleet showing each aircraft's battery and mode.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from tests.mqtt_bridge.ingest_rig import IngestRig, Sent
from tracker.model import Unit, UnitKind

pytestmark = pytest.mark.integration

DOCK = "6QCDL820020093"
AIRCRAFT = "1581F5BKD225D00BP891"  # registered as a unit with its DJI serial
PILOT_AIRCRAFT = "1ZNBK7LC00AB"  # flown from a remote controller, auto-registered
RC = "5YSZKAE0030012"
DOCK_POS = (-12.1211, -77.0297)


def message(topic: str, ts: datetime, data: dict[str, Any], gateway: str, **extra: Any) -> Sent:
    body = {"tid": "t", "bid": "b", "timestamp": int(ts.timestamp() * 1000), "gateway": gateway, "data": data}
    body.update(extra)
    return Sent(topic, orjson.dumps(body), "", ts, 0.0, 0.0)


def aircraft_osd(lat: float, lon: float, mode: int, battery: int, head: float) -> dict[str, Any]:
    return {
        "latitude": lat,
        "longitude": lon,
        "elevation": 60.0,
        "height": 98.5,
        "attitude_head": head,
        "horizontal_speed": 10.0,
        "vertical_speed": 0.0,
        "wind_speed": 42,  # 4.2 m/s
        "mode_code": mode,
        "height_limit": 120,
        "battery": {"capacity_percent": battery, "remain_flight_time": 1500, "return_home_power": 20},
        "position_state": {"gps_number": 18, "is_fixed": 2, "quality": 10, "rtk_number": 24},
    }


def test_dji_dock_and_aircraft_messages_are_stored_and_shown(ingest: IngestRig) -> None:
    unit_id = ingest.names.unit("dron")
    ingest.add_units([Unit(unit_id, UnitKind.DRONE, external_ids={"dji": AIRCRAFT})])
    bridge = ingest.bridge(auto_register=True)
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=120)
    aircraft = {"sn": AIRCRAFT, "domain": "0", "type": 67, "sub_type": 0, "index": "A"}
    topo = {"domain": "3", "type": 3, "sub_type": 0, "sub_devices": [aircraft]}
    dock_part_a = {
        "drone_in_dock": 1,
        "drone_charge_state": {"state": 1, "capacity_percent": 97},
        "latitude": DOCK_POS[0],
        "longitude": DOCK_POS[1],
        "wind_speed": 3.0,
        "rainfall": 0,
        "sub_device": {"device_sn": AIRCRAFT, "device_online_status": 0},
    }
    dock_part_b = {"job_number": 12, "network_state": {"type": 2, "quality": 5, "rate": 120.0}}
    flying = [
        (t0 + timedelta(seconds=30), -12.1200, -77.0300, 5, 92, -90.0),
        (t0 + timedelta(seconds=32), -12.1199, -77.0302, 5, 91, -90.0),
        (t0 + timedelta(seconds=34), -12.1198, -77.0304, 9, 91, 135.0),
    ]
    sent = [
        message(f"sys/product/{DOCK}/status", t0, topo, DOCK, method="update_topo"),
        message(f"thing/product/{DOCK}/osd", t0 + timedelta(seconds=1), dock_part_a, DOCK),
        message(f"thing/product/{DOCK}/osd", t0 + timedelta(seconds=2), dock_part_b, DOCK),
        *(
            message(f"thing/product/{AIRCRAFT}/osd", ts, aircraft_osd(lat, lon, mode, batt, head), DOCK)
            for ts, lat, lon, mode, batt, head in flying
        ),
        message(
            f"thing/product/{PILOT_AIRCRAFT}/osd",
            t0 + timedelta(seconds=40),
            aircraft_osd(-12.1300, -77.0400, 3, 55, 10.0),
            RC,
        ),
        message(
            f"sys/product/{DOCK}/status",
            t0 + timedelta(seconds=60),
            {**topo, "sub_devices": []},
            DOCK,
            method="update_topo",
        ),
        # Refused: the aircraft's battery cannot be at 250 %.
        message(
            f"thing/product/{AIRCRAFT}/osd",
            t0 + timedelta(seconds=61),
            aircraft_osd(-12.12, -77.03, 5, 250, 0.0),
            DOCK,
        ),
    ]
    assert all(ingest.publish(sent).acked)
    ingest.wait_for("every DJI message acknowledged", lambda: bridge.stats().acked == len(sent))

    # Positions: the aircraft's three fixes (none while docked) and the pilot's aircraft's one.
    track = ingest.query(
        "SELECT ts, lat, lon, speed, heading, battery FROM positions WHERE unit_id = %s ORDER BY ts", unit_id
    )
    assert [(ts, lat, lon) for ts, lat, lon, *_ in track] == [(ts, lat, lon) for ts, lat, lon, *_ in flying]
    assert [(speed, heading, battery) for *_, speed, heading, battery in track] == [
        (10.0, 270.0, 92.0),
        (10.0, 270.0, 91.0),
        (10.0, 135.0, 91.0),
    ]
    pilot_unit = f"dji.{PILOT_AIRCRAFT}"
    assert ingest.query("SELECT kind FROM units WHERE unit_id = %s", pilot_unit) == [("drone",)]
    assert len(ingest.query("SELECT 1 FROM positions WHERE unit_id = %s", pilot_unit)) == 1

    # Telemetry: docked (from the dock), three in flight, then offline.
    rows = ingest.query(
        "SELECT ts, flight_mode, mode_code, battery_pct, alt_takeoff_m, alt_ellipsoid_m, wind_speed_mps, "
        "docked, dock_id, home_lat, home_lon, gps_fix FROM drone_telemetry WHERE unit_id = %s ORDER BY ts",
        unit_id,
    )
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (t0 + timedelta(seconds=1), "on_ground", None, 97.0),
        (flying[0][0], "mission", 5, 92.0),
        (flying[1][0], "mission", 5, 91.0),
        (flying[2][0], "returning_home", 9, 91.0),
        (t0 + timedelta(seconds=60), "disconnected", None, None),
    ]
    docked_row, first_flight = rows[0], rows[1]
    assert docked_row[6:9] == (3.0, True, DOCK)  # the dock's wind in m/s
    assert [r[7] for r in rows[1:]] == [False, False, False, False]  # took off: the dock's word is older
    assert first_flight[4:6] == (60.0, 98.5)
    assert first_flight[6] == pytest.approx(4.2)  # the aircraft's 0.1 m/s units
    assert first_flight[8] == DOCK
    assert first_flight[9:11] == DOCK_POS  # home: the dock
    assert first_flight[11] == 6  # RTK fixed
    assert ingest.query("SELECT reason FROM dead_letters") == [("battery_pct_out_of_range",)]

    # The live fleet: the docked aircraft went offline; the pilot's aircraft shows battery and mode.
    def fleet_shows_both() -> bool:
        a, b = bridge.fleet.get(unit_id), bridge.fleet.get(pilot_unit)
        return (
            a is not None
            and a.drone is not None
            and a.drone.flight_mode == "disconnected"
            and a.fix is not None
            and a.fix.ts == flying[2][0]
            and b is not None
            and b.drone is not None
            and (b.drone.battery_pct, b.drone.flight_mode) == (55.0, "manual")
        )

    ingest.wait_for("the fleet's DJI drones", fleet_shows_both)
