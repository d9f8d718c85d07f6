"""The comparison's DuckDB: the engine imported lean, the database opened under one memory
limit, and the run's staged exports handed from the preflight to parity.

A leaf of a parity request's walk (tests/test_parity_walk.py): it calls no other parity
module, so whoever opens the database or claims the stage does not step back into the
export side to do it.
"""

from __future__ import annotations

import importlib
import tempfile
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb

    from cron_dryrun.parity.export_side import ExportStage

# DuckDB spills to disk past this; with Python, the libraries and the transfer buffers (the
# typed reader's 4 MB, ADBC's 2 MB batches) the 1M-key-day diff peaks near 375 MB; at 250MB it
# peaked near 350 MB and spilled more (benchmarks/README.md).
DUCKDB_MEMORY_LIMIT = "275MB"


def duckdb_engine() -> Any:
    """DuckDB's engine: the C++ extension ``_duckdb``, which the ``duckdb`` package re-exports.

    Imported alone it takes ~0.01 s; the package's Python layer (relation API, version
    lookup through importlib.metadata) adds ~0.08 s, which the diff command pays before it
    can start reading. Only ``connect`` and ``Error`` are needed here (the same objects
    either way); without the extension module the package is used.
    """
    engine: Any
    try:
        engine = importlib.import_module("_duckdb")
    except ImportError:
        engine = None
    if not (hasattr(engine, "connect") and hasattr(engine, "Error")):
        engine = importlib.import_module("duckdb")
    return engine


def connect(temp_directory: str) -> duckdb.DuckDBPyConnection:
    """The in-memory database exports are staged and compared in, under one memory limit
    (a DbLoader's Arrow scan and grouping run under it too, on a cursor of their own)."""
    con: duckdb.DuckDBPyConnection = duckdb_engine().connect(
        config={
            "memory_limit": DUCKDB_MEMORY_LIMIT,
            "temp_directory": temp_directory,
            "preserve_insertion_order": False,
        }
    )
    con.execute("SET enable_progress_bar = false")
    return con


class StageDatabase:
    """The stage's own database and its spill folder (export_side.ExportStage's); closed
    here, so whoever claimed the stage closes it without stepping back into the export side."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="cron-dryrun-stage-")
        self.con = connect(self._tmp.name)

    def close(self) -> None:
        self.con.close()
        self._tmp.cleanup()


_run_stage: ExportStage | None = None


def keep_stage(stage: ExportStage) -> None:
    """Keep the run's stage (export_side.stage_for_run) until parity claims it."""
    global _run_stage
    _run_stage = stage


def kept_stage() -> ExportStage | None:
    return _run_stage


def claim_stage() -> ExportStage | None:
    """The run's stage, handed over once (the claimer closes it)."""
    global _run_stage
    stage, _run_stage = _run_stage, None
    return stage
