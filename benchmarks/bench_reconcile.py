"""Parity diff at scale: N export rows against N usage_events rows in a real PostgreSQL.

    python benchmarks/bench_reconcile.py --rows 100000
    python benchmarks/bench_reconcile.py --rows 1000000 --rounds 5
    python benchmarks/bench_reconcile.py --rows 10000000 --hourly --readers adbc

Each round runs the command once per database reader (``--readers``, default
``adbc,copy-csv``: the new path and today's, alternately, against the same database), plus
a bare CPython process that only parses the export (``csv.reader`` summing one column),
side by side. The 1-minute load average is printed before every run: two cores shared
with anything else give figures that are not the command's.

Cases (``--cases``, default all three, printed side by side): ``dashboard-daily`` and
``dashboard-hourly`` (the dashboard's shape: long ids, every count a float, almost every row
its own key-day), ``short-daily`` (the earlier short-id shape). Each case has its own database.

Setup (untimed, but reported): start an embedded PostgreSQL, create the app's tables,
generate a dashboard-style export CSV and matching usage_events rows with DuckDB
(daily buckets, ``--days`` days x N/days keys; ``--hourly``: hourly buckets, 24 per
key-day, against the daily rows the cron writes for them), inject a few differences, and load the
rows with COPY, then VACUUM (ANALYZE) and CHECKPOINT so no background work of the load
overlaps the timing. The package's bytecode is written first (as an install
does; this machine sets PYTHONDONTWRITEBYTECODE). Timed: ``cron-dryrun diff`` as a child
process, exactly as an operator runs it; its wall seconds and peak RSS (wait4's rusage, taken by a small trampoline
process so the benchmark's own memory is not inherited) are printed.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cron_dryrun.parity.formats import METRIC_COLUMNS  # noqa: E402
from cron_dryrun.target.database import create_app_database  # noqa: E402
from cron_dryrun.target.embedded import start_embedded  # noqa: E402

FIRST_DAY = date(2025, 9, 28)
KEYS_PER_API_KEY = 100  # rows share provider keys the way users share a few admin keys
HEADER = (
    "start_time,end_time,start_time_iso,end_time_iso,project_id,num_model_requests,user_id,"
    "api_key_id,model,batch,service_tier,input_tokens,output_tokens,input_cached_tokens,"
    "input_uncached_tokens,input_text_tokens,output_text_tokens,input_cached_text_tokens,"
    "input_audio_tokens,input_cached_audio_tokens,output_audio_tokens,input_image_tokens,"
    "input_cached_image_tokens,output_image_tokens"
)
# deterministic pseudo-random metrics from the row number
METRIC_EXPR = {
    "input_tokens": "(i * 7919) % 90000 + 1000",
    "output_tokens": "(i * 104729) % 20000 + 100",
    "input_cached_tokens": "(i * 13) % 500",
    "input_uncached_tokens": "(i * 7919) % 90000 + 1000 - (i * 13) % 500",
    "input_text_tokens": "(i * 7919) % 90000 + 1000",
    "output_text_tokens": "(i * 104729) % 20000 + 100",
    "input_cached_text_tokens": "(i * 13) % 500",
    "input_audio_tokens": "0",
    "input_cached_audio_tokens": "0",
    "output_audio_tokens": "0",
    "input_image_tokens": "(i % 17) * 3",
    "input_cached_image_tokens": "0",
    "output_image_tokens": "0",
    "num_model_requests": "i % 40 + 1",
}


# Two shapes of export. "dashboard" is what the usage dashboard writes (and the default):
# project_id proj_ + 24 characters, user_id user- + 24, api_key_id key_ + 16, every count
# written as a float (102.0), and almost every row its own key-day (one row in 300 repeats
# the key of the row before it, in the same bucket). "short" is the earlier synthetic shape:
# short ids, a float count on every 5th row only, every row its own key-day.
SHAPES = ("dashboard", "short")
REPEAT_EVERY = 300  # dashboard: row i with i % 300 == 7 shares the key of row i - 1


def _key_columns(shape: str, k: str) -> str:
    """The key columns of the row whose key number is ``k`` (an SQL expression)."""
    if shape == "dashboard":
        return (
            f"'proj_' || substr(md5('p' || ({k}) % 50), 1, 24) AS project_id, "
            f"'key_' || substr(md5('k' || ({k}) // {KEYS_PER_API_KEY}), 1, 16) AS api_key_id, "
            f"'user-' || substr(md5('u' || ({k})), 1, 24) AS user_id, "
            f"['gpt-4o-mini-2024-07-18', 'gpt-4o', 'o3-mini'][(({k}) % 3) + 1] AS model, "
            f"'default' AS service_tier, (({k}) % 11 = 0) AS batch"
        )
    return (
        f"'proj_' || (({k}) % 50) AS project_id, "
        f"'key_' || (({k}) // {KEYS_PER_API_KEY}) AS api_key_id, 'user_' || ({k}) AS user_id, "
        f"['gpt-4o-mini-2024-07-18', 'gpt-4o', 'o3-mini'][(({k}) % 3) + 1] AS model, "
        f"'default' AS service_tier, (({k}) % 11 = 0) AS batch"
    )


def _export_metrics(shape: str) -> str:
    """The export's count cells: all floats (dashboard), or every 5th row (short)."""
    if shape == "dashboard":
        return ", ".join(
            f"CAST({expr} AS VARCHAR) || '.0' AS {name}" for name, expr in METRIC_EXPR.items()
        )
    return ", ".join(
        (
            f"CASE WHEN i % 5 = 0 THEN CAST({expr} AS VARCHAR) || '.0' "
            f"ELSE CAST({expr} AS VARCHAR) END AS {name}"
            if name != "num_model_requests"
            else f"{expr} AS {name}"
        )
        for name, expr in METRIC_EXPR.items()
    )


