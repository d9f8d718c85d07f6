"""The package's shape that import-linter cannot see: the acceptance modules are no package."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
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


def _environment_reads(path: Path) -> list[int]:
    """Lines reading ``os.environ`` / ``os.getenv`` directly."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ("environ", "getenv")
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        ):
            lines.append(node.lineno)
    return lines


def test_the_commands_read_the_environment_only_through_the_settings_table() -> None:
    """No second parser: a command's variables are rows of config/options.py, read by
    cli/options.py (its one ``environment()``), never by name from os.environ."""
    cli = ROOT / "cron_dryrun" / "cli"
    offenders = {
        path.name: found
        for path in sorted(cli.glob("*.py"))
        if path.name != "options.py" and (found := _environment_reads(path))
    }
    assert offenders == {}, f"read through cli/options.option instead: {offenders}"
    assert len(_environment_reads(cli / "options.py")) == 1


def test_loading_the_plugin_loads_no_driver_client_or_stand_in() -> None:
    """The plugin is loaded by every pytest run where cron-dryrun is installed: the database
    driver, the HTTP client, DuckDB and the stand-ins are loaded by a dry run, not by it."""
    heavy = ("psycopg", "httpx", "duckdb", "pyarrow", "uvicorn", "cron_dryrun.standin")
    probe = (
        "import sys, pytest, cron_dryrun.plugin; "
        f"print(sorted({{h for h in {heavy!r} for m in sys.modules "
        "if m == h or m.startswith(h + '.')}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    assert done.stdout.strip() == "[]", (
        f"importing cron_dryrun.plugin loaded {done.stdout.strip()}: import them in the "
        "function that needs them (session/, target/), not at the top of a module the plugin loads"
    )
