"""The package's shape that import-linter cannot see: the acceptance modules are no package."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_acceptance_modules_import_nothing_from_the_plugin() -> None:
    offenders = {
        path.name: sorted(n for n in _imported_modules(path) if n.startswith("cron_dryrun.plugin"))
        for path in sorted((ROOT / "acceptance").glob("*.py"))
    }
    offenders = {name: found for name, found in offenders.items() if found}
    assert offenders == {}, (
        f"acceptance modules import the pytest plugin: {offenders}; import the types and "
        "helpers from cron_dryrun.testing instead"
    )


def test_the_diff_command_and_the_parity_check_share_one_engine_entry_point() -> None:
    """Both call parity.engine.run_parity; neither drives reconcile itself."""
    callers = [ROOT / "cron_dryrun" / "cli" / "diff.py", ROOT / "acceptance" / "test_parity.py"]
    for path in callers:
        imported = _imported_modules(path)
        assert "cron_dryrun.parity.engine.run_parity" in imported, f"{path.name}: no run_parity"
        assert "cron_dryrun.parity.pipeline.reconcile" not in imported, (
            f"{path.name} drives reconcile itself; hand the request to parity.engine.run_parity"
        )