def _write_export(con: duckdb.DuckDBPyConnection, rows_sql: str, hours: bool, out: Path) -> None:
    """The export CSV in the dashboard's column order, from rows with day (and h)."""
    at = "day + to_hours(h)" if hours else "day"
    until = "day + to_hours(h + 1)" if hours else "day + 1"
    cols = HEADER.split(",")
    con.execute(
        f"COPY (SELECT epoch({at})::BIGINT AS start_time, epoch({until})::BIGINT AS end_time, "
        f"strftime({at}, '%Y-%m-%dT%H:%M:%S+00:00') AS start_time_iso, "
        f"strftime({until}, '%Y-%m-%dT%H:%M:%S+00:00') AS end_time_iso, "
        f"CASE WHEN batch THEN 'TRUE' ELSE 'FALSE' END AS batch_text, * EXCLUDE (batch) "
        f"FROM ({rows_sql}) ORDER BY i) TO '{out}.tmp' (HEADER, DELIMITER ',')"
    )
    # the columns in the dashboard's order, batch as its text
    picked = ", ".join("batch_text AS batch" if c == "batch" else c for c in cols)
    con.execute(
        f"COPY (SELECT {picked} FROM read_csv('{out}.tmp', all_varchar=true, header=true)) "
        f"TO '{out}' (HEADER, DELIMITER ',', QUOTE '')"
    )
    Path(f"{out}.tmp").unlink()


def generate(
    work: Path, rows: int, days: int, shape: str = "dashboard"
) -> tuple[Path, Path, dict[str, int]]:
    """The export CSV and the usage_events CSV (for COPY), with injected differences."""
    per_day = rows // days
    con = duckdb.connect()
    # dashboard: every REPEAT_EVERY-th row repeats the previous row's key (same bucket)
    k = f"CASE WHEN i % {REPEAT_EVERY} = 7 THEN k - 1 ELSE k END" if shape == "dashboard" else "k"
    base = (
        f"SELECT i, d, k, DATE '{FIRST_DAY.isoformat()}' + CAST(d AS INTEGER) AS day, "
        f"{_key_columns(shape, k)} "
        f"FROM (SELECT i, i // {per_day} AS d, i % {per_day} AS k FROM range({per_day * days}) t(i))"
    )
    export = work / f"export-{shape}.csv"
    _write_export(con, f"SELECT *, {_export_metrics(shape)} FROM ({base})", False, export)
    # injected differences: 3 key-days drift +5 %, 2 key-days are missing in the DB,
    # 2 extra key-days exist only in the DB
    drift = {per_day * (days - 1) + 10, per_day * (days - 1) + 20, per_day * (days - 1) + 30}
    dropped = {per_day * (days - 1) + 40, per_day * (days - 1) + 50}
    # the cron writes one row per key-day: a repeated key's rows are summed
    db_cols = ", ".join(
        f"sum(CAST(({expr}) * CASE WHEN i IN ({','.join(map(str, drift))}) AND "
        f"'{name}' = 'output_tokens' THEN 1.05 ELSE 1 END AS BIGINT)) AS {db}"
        for name, db in METRIC_COLUMNS
        for expr in [METRIC_EXPR[name]]
    )
    usage = work / "usage_events.csv"
    n_keys = per_day // KEYS_PER_API_KEY + 1
    con.execute(
        f"COPY (SELECT ({k} // {KEYS_PER_API_KEY}) % {n_keys} + 1 AS key_id, model, {db_cols}, "
        f"day AS timestamp, day AS window_start, day + 1 AS window_end, project_id, user_id, "
        f"api_key_id, service_tier, batch FROM ({base}) WHERE i NOT IN ({','.join(map(str, dropped))}) "
        f"GROUP BY ALL UNION ALL SELECT 1, 'gpt-4o', {', '.join('7' for _ in METRIC_COLUMNS)}, day, day, day + 1, "
        f"'proj_extra', 'user_extra_' || d, 'key_extra', 'default', false FROM ({base}) "
        f"WHERE i IN (0, {per_day * (days - 1)})) TO '{usage}' (HEADER false, DELIMITER ',')"
    )
    expected = {"mismatched": len(drift), "missingInDb": len(dropped), "missingInCsv": 2}
    return export, usage, {"keys": n_keys, **expected}


