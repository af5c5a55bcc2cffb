"""The HTTP floor of bench_dispatch_http: uvicorn + FastAPI answering a precomputed body, nothing else.

Same server stack and settings as ``serenazgo up`` (uvicorn, one process, no
access log) and a response of the same size as a nearest-unit answer, so its
latency is what the HTTP stack alone costs on this machine.

Run by the benchmark: ``python -m benchmarks._http_floor --port P --body-bytes N``.
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI, Response


def make_app(body: bytes) -> FastAPI:
    """An app whose one route returns ``body`` as JSON (query parameters are parsed and ignored)."""
    app = FastAPI()

    @app.get("/api/v1/dispatch/nearest")
    async def nearest(lat: float, lon: float, k: int = 5) -> Response:
        return Response(body, media_type="application/json")

    @app.get("/api/v1/ingest/osmand")
    async def osmand() -> Response:
        # bench_http_ingest's limit: the same route answered 200 with no work at all.
        return Response(b"")

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b"{}", media_type="application/json")

    return app


def main() -> None:
    """Serve until killed."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--body-bytes", type=int, default=1500)
    args = ap.parse_args()
    body = b'{"units":[' + b" " * max(0, args.body_bytes - 12) + b"]}"
    uvicorn.run(make_app(body), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
