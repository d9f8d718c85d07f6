"""Staging as it really runs, end to end on loopback: the operator's remote run, GO.

The stand-in cron sits behind a stand-in of Vercel's edge (https with a private CA from
trustme, brotli, Deployment Protection); the database is reached through a real PgBouncer
in transaction mode, as a reader that may not export snapshots, and it "wakes" late: the
pooler starts only once the run has said it is waiting for it. Then `cron-dryrun diff`
gives GO through the same pooler.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import trustme
from neon_compute import SleepingCompute
from pgbouncer import start_pgbouncer
from suite_runs import ROOT, clean_env
from test_neon import _reader_refused_snapshots

from cron_dryrun.standin import start_local_stack
from cron_dryrun.target import database as db
from cron_dryrun.target.pg_server import RunningPostgres

SECRET = "staging-like-Secret-3e5f7a9c"
BYPASS = "staging-like-Bypass-6d4b2f0e8a"
WAITING = "waiting for the database to wake ..."


@pytest.mark.slow
def test_a_protected_compressed_tls_target_with_a_late_pooled_database_gives_go(
    pg_server: RunningPostgres, tmp_path: Path, sleeping_neon: SleepingCompute
) -> None:
    ca = trustme.CA()
    pem = tmp_path / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    ca_bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_bundle))
    app_dsn = db.create_app_database(pg_server.dsn)
    reader = _reader_refused_snapshots(app_dsn)
    compute = sleeping_neon  # Neon's proxy, the compute asleep
    pooled = compute.dsn("pooled_reader", db.database_name(app_dsn))
    audit = tmp_path / "audit"
    try:
        with start_local_stack(
            app_dsn,
            secret=SECRET,
            export_dir=tmp_path / "exports",
            compress="br",
            bypass_secret=BYPASS,
            ssl_certfile=pem,
        ) as stack:
            assert stack.cron_url.startswith("https://127.0.0.1:")
            env = clean_env(
                CRON_URL=stack.cron_url,
                CRON_SECRET=SECRET,
                VERCEL_AUTOMATION_BYPASS_SECRET=BYPASS,
                CRON_CA_BUNDLE=str(ca_bundle),
                DATABASE_URL=pooled,
                OPENAI_EXPORT=os.pathsep.join(str(p) for p in stack.export_paths),
                DB_CONNECT_TIMEOUT="120",
            )
            child = subprocess.Popen(
                [sys.executable, "-m", "pytest", "acceptance/", "-m", "dryrun",
                 "-p", "no:cacheprovider", "-q", f"--audit-dir={audit}"],
                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
            lines: list[str] = []
            waiting = threading.Event()

            def read() -> None:
                assert child.stdout is not None
                for line in child.stdout:
                    lines.append(line)
                    if WAITING in line:
                        waiting.set()

            reader_thread = threading.Thread(target=read, daemon=True)
            reader_thread.start()
            try:
                assert waiting.wait(120), "".join(lines)[-3000:]
                # the compute wakes: its pooler answers behind the proxy the run keeps trying
                with start_pgbouncer(pg_server.dsn) as pooler:
                    compute.wake(pooler.port)
                    child.wait(timeout=400)
                    reader_thread.join(30)
                    output = "".join(lines)
                    assert child.returncode == 0, output[-4000:]
                    diff = subprocess.run(
                        [sys.executable, "-m", "cron_dryrun.cli", "diff",
                         "--export", *map(str, stack.export_paths),
                         "--database-url", pooler.dsn_for(reader), f"--audit-dir={audit}",
                         "--no-progress"],
                        capture_output=True, text=True, timeout=120, cwd=ROOT,
                        env=clean_env(),
                    )  # fmt: skip
            finally:
                if child.poll() is None:
                    child.kill()
                    child.wait(10)
    finally:
        db.drop_database(pg_server.dsn, db.database_name(app_dsn))
    gate = json.loads((audit / "gate.json").read_text())
    assert gate["verdict"] == "GO", output[-4000:]
    assert f"cron-dryrun: {WAITING} (up to 120s, --db-connect-timeout" in output
    smoke = next((audit / "cron-dry-run").glob("smoke-*.log")).read_text()
    assert "< content-encoding: br\n" in smoke and "# body: content-encoding br, " in smoke
    assert "> x-vercel-protection-bypass: [REDACTED]" in smoke
    assert diff.returncode == 0, diff.stdout + diff.stderr
    assert diff.stdout.startswith("parity diff: PASS"), diff.stdout
    leaked = [str(p) for p in audit.rglob("*") if p.is_file() and BYPASS.encode() in p.read_bytes()]
    assert leaked == [] and BYPASS not in output and SECRET not in output