def generate_hourly(
    work: Path, rows: int, days: int, shape: str = "dashboard"
) -> tuple[Path, Path, dict[str, int]]:
    """Hourly export rows (24 per key-day) and the daily usage_events rows that match them."""
    keys = rows // days // 24  # key-days per day
    con = duckdb.connect()
    hourly = (
        f"SELECT i, d, k, h, d * {keys} + k AS j, "
        f"DATE '{FIRST_DAY.isoformat()}' + CAST(d AS INTEGER) AS day, {_key_columns(shape, 'k')} "
        f"FROM (SELECT i, i // {keys * 24} AS d, (i % {keys * 24}) // 24 AS k, i % 24 AS h "
        f"FROM range({keys * 24 * days}) t(i))"
    )
    export = work / f"export-{shape}-hourly.csv"
    _write_export(con, f"SELECT *, {_export_metrics(shape)} FROM ({hourly})", True, export)
    last = keys * (days - 1)
    drift = {last + 10, last + 20, last + 30}
    dropped = {last + 40, last + 50}
    db_cols = ", ".join(
        f"CAST(sum({expr}) * CASE WHEN j IN ({','.join(map(str, drift))}) "
        f"AND '{name}' = 'output_tokens' THEN 1.05 ELSE 1 END AS BIGINT) AS {db}"
        for name, db in METRIC_COLUMNS
        for expr in [METRIC_EXPR[name]]
    )
    usage = work / "usage_events.csv"
    n_keys = keys // KEYS_PER_API_KEY + 1
    con.execute(
        f"COPY (SELECT (k // {KEYS_PER_API_KEY}) % {n_keys} + 1 AS key_id, model, {db_cols}, "
        f"day AS timestamp, day AS window_start, day + 1 AS window_end, project_id, user_id, "
        f"api_key_id, service_tier, batch FROM ({hourly}) "
        f"WHERE j NOT IN ({','.join(map(str, dropped))}) "
        f"GROUP BY j, k, day, model, project_id, user_id, api_key_id, service_tier, batch "
        f"UNION ALL SELECT 1, 'gpt-4o', {', '.join('7' for _ in METRIC_COLUMNS)}, day, day, "
        f"day + 1, 'proj_extra', 'user_extra_' || d, 'key_extra', 'default', false "
        f"FROM ({hourly}) WHERE i IN (0, {last * 24})) TO '{usage}' (HEADER false, DELIMITER ',')"
    )
    expected = {"mismatched": len(drift), "missingInDb": len(dropped), "missingInCsv": 2}
    return export, usage, {"keys": n_keys, **expected}


def load(dsn: str, usage: Path, n_keys: int) -> None:
    db_columns = ", ".join(db for _, db in METRIC_COLUMNS)
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO users (id) VALUES ('bench-user')")
        conn.execute(
            "INSERT INTO provider_keys (user_id, provider, encrypted_key, iv, auth_tag, usage_mode) "
            "SELECT 'bench-user', 'openai', 'x', 'x', 'x', 'admin' FROM generate_series(1, %s)",
            (n_keys,),
        )
        with (
            conn.cursor() as cur,
            cur.copy(
                f"COPY usage_events (key_id, model, {db_columns}, timestamp, window_start, window_end, "
                f"project_id, openai_user_id, openai_api_key_id, service_tier, batch) FROM STDIN (FORMAT csv)"
            ) as copy,
            open(usage, "rb") as fh,
        ):
            while block := fh.read(1 << 20):
                copy.write(block)
    # a settled database, as the cron's would be: without this, autovacuum and the
    # checkpointer work through the freshly loaded rows while the diff is timed
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) usage_events")
        conn.execute("CHECKPOINT")


