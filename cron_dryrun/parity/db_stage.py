"""The database-reading stage: the database side read in a thread of its own, while DuckDB
reads the export (two cores, both busy), or read after it.

The reader (db_reader: ADBC into DuckDB, else COPY csv) runs below this module and hands
back a ``db_side.DbTotalsFiles``; nothing here calls back into the export side or the
comparison.
"""

from __future__ import annotations

import threading
from datetime import date
from pathlib import Path
from typing import Any

from cron_dryrun.parity.db_side import DbLoader, DbTotalsFiles, DbTotalsWriter, TwinExchange


def read_db(
    source: DbTotalsWriter | DbLoader,
    first: date,
    last: date,
    out: Path,
    duck: Any,
    twins: TwinExchange | None = None,
) -> DbTotalsFiles:
    """The database side, whichever kind: a loader fills DuckDB (and matches the export's
    twins when they are offered), a writer writes CSV."""
    if isinstance(source, DbLoader):
        return source.load(first, last, out, duck, twins)
    return source(first, last, out) or DbTotalsFiles((out,))


class DbThread(threading.Thread):
    def __init__(
        self,
        source: DbTotalsWriter | DbLoader,
        first: date,
        last: date,
        out: Path,
        duck: Any,
    ) -> None:
        super().__init__(name="db-totals", daemon=True)
        self.source, self.first, self.last, self.out = source, first, last, out
        # where the export side offers its twins, for a loader to match (db_side.TwinExchange)
        self.twins = TwinExchange() if isinstance(source, DbLoader) else None
        self.duck = duck  # a DuckDB cursor of its own (a loader's), closed when done
        self.error: BaseException | None = None
        self.files: DbTotalsFiles | None = None

    def run(self) -> None:
        try:
            self.files = read_db(
                self.source, self.first, self.last, self.out, self.duck, self.twins
            )
        except BaseException as exc:  # handed to the main thread, raised there
            self.error = exc
        finally:
            self.duck.close()
