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


# DESIGN.md's table: which of our packages each top-level package may import.
MAY_IMPORT = {
    "geo": {"geo"},
    "tracker": {"tracker", "geo"},
    "drones": {"drones", "tracker", "geo"},
    "mqtt_bridge": {"mqtt_bridge", "tracker", "geo", "drones"},
}
OURS = {"geo", "tracker", "drones", "mqtt_bridge", "api", "benchmarks", "tests"}


def test_packages_import_only_what_the_design_allows() -> None:
    import ast

    root = Path(__file__).resolve().parent.parent
    broken = []
    for package, allowed in MAY_IMPORT.items():
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = (
                    [a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0
                    else []
                )  # fmt: skip
                for name in names:
                    top = name.split(".")[0]
                    if top in OURS and top not in allowed:
                        broken.append(f"{path.relative_to(root)}:{node.lineno} imports {name}")
    assert broken == []