# Spawns the command and reports its wall time and rusage. A child forked from this
# benchmark would inherit its peak RSS (ru_maxrss keeps the pre-exec high-water mark, and
# generating 1M rows takes ~850 MB); forked from this small trampoline it cannot.
TRAMPOLINE = """
import json, os, sys, time
out, cmd = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
pid = os.posix_spawn(cmd[0], cmd, os.environ)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - started
with open(out, "w") as fh:
    json.dump({"wall": wall, "maxrss_kib": usage.ru_maxrss,
               "cpu": usage.ru_utime + usage.ru_stime,
               "exit": os.waitstatus_to_exitcode(status)}, fh)
"""


def copy_checkout(other: Path, into: Path) -> Path:
    """Another checkout's package, copied under ``into`` and compiled there (its tree is not
    written to). PYTHONPYCACHEPREFIX, used before, also moved every library's bytecode
    (duckdb, psycopg, adbc) to a folder that held none: with PYTHONDONTWRITEBYTECODE set here,
    the other checkout's runs compiled those from source each time (0.3-0.8 s a run)."""
    root = into / other.name
    shutil.copytree(
        other / "cron_dryrun", root / "cron_dryrun", ignore=shutil.ignore_patterns("__pycache__")
    )
    compileall.compile_dir(root / "cron_dryrun", quiet=1)
    return root


# The floor: a bare CPython process that only parses the export (csv.reader, one column summed).
BASELINE = """
import csv, sys
total = 0
with open(sys.argv[1], newline="") as fh:
    rows = csv.reader(fh)
    column = next(rows).index("output_tokens")
    for row in rows:
        total += float(row[column])
print(total)
"""


# The preflight's full read of the export (issue 25): a process that stages it as the gate's
# preflight does (session.preflight.check_exports) and prints the seconds that took.
PREFLIGHT = """
import sys, time
from pathlib import Path
t0 = time.perf_counter()
from cron_dryrun.session.preflight import check_exports
t1 = time.perf_counter()
problems = check_exports([Path(sys.argv[1])])
print(f"{time.perf_counter() - t1:.3f} {t1 - t0:.3f} {len(problems)}")
"""


def measured(cmd: list[str], out: Path, root: Path = ROOT) -> dict:
    """``cmd`` spawned by the trampoline: wall, peak RSS (KiB), CPU seconds, exit status."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop("CRON_DRYRUN_DB_READER", None)  # the reader is given on the command line
    # cwd: ``python -m`` puts the working directory first on sys.path, ahead of PYTHONPATH:
    # started from a checkout, every run imported that checkout's package, --compare-with's
    # included (so the two columns timed the same code)
    proc = subprocess.run(
        [sys.executable, "-c", TRAMPOLINE, str(out), *cmd],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=out.parent,
    )
    usage = json.loads(out.read_text())
    if usage["exit"] not in (0, 1) and proc.stderr.strip():  # 1: the diff found differences
        print(proc.stderr[-2000:], file=sys.stderr)
    return usage


def run_diff(
    export: Path, dsn: str, days: int, output: Path, reader: str, root: Path = ROOT
) -> tuple[float, int, int, dict]:
    """The command as an operator runs it; wall seconds, peak RSS (KiB), exit status, report."""
    last = FIRST_DAY + timedelta(days=days - 1)
    cmd = [
        sys.executable, "-m", "cron_dryrun.cli", "diff", "--export", str(export),
        "--database-url", dsn, "--from", FIRST_DAY.isoformat(), "--to", last.isoformat(),
        "--output", str(output), "--db-reader", reader, "--no-progress",
    ]  # fmt: skip
    usage = measured(cmd, output.with_name("rusage.json"), root)
    report = json.loads(output.read_text()) if output.exists() else {}
    report["_cpu"] = usage["cpu"]  # the diff process's own CPU seconds (user + system)
    return usage["wall"], usage["maxrss_kib"], usage["exit"], report


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def postmaster_pid(dsn: str) -> int | None:
    """The server's postmaster (first line of postmaster.pid in its data directory)."""
    try:
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SHOW data_directory").fetchone()
        return int((Path(row[0]) / "postmaster.pid").read_text().split()[0]) if row else None
    except (OSError, psycopg.Error, ValueError):
        return None


