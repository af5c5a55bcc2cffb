"""The HTTP floor of the HTTP benchmarks: the server stack of ``serenazgo up`` answering without work.

Same server stack and settings as ``serenazgo up`` (uvicorn, one process, no
access log, :class:`api.app.FastPaths` in front of a FastAPI app): the nearest
route returns a precomputed body of the same size as a nearest-unit answer
(bench_dispatch_http), and the OsmAnd ingest path an empty 200 through the same
fast path the real ingest takes (bench_http_ingest), so each is what the HTTP
stack alone costs on this machine.

Run by the benchmark: ``python -m benchmarks._http_floor --port P --body-bytes N``.
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI, Response
from starlette.requests import Request
from starlette.routing import Route

from api.app import FastPaths


def make_app(body: bytes) -> FastAPI:
    """An app whose one route returns ``body`` as JSON (query parameters are parsed and ignored)."""
    app = FastAPI()

    @app.get("/api/v1/dispatch/nearest")
    async def nearest(lat: float, lon: float, k: int = 5) -> Response:
        return Response(body, media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b"{}", media_type="application/json")

    return app


async def _ok(request: Request) -> Response:
    # bench_http_ingest's limit: the ingest path answered 200 with no work at all.
    return Response(b"")


def served(body: bytes) -> FastPaths:
    """:func:`make_app` behind the same fast path ``serenazgo up`` serves ingest through."""
    return FastPaths(make_app(body), [Route("/api/v1/ingest/osmand", _ok, methods=["GET", "POST"])])


def main() -> None:
    """Serve until killed."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--body-bytes", type=int, default=1500)
    args = ap.parse_args()
    body = b'{"units":[' + b" " * max(0, args.body_bytes - 12) + b"]}"
    uvicorn.run(served(body), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
