"""``/healthz`` (is every part of the service working?) and ``/metrics`` (Prometheus)."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import asdict, is_dataclass
from typing import Any

import aiomqtt
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.access import MONITOR, admits, public
from api.context import ApiContext, BridgeHandle
from api.deps import Context
from tracker.config import MqttTarget
from tracker.metrics import REGISTRY

router = APIRouter(tags=["operations"])

CHECK_TIMEOUT_S = 3.0


async def check_database(ctx: ApiContext) -> str | None:
    """None when the database answers a query, else what is wrong."""
    if ctx.pool is None:
        return "the database pool is not open"
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S), ctx.pool.connection() as conn:
            await conn.execute("SELECT 1")
    except TimeoutError:
        return f"the database did not answer within {CHECK_TIMEOUT_S:.0f} s (SERENAZGO_DATABASE_URL)"
    except Exception as exc:
        return f"the database is unreachable: {exc} (SERENAZGO_DATABASE_URL)"
    return None


async def check_broker(target: MqttTarget) -> str | None:
    """None when the broker accepts an MQTT connection, else what is wrong."""
    tls = ssl.create_default_context() if target.tls else None
    try:
        async with (
            asyncio.timeout(CHECK_TIMEOUT_S),
            aiomqtt.Client(
                target.host,
                target.port,
                username=target.username,
                password=target.password,
                tls_context=tls,
                timeout=CHECK_TIMEOUT_S,
            ),
        ):
            pass
    except TimeoutError:
        return f"the broker {target.host}:{target.port} did not answer within {CHECK_TIMEOUT_S:.0f} s"
    except Exception as exc:
        return f"the broker {target.host}:{target.port} refused or is unreachable: {exc} (SERENAZGO_MQTT_URL)"
    return None


def bridge_state(bridge: BridgeHandle) -> tuple[str | None, dict[str, Any]]:
    """(problem or None, the bridge's stats as JSON-able values)."""
    try:
        stats = bridge.stats()
    except Exception as exc:
        return f"the bridge cannot report its state: {exc}", {}
    data: dict[str, Any] = asdict(stats) if is_dataclass(stats) and not isinstance(stats, type) else {}
    if isinstance(stats, dict):
        data = dict(stats)
    running = data.get("running", True)
    if not running:
        return "the ingest bridge is not running", data
    if data.get("connected") is False:
        return "the ingest bridge is not connected to the broker (it keeps retrying)", data
    return None, data


# Probes run without credentials; the answer says whether parts run, never where a unit is.
HEALTH_IS_PUBLIC = "a liveness and readiness probe for load balancers and orchestrators: no fleet data"


@router.get(
    "/healthz", summary="Health of the database, the broker and the bridge", **public(HEALTH_IS_PUBLIC)
)
async def healthz(ctx: Context) -> Response:
    """200 with each part's state when all work; 503 naming what is wrong otherwise."""
    checks: dict[str, dict[str, Any]] = {}
    db_problem, broker_problem = await asyncio.gather(
        check_database(ctx),
        check_broker(ctx.mqtt) if ctx.mqtt is not None else _none(),
    )
    checks["database"] = _verdict(db_problem)
    checks["broker"] = (
        _verdict(broker_problem) if ctx.mqtt is not None else {"ok": True, "detail": "not checked"}
    )
    if ctx.bridge is not None:
        problem, stats = bridge_state(ctx.bridge)
        checks["bridge"] = {**_verdict(problem), "stats": stats}
    else:
        checks["bridge"] = {"ok": True, "detail": "runs in another process"}
    problems = [f"{name}: {c['detail']}" for name, c in checks.items() if not c["ok"]]
    body = {"status": "ok" if not problems else "unhealthy", "problems": problems, "checks": checks}
    return JSONResponse(body, status_code=503 if problems else 200)


async def _none() -> None:
    return None


def _verdict(problem: str | None) -> dict[str, Any]:
    return {"ok": problem is None, "detail": problem or "ok"}


@router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse, **admits(MONITOR))
async def metrics() -> Response:
    """Every serenazgo metric in the Prometheus text format."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
