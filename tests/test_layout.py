"""The test suite imports its own helpers, not a same-named package from site-packages."""

from __future__ import annotations

from pathlib import Path

import tests
import tests.fixtures.postgres


def test_tests_package_is_this_repository() -> None:
    # gmqtt (a benchmark peer) installs a top-level ``tests`` package; ours must win.
    repo = Path(__file__).resolve().parent
    assert Path(tests.__file__).resolve().parent == repo
    assert Path(tests.fixtures.postgres.__file__).resolve().is_relative_to(repo)
