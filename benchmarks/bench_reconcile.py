"""Parity diff at scale: N export rows against N usage_events rows in a real PostgreSQL.

    python benchmarks/bench_reconcile.py --rows 100000
    python benchmarks/bench_reconcile.py --rows 1000000 --rounds 5
    python benchmarks/bench_reconcile.py --rows 10000000 --hourly --readers adbc

Each round runs the command once per database reader (``--readers``, default
``adbc,copy-csv``: the new path and today's, alternately, against the same database), plus
a bare CPython process that only parses the export (``csv.reader`` summing one column),
side by side. The 1-minute load average is printed before every run: two cores shared
with anything else give figures that are not the command's.

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

from cron_dryrun.parity.exports import METRIC_COLUMNS  # noqa: E402
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


def generate(work: Path, rows: int, days: int) -> tuple[Path, Path, dict[str, int]]:
    """The export CSV and the usage_events CSV (for COPY), with injected differences."""
    per_day = rows // days
    con = duckdb.connect()
    base = (
        f"SELECT i, d, k, DATE '{FIRST_DAY.isoformat()}' + CAST(d AS INTEGER) AS day, "
        f"'proj_' || (k % 50) AS project_id, 'key_' || (k // {KEYS_PER_API_KEY}) AS api_key_id, "
        f"'user_' || k AS user_id, "
        f"['gpt-4o-mini-2024-07-18', 'gpt-4o', 'o3-mini'][(k % 3) + 1] AS model, "
        f"'default' AS service_tier, (k % 11 = 0) AS batch "
        f"FROM (SELECT i, i // {per_day} AS d, i % {per_day} AS k FROM range({per_day * days}) t(i))"
    )
    export = work / "export.csv"
    metrics = ", ".join(
        # counts written as floats, as real exports do, on every 5th row
        f"CASE WHEN i % 5 = 0 THEN CAST({expr} AS VARCHAR) || '.0' ELSE CAST({expr} AS VARCHAR) END"
        f" AS {name}"
        for name, expr in METRIC_EXPR.items()
        if name != "num_model_requests"
    )
    con.execute(
        f"COPY (SELECT epoch(day)::BIGINT AS start_time, epoch(day + 1)::BIGINT AS end_time, "
        f"strftime(day, '%Y-%m-%dT%H:%M:%S+00:00') AS start_time_iso, "
        f"strftime(day + 1, '%Y-%m-%dT%H:%M:%S+00:00') AS end_time_iso, project_id, "
        f"{METRIC_EXPR['num_model_requests']} AS num_model_requests, user_id, api_key_id, model, "
        f"CASE WHEN batch THEN 'TRUE' ELSE 'FALSE' END AS batch, service_tier, {metrics} "
        f"FROM ({base}) ORDER BY i) TO '{export}' (HEADER, DELIMITER ',')"
    )
    # injected differences: 3 key-days drift +5 %, 2 key-days are missing in the DB,
    # 2 extra key-days exist only in the DB
    drift = {per_day * (days - 1) + 10, per_day * (days - 1) + 20, per_day * (days - 1) + 30}
    dropped = {per_day * (days - 1) + 40, per_day * (days - 1) + 50}
    db_cols = ", ".join(
        f"CAST(({expr}) * CASE WHEN i IN ({','.join(map(str, drift))}) AND '{name}' = 'output_tokens' "
        f"THEN 1.05 ELSE 1 END AS BIGINT) AS {db}"
        for name, db in METRIC_COLUMNS
        for expr in [METRIC_EXPR[name]]
    )
    usage = work / "usage_events.csv"
    n_keys = per_day // KEYS_PER_API_KEY + 1
    con.execute(
        f"COPY (SELECT (k // {KEYS_PER_API_KEY}) % {n_keys} + 1 AS key_id, model, {db_cols}, "
        f"day AS timestamp, day AS window_start, day + 1 AS window_end, project_id, user_id, "
        f"api_key_id, service_tier, batch FROM ({base}) WHERE i NOT IN ({','.join(map(str, dropped))}) "
        f"UNION ALL SELECT 1, 'gpt-4o', {', '.join('7' for _ in METRIC_COLUMNS)}, day, day, day + 1, "
        f"'proj_extra', 'user_extra_' || d, 'key_extra', 'default', false FROM ({base}) "
        f"WHERE i IN (0, {per_day * (days - 1)})) TO '{usage}' (HEADER false, DELIMITER ',')"
    )
    expected = {"mismatched": len(drift), "missingInDb": len(dropped), "missingInCsv": 2}
    return export, usage, {"keys": n_keys, **expected}


def generate_hourly(work: Path, rows: int, days: int) -> tuple[Path, Path, dict[str, int]]:
    """Hourly export rows (24 per key-day) and the daily usage_events rows that match them."""
    keys = rows // days // 24  # key-days per day
    con = duckdb.connect()
    hourly = (
        f"SELECT i, d, k, h, d * {keys} + k AS j, "
        f"DATE '{FIRST_DAY.isoformat()}' + CAST(d AS INTEGER) AS day, "
        f"'proj_' || (k % 50) AS project_id, 'key_' || (k // {KEYS_PER_API_KEY}) AS api_key_id, "
        f"'user_' || k AS user_id, "
        f"['gpt-4o-mini-2024-07-18', 'gpt-4o', 'o3-mini'][(k % 3) + 1] AS model, "
        f"'default' AS service_tier, (k % 11 = 0) AS batch "
        f"FROM (SELECT i, i // {keys * 24} AS d, (i % {keys * 24}) // 24 AS k, i % 24 AS h "
        f"FROM range({keys * 24 * days}) t(i))"
    )
    export = work / "export.csv"
    metrics = ", ".join(
        f"CASE WHEN i % 5 = 0 THEN CAST({expr} AS VARCHAR) || '.0' ELSE CAST({expr} AS VARCHAR) END"
        f" AS {name}"
        for name, expr in METRIC_EXPR.items()
        if name != "num_model_requests"
    )
    con.execute(
        f"COPY (SELECT epoch(day + to_hours(h))::BIGINT AS start_time, "
        f"epoch(day + to_hours(h + 1))::BIGINT AS end_time, "
        f"strftime(day + to_hours(h), '%Y-%m-%dT%H:%M:%S+00:00') AS start_time_iso, "
        f"strftime(day + to_hours(h + 1), '%Y-%m-%dT%H:%M:%S+00:00') AS end_time_iso, project_id, "
        f"{METRIC_EXPR['num_model_requests']} AS num_model_requests, user_id, api_key_id, model, "
        f"CASE WHEN batch THEN 'TRUE' ELSE 'FALSE' END AS batch, service_tier, {metrics} "
        f"FROM ({hourly}) ORDER BY i) TO '{export}' (HEADER, DELIMITER ',')"
    )
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


def measured(cmd: list[str], out: Path) -> dict:
    """``cmd`` spawned by the trampoline: wall, peak RSS (KiB), CPU seconds, exit status."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CRON_DRYRUN_DB_READER", None)  # the reader is given on the command line
    proc = subprocess.run(
        [sys.executable, "-c", TRAMPOLINE, str(out), *cmd],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    usage = json.loads(out.read_text())
    if usage["exit"] not in (0, 1) and proc.stderr.strip():  # 1: the diff found differences
        print(proc.stderr[-2000:], file=sys.stderr)
    return usage


def run_diff(
    export: Path, dsn: str, days: int, output: Path, reader: str
) -> tuple[float, int, int, dict]:
    """The command as an operator runs it; wall seconds, peak RSS (KiB), exit status, report."""
    last = FIRST_DAY + timedelta(days=days - 1)
    cmd = [
        sys.executable, "-m", "cron_dryrun.cli", "diff", "--export", str(export),
        "--database-url", dsn, "--from", FIRST_DAY.isoformat(), "--to", last.isoformat(),
        "--output", str(output), "--db-reader", reader, "--no-progress",
    ]  # fmt: skip
    usage = measured(cmd, output.with_name("rusage.json"))
    report = json.loads(output.read_text()) if output.exists() else {}
    return usage["wall"], usage["maxrss_kib"], usage["exit"], report


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="export rows")
    parser.add_argument("--days", type=int, default=10, help="UTC days the rows are spread over")
    parser.add_argument("--hourly", action="store_true", help="hourly export buckets")
    parser.add_argument("--rounds", type=int, default=1, help="rounds (each: every reader)")
    parser.add_argument(
        "--readers", default="adbc,copy-csv", help="database readers, alternated in each round"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the csv.reader floor")
    args = parser.parse_args()
    readers = [r.strip() for r in args.readers.split(",") if r.strip()]

    # An installed command runs from bytecode; this machine sets PYTHONDONTWRITEBYTECODE=1, so
    # without this every timed run would compile the package from source first (~0.05 s)
    compileall.compile_dir(ROOT / "cron_dryrun", quiet=1)
    runs: dict[str, list[tuple[float, int, float]]] = {r: [] for r in [*readers, "csv.reader"]}
    failures = 0
    with tempfile.TemporaryDirectory(prefix="bench-reconcile-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        server = start_embedded()
        try:
            dsn = create_app_database(server.dsn)
            t_db = time.perf_counter() - t0
            make = generate_hourly if args.hourly else generate
            export, usage, expected = make(work, args.rows, args.days)
            t_gen = time.perf_counter() - t0 - t_db
            load(dsn, usage, expected["keys"])
            usage.unlink()
            t_load = time.perf_counter() - t0 - t_db - t_gen
            print(
                f"setup: {time.perf_counter() - t0:.1f} s (PostgreSQL start + schema "
                f"{t_db:.1f} s, generate {t_gen:.1f} s, COPY + VACUUM ANALYZE "
                f"+ CHECKPOINT {t_load:.1f} s); export {export.stat().st_size / 1e6:.0f} MB "
                f"({'hourly' if args.hourly else 'daily'} buckets)",
                flush=True,
            )
            for n in range(1, args.rounds + 1):
                for reader in readers:
                    load_before = load_average()
                    output = work / f"report-{n}-{reader}.json"
                    wall, rss_kib, status, report = run_diff(export, dsn, args.days, output, reader)
                    counts = report.get("counts", {})
                    found = {
                        k: counts.get(k) for k in ("mismatched", "missingInDb", "missingInCsv")
                    }
                    wanted = {k: expected[k] for k in found}
                    ok = found == wanted and status == 1 and report.get("dbReader") == reader
                    failures += not ok
                    runs[reader].append((wall, rss_kib, load_before))
                    print(
                        f"round {n} {reader:<9} load {load_before:4.2f}  wall {wall:6.2f} s "
                        f"(inside the diff {report.get('elapsedSeconds')} s)  "
                        f"peak RSS {rss_kib / 1024:5.0f} MB  exit {status}  "
                        f"dbReader {report.get('dbReader')}  found {found}"
                        + ("" if ok else f"  UNEXPECTED (wanted {wanted}, exit 1)"),
                        flush=True,
                    )
                if not args.no_baseline:
                    load_before = load_average()
                    base = measured(
                        [sys.executable, "-c", BASELINE, str(export)], work / "baseline.json"
                    )
                    runs["csv.reader"].append((base["wall"], base["maxrss_kib"], load_before))
                    print(
                        f"round {n} csv.reader load {load_before:4.2f}  wall {base['wall']:6.2f} s"
                        f"  peak RSS {base['maxrss_kib'] / 1024:5.0f} MB",
                        flush=True,
                    )
        finally:
            server.stop()
    print(f"rows={args.rows:,} days={args.days} hourly={args.hourly} cpus={os.cpu_count()}")
    floor = runs["csv.reader"]
    for name, taken in runs.items():
        if not taken:
            continue
        walls = sorted(w for w, _, _ in taken)
        rss = sorted(r / 1024 for _, r, _ in taken)
        median = statistics.median(walls)
        ratio = (
            f", {median / statistics.median(w for w, _, _ in floor):.2f}x csv.reader"
            if floor
            else ""
        )
        print(
            f"{name:<10} median wall {median:.2f} s (runs {', '.join(f'{w:.2f}' for w in walls)}); "
            f"peak RSS median {statistics.median(rss):.0f} MB (max {rss[-1]:.0f}){ratio}; "
            f"load {', '.join(f'{lo:.2f}' for _, _, lo in taken)}"
        )
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