def server_cpu(pid: int | None) -> float:
    """CPU seconds of the PostgreSQL server so far: the postmaster's own and its reaped
    children's (every backend that served a finished connection: the diff's reads)."""
    if pid is None:
        return float("nan")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


CASES = ("dashboard-daily", "dashboard-hourly", "short-daily")


def run_case(
    server_dsn: str, work: Path, case: str, args: argparse.Namespace, readers: list[str]
) -> tuple[dict[str, list[tuple[float, int, float]]], dict[str, list[tuple[float, float]]], int]:
    """Set up one case (its own database and export), then time it: every reader and the
    csv.reader floor, alternately, ``--rounds`` times. Also returns, per run, the CPU
    seconds of the process and of the PostgreSQL server."""
    shape, buckets = case.split("-")
    runs: dict[str, list[tuple[float, int, float]]] = {r: [] for r in [*readers, "csv.reader"]}
    cpus: dict[str, list[tuple[float, float]]] = {}
    pg_pid = postmaster_pid(server_dsn)
    failures = 0
    t0 = time.perf_counter()
    dsn = create_app_database(server_dsn)
    t_db = time.perf_counter() - t0
    make = generate_hourly if buckets == "hourly" else generate
    export, usage, expected = make(work, args.rows, args.days, shape)
    t_gen = time.perf_counter() - t0 - t_db
    load(dsn, usage, expected["keys"])
    usage.unlink()
    t_load = time.perf_counter() - t0 - t_db - t_gen
    print(
        f"[{case}] setup: {time.perf_counter() - t0:.1f} s (schema {t_db:.1f} s, generate "
        f"{t_gen:.1f} s, COPY + VACUUM ANALYZE + CHECKPOINT {t_load:.1f} s); export "
        f"{export.stat().st_size / 1e6:.0f} MB",
        flush=True,
    )
    # "adbc" / "copy-csv": this checkout; "adbc@<name>": another one (--compare-with), same data
    timed = [(r, r, ROOT) for r in readers] + [
        ("adbc", f"adbc@{other.name}", other) for other in args.compare_with
    ]
    for _, label, _ in timed[len(readers) :]:
        runs[label] = []
    for n in range(1, args.rounds + 1):
        for reader, label, root in timed:
            load_before = load_average()
            output = work / f"report-{case}-{n}-{label.replace('@', '-')}.json"
            pg_before = server_cpu(pg_pid)
            wall, rss_kib, status, report = run_diff(export, dsn, args.days, output, reader, root)
            pg_cpu = server_cpu(pg_pid) - pg_before
            cpus.setdefault(label, []).append((report["_cpu"], pg_cpu))
            counts = report.get("counts", {})
            found = {k: counts.get(k) for k in ("mismatched", "missingInDb", "missingInCsv")}
            wanted = {k: expected[k] for k in found}
            ok = found == wanted and status == 1 and report.get("dbReader") == reader
            failures += not ok
            runs[label].append((wall, rss_kib, load_before))
            print(
                f"[{case}] round {n} {label:<9} load {load_before:4.2f}  wall {wall:6.2f} s "
                f"(inside the diff {report.get('elapsedSeconds')} s)  "
                f"peak RSS {rss_kib / 1024:5.0f} MB  CPU {report['_cpu']:5.2f} s + server "
                f"{pg_cpu:4.2f} s  exit {status}  "
                f"dbReader {report.get('dbReader')}  found {found}"
                + ("" if ok else f"  UNEXPECTED (wanted {wanted}, exit 1)"),
                flush=True,
            )
        load_before = load_average()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        pre = subprocess.run(
            [sys.executable, "-c", PREFLIGHT, str(export)],
            env=env,
            capture_output=True,
            text=True,
            cwd=work,
        )
        staged_s, import_s, problems = pre.stdout.split() if pre.returncode == 0 else ("?",) * 3
        if pre.returncode != 0 or problems != "0":
            print(pre.stderr[-2000:], file=sys.stderr)
            failures += 1
        else:
            runs.setdefault("preflight", []).append((float(staged_s), 0, load_before))
        print(
            f"[{case}] round {n} preflight  load {load_before:4.2f}  full read (staged) {staged_s} s "
            f"(import {import_s} s)  problems {problems}",
            flush=True,
        )
        if not args.no_baseline:
            load_before = load_average()
            base = measured([sys.executable, "-c", BASELINE, str(export)], work / "baseline.json")
            runs["csv.reader"].append((base["wall"], base["maxrss_kib"], load_before))
            cpus.setdefault("csv.reader", []).append((base["cpu"], 0.0))
            print(
                f"[{case}] round {n} csv.reader load {load_before:4.2f}  wall {base['wall']:6.2f} s"
                f"  peak RSS {base['maxrss_kib'] / 1024:5.0f} MB  CPU {base['cpu']:5.2f} s",
                flush=True,
            )
    export.unlink()
    return runs, cpus, failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="export rows")
    parser.add_argument("--days", type=int, default=10, help="UTC days the rows are spread over")
    parser.add_argument(
        "--cases",
        default=",".join(CASES),
        help=f"shape-buckets cases, each with its own export and database (default {','.join(CASES)})",
    )
    parser.add_argument(
        "--hourly", action="store_true", help="only the dashboard-hourly case (as --cases)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="rounds (each: every reader)")
    parser.add_argument(
        "--readers", default="adbc,copy-csv", help="database readers, alternated in each round"
    )
    parser.add_argument(
        "--compare-with",
        type=Path,
        action="append",
        default=[],
        help="another checkout (e.g. /work/main) whose diff is timed too (adbc), side by side",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the csv.reader floor")
    args = parser.parse_args()
    readers = [r.strip() for r in args.readers.split(",") if r.strip()]
    cases = ["dashboard-hourly"] if args.hourly else [c.strip() for c in args.cases.split(",")]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")

    # An installed command runs from bytecode; this machine sets PYTHONDONTWRITEBYTECODE=1, so
    # without this every timed run would compile the package from source first (~0.05 s)
    compileall.compile_dir(ROOT / "cron_dryrun", quiet=1)
    results: dict[str, dict[str, list[tuple[float, int, float]]]] = {}
    cpu_results: dict[str, dict[str, list[tuple[float, float]]]] = {}
    failures = 0
    with tempfile.TemporaryDirectory(prefix="bench-reconcile-") as tmp:
        work = Path(tmp)
        args.compare_with = [copy_checkout(o, work / "checkouts") for o in args.compare_with]
        server = start_embedded()
        try:
            for case in cases:
                results[case], cpu_results[case], failed = run_case(
                    server.dsn, work, case, args, readers
                )
                failures += failed
        finally:
            server.stop()
    print(f"rows={args.rows:,} days={args.days} cpus={os.cpu_count()}")
    print(f"{'case':<17} {'run':<10} {'median wall':>11} {'runs':<24} {'peak RSS':>9} {'ratio':>7}")
    for case, runs in results.items():
        floor = runs["csv.reader"]
        for name, taken in runs.items():
            if not taken:
                continue
            walls = sorted(w for w, _, _ in taken)
            rss = sorted(r / 1024 for _, r, _ in taken)
            peak = f"{rss[-1]:>6.0f} MB" if name != "preflight" else f"{'-':>9}"  # not measured
            median = statistics.median(walls)
            ratio = f"{median / statistics.median(w for w, _, _ in floor):.2f}x" if floor else "-"
            print(
                f"{case:<17} {name:<10} {median:>9.2f} s {', '.join(f'{w:.2f}' for w in walls):<24} "
                f"{peak} {ratio:>7}  load {', '.join(f'{lo:.2f}' for _, _, lo in taken)}"
            )
    # CPU seconds move less with the machine's load than wall time does
    print(
        f"{'case':<17} {'run':<10} {'median CPU':>10} {'+ server':>9} {'both':>7} {'vs floor':>8}"
    )
    for case, cpus in cpu_results.items():
        floor_cpu = statistics.median(c for c, _ in cpus.get("csv.reader", [(float("nan"), 0)]))
        for name, taken_cpu in cpus.items():
            own = statistics.median(c for c, _ in taken_cpu)
            server_s = statistics.median(p for _, p in taken_cpu)
            print(
                f"{case:<17} {name:<10} {own:>8.2f} s {server_s:>7.2f} s {own + server_s:>5.2f} s "
                f"{(own + server_s) / floor_cpu:>7.2f}x"
            )
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
