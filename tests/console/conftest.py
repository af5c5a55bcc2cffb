"""The browser of the console tests: Debian's Chromium driven by Playwright, never a downloaded one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.api.live_stack import LiveStack, start_stack
from tests.mqtt_bridge.ingest_rig import IngestRig
from tracker.dispatch import Dispatcher
from tracker.incidents import IncidentService

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless; the test fails (does not skip) when it is not installed."""
    if not CHROMIUM.exists():
        pytest.fail("install Debian's chromium package (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def make_stack(ingest: IngestRig) -> Iterator[Callable[..., LiveStack]]:
    """The full stack: bridge, hub, Dispatcher and IncidentService, app in uvicorn.

    ``make(extra)`` runs ``extra(stack)`` on the server's loop after those services (more of them).
    """
    stacks: list[LiveStack] = []

    if not hasattr(Dispatcher, "nearest"):
        pytest.fail("the Dispatcher (tracker/dispatch.py) is still a placeholder")

    async def services(stack: LiveStack) -> None:
        ctx = stack.ctx
        settings = ctx.settings
        dispatcher = Dispatcher(ctx.fleet, eta=settings.dispatch.eta, thresholds=settings.freshness)
        ctx.dispatcher = dispatcher
        stack.stoppers.append(_async(dispatcher.close))
        incidents = IncidentService(
            ctx.conninfo, ctx.fleet, settings.dispatch, recommend=dispatcher.nearest, feed=stack.hub
        )
        await incidents.start()
        ctx.incidents = incidents
        stack.stoppers.append(incidents.stop)

    def make(extra: Callable[[LiveStack], Awaitable[None]] | None = None) -> LiveStack:
        async def all_services(stack: LiveStack) -> None:
            await services(stack)
            if extra is not None:
                await extra(stack)

        stack = start_stack(ingest, services=all_services)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()


def _async(fn: Callable[[], Any]) -> Callable[[], Any]:
    async def call() -> None:
        fn()

    return call
