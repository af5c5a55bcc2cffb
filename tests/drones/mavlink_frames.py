"""MAVLink 2 frames built with pymavlink's own encoder, for the decoder and gateway tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymavlink.dialects.v20 import ardupilotmega as mav2

# Miraflores: Parque Kennedy, and the aircraft's home a few hundred metres away.
LAT_E7 = -121_190_000
LON_E7 = -770_370_000
HOME_LAT_E7 = -121_211_000
HOME_LON_E7 = -770_297_000

ARMED_CUSTOM = 128 | 1  # MAV_MODE_FLAG_SAFETY_ARMED | MAV_MODE_FLAG_CUSTOM_MODE_ENABLED
MAV_STATE_STANDBY = 3
MAV_STATE_ACTIVE = 4
MAV_TYPE_QUADROTOR = 2
MAV_AUTOPILOT_ARDUPILOTMEGA = 3
MAV_AUTOPILOT_PX4 = 12


def epoch_us(ts: datetime) -> int:
    """Microseconds since 1970 of an aware datetime, exactly (no float rounding)."""
    delta = ts - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass
class Aircraft:
    """A MAVLink 2 sender (one sysid) whose frames are packed by pymavlink."""

    sysid: int = 7
    compid: int = 1

    def __post_init__(self) -> None:
        self.mav = mav2.MAVLink(None, srcSystem=self.sysid, srcComponent=self.compid)

    def pack(self, message: Any) -> bytes:
        return bytes(message.pack(self.mav))

    def heartbeat(
        self,
        custom_mode: int = 6,
        base_mode: int = ARMED_CUSTOM,
        status: int = MAV_STATE_ACTIVE,
        autopilot: int = MAV_AUTOPILOT_ARDUPILOTMEGA,
        vehicle_type: int = MAV_TYPE_QUADROTOR,
    ) -> bytes:
        return self.pack(self.mav.heartbeat_encode(vehicle_type, autopilot, base_mode, custom_mode, status))

    def system_time(self, unix: datetime | int, boot_ms: int) -> bytes:
        unix_us = unix if isinstance(unix, int) else epoch_us(unix)
        return self.pack(self.mav.system_time_encode(unix_us, boot_ms))

    def position(
        self,
        boot_ms: int,
        lat: int = LAT_E7,
        lon: int = LON_E7,
        alt_mm: int = 152_300,
        rel_mm: int = 61_500,
        vx: int = 300,
        vy: int = -400,
        vz: int = 150,
        hdg: int = 27_000,
    ) -> bytes:
        return self.pack(
            self.mav.global_position_int_encode(boot_ms, lat, lon, alt_mm, rel_mm, vx, vy, vz, hdg)
        )

    def gps_raw(
        self,
        fix: int = 3,
        eph: int = 90,
        satellites: int = 14,
        alt_ellipsoid_mm: int = 0,
        h_acc_mm: int = 0,
    ) -> bytes:
        return self.pack(
            self.mav.gps_raw_int_encode(
                0,
                fix,
                LAT_E7,
                LON_E7,
                152_300,
                eph,
                120,
                500,
                27_000,
                satellites,
                alt_ellipsoid_mm,
                h_acc_mm,
                0,
                0,
                0,
                0,
            )
        )

    def sys_status(self, battery: int = 63) -> bytes:
        return self.pack(self.mav.sys_status_encode(0, 0, 0, 500, 15_800, 1_200, battery, 0, 0, 0, 0, 0, 0))

    def battery_status(self, battery: int = 63, time_remaining: int = 1_210, pack_id: int = 0) -> bytes:
        voltages = [3950] * 4 + [65535] * 6
        return self.pack(
            self.mav.battery_status_encode(
                pack_id, 0, 0, 2500, voltages, 1_200, 900, -1, battery, time_remaining, 0
            )
        )

    def home(self, lat: int = HOME_LAT_E7, lon: int = HOME_LON_E7) -> bytes:
        return self.pack(
            self.mav.home_position_encode(
                lat, lon, 90_800, 0.0, 0.0, 0.0, [1.0, 0.0, 0.0, 0.0], 0.0, 0.0, 0.0
            )
        )
