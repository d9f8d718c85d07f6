"""Parity diff at scale: N export rows against N usage_events rows in a real PostgreSQL.

    python benchmarks/bench_reconcile.py --rows 100000
    python benchmarks/bench_reconcile.py --rows 1000000

Setup (untimed, but reported): start an embedded PostgreSQL, create the app's tables,
generate a dashboard-style export CSV and matching usage_events rows with DuckDB
(daily buckets, ``--days`` days x N/days keys), inject a few differences, and load the
rows with COPY, then VACUUM (ANALYZE) and CHECKPOINT so no background work of the load
overlaps the timing. Timed: ``cron-dryrun diff`` as a child process, exactly as an operator
runs it; its wall seconds and peak RSS (wait4's rusage, taken by a small trampoline
process so the benchmark's own memory is not inherited) are printed.
"""

from __future__ import annotations

import argparse
import json
import os
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

from cron_dryrun.database import create_app_database, start_embedded  # noqa: E402
from cron_dryrun.exports import METRIC_COLUMNS  # noqa: E402

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


def run_diff(export: Path, dsn: str, days: int, output: Path) -> tuple[float, int, int, dict]:
    """The command as an operator runs it; wall seconds, peak RSS (KiB), exit status, report."""
    last = FIRST_DAY + timedelta(days=days - 1)
    cmd = [
        sys.executable, "-m", "cron_dryrun.cli", "diff", "--export", str(export),
        "--database-url", dsn, "--from", FIRST_DAY.isoformat(), "--to", last.isoformat(),
        "--output", str(output),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    measured = output.with_name("rusage.json")
    proc = subprocess.run(
        [sys.executable, "-c", TRAMPOLINE, str(measured), *cmd],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.stderr.strip():
        print(proc.stderr, file=sys.stderr)
    print(proc.stdout)
    usage = json.loads(measured.read_text())
    report = json.loads(output.read_text()) if output.exists() else {}
    return usage["wall"], usage["maxrss_kib"], usage["exit"], report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="export rows = usage_events rows")
    parser.add_argument("--days", type=int, default=10, help="UTC days the rows are spread over")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-reconcile-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        server = start_embedded()
        try:
            dsn = create_app_database(server.dsn)
            t_db = time.perf_counter() - t0
            export, usage, expected = generate(work, args.rows, args.days)
            t_gen = time.perf_counter() - t0 - t_db
            load(dsn, usage, expected["keys"])
            t_load = time.perf_counter() - t0 - t_db - t_gen
            print(
                f"setup: {t0 and time.perf_counter() - t0:.1f} s (PostgreSQL start + schema "
                f"{t_db:.1f} s, generate {t_gen:.1f} s, COPY {args.rows:,} rows + VACUUM ANALYZE "
                f"+ CHECKPOINT {t_load:.1f} s); "
                f"export {export.stat().st_size / 1e6:.0f} MB"
            )
            wall, rss_kib, status, report = run_diff(export, dsn, args.days, work / "report.json")
        finally:
            server.stop()
    counts = report.get("counts", {})
    found = {k: counts.get(k) for k in ("mismatched", "missingInDb", "missingInCsv")}
    expected_found = {k: expected[k] for k in found}
    print(
        f"rows={args.rows:,} days={args.days} cpus={os.cpu_count()} "
        f"wall={wall:.2f} s (inside the diff {report.get('elapsedSeconds')} s) "
        f"peak_rss={rss_kib / 1024:.0f} MB exit={status} "
        f"verdict={report.get('verdict')} found={found}"
    )
    if found != expected_found or status != 1:
        print(f"UNEXPECTED: wanted {expected_found} and exit 1", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
