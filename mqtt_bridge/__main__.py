"""``python -m mqtt_bridge``: run one ingest bridge from the SERENAZGO_* environment until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import sys

from mqtt_bridge.bridge import run_bridge
from tracker.config import Settings
from tracker.errors import SerenazgoError


def main() -> int:
    """Run the bridge; 0 after a clean stop, 2 on a configuration or storage error."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run_bridge(Settings())
    except SerenazgoError as exc:
        logging.getLogger("mqtt_bridge").error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
