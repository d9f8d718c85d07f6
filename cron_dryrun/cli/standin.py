"""``cron-dryrun standin``: serve the local stack for manual use until Ctrl-C.

Provisions a fresh app database (embedded PostgreSQL, or a new database on the
server given by ``--database-url``), starts the stand-in OpenAI API and cron on
loopback, and prints what to paste to run the suite against them. Everything it
started is stopped, and the database it created dropped, on the way out.
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import shlex
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, TextIO

from cron_dryrun.cli.options import option
from cron_dryrun.config.options import FAULTS
from cron_dryrun.errors import ExitCode
from cron_dryrun.standin.edge import COMPRESSIONS
from cron_dryrun.target import database as db
from cron_dryrun.target import embedded


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "standin",
        help="serve the local stack (stand-in cron + OpenAI usage API + PostgreSQL) on loopback",
        description=(
            "Serve the stand-in cron and OpenAI usage API on 127.0.0.1, backed by a fresh PostgreSQL "
            "database seeded with users, provider keys and history. Prints the cron URL, secret, DSN "
            "and the pytest command to run the dry run against it. Stops on Ctrl-C."
        ),
    )
    parser.add_argument(
        "--fault",
        default="none",
        choices=FAULTS,
        metavar="NAME",
        help=f"inject one fault: {', '.join(FAULTS)}",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="a PostgreSQL server to create the stand-in's fresh database on (dropped at exit); "
        "default: an embedded PostgreSQL. DATABASE_URL is deliberately not read: it may be staging.",
    )
    parser.add_argument(
        "--export-dir",
        type=Path,
        default=None,
        help="where to write the OpenAI export CSVs (default: a temp folder)",
    )
    parser.add_argument(
        "--seed", type=int, default=7, help="seed of the usage truth and keys (default 7)"
    )
    parser.add_argument(
        "--slow-delay",
        type=float,
        default=330.0,
        help="seconds the `slow` fault waits before answering",
    )
    parser.add_argument(
        "--compress",
        default="none",
        choices=COMPRESSIONS,
        help="compress answers as Vercel's CDN does, when the request's Accept-Encoding allows it",
    )
    parser.add_argument(
        "--protection",
        action="store_true",
        help="behave like Vercel Deployment Protection: requests without x-vercel-protection-bypass "
        "get the edge's 401 HTML page (secret: VERCEL_AUTOMATION_BYPASS_SECRET, else a random one)",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="start, print, stop at once (for tests and smoke checks)",
    )
    parser.set_defaults(func=run)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def paste_line(
    cron_url: str, secret: str, dsn: str, export_dir: Path, bypass: str | None = None
) -> str:
    env = f"CRON_URL={shlex.quote(cron_url)} CRON_SECRET={shlex.quote(secret)} DATABASE_URL={shlex.quote(dsn)}"
    if bypass:
        env += f" VERCEL_AUTOMATION_BYPASS_SECRET={shlex.quote(bypass)}"
    return f"{env} pytest acceptance/ -m dryrun --openai-export {shlex.quote(str(export_dir))}"


def run(
    args: argparse.Namespace, out: TextIO | None = None, stop: threading.Event | None = None
) -> int:
    """Serve until Ctrl-C (or ``stop`` is set, or at once with --once); 0 on a clean stop."""
    out = out or sys.stdout
    from cron_dryrun.standin import start_local_stack

    with contextlib.ExitStack() as stack:
        if args.database_url:
            server_dsn = args.database_url
            backend = "url"
        else:
            running = embedded.start_embedded()
            stack.callback(running.stop)
            server_dsn, backend = running.dsn, running.backend
        dsn = db.create_app_database(server_dsn)
        stack.callback(db.drop_database, server_dsn, db.database_name(dsn))
        export_dir = args.export_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="cron-dryrun-standin-"))
        )
        bypass = None
        if args.protection:
            bypass = option("vercel_bypass_secret", None) or secrets.token_urlsafe(24)
        local = stack.enter_context(
            start_local_stack(
                dsn,
                secret=option("cron_secret", None),
                fault=args.fault,
                export_dir=export_dir,
                seed=args.seed,
                slow_delay_s=args.slow_delay,
                compress=args.compress,
                bypass_secret=bypass,
            )
        )
        print(f"cron URL:     {local.cron_url}", file=out)
        print(f"CRON_SECRET:  {local.secret}", file=out)
        print(f"DATABASE_URL: {dsn}   ({backend})", file=out)
        print(f"OpenAI API:   {local.openai_url}", file=out)
        print(f"exports:      {', '.join(str(p) for p in local.export_paths)}", file=out)
        print(f"fault:        {local.fault}", file=out)
        print(f"compression:  {args.compress} (when Accept-Encoding allows it)", file=out)
        if bypass:
            print(
                f"VERCEL_AUTOMATION_BYPASS_SECRET: {bypass}   (Deployment Protection on)", file=out
            )
        print(
            "\nRun the dry run against it:\n  "
            + paste_line(local.cron_url, local.secret, dsn, export_dir, bypass),
            file=out,
        )
        if args.once:
            return ExitCode.OK
        if threading.current_thread() is threading.main_thread():
            stack.callback(signal.signal, signal.SIGTERM, signal.getsignal(signal.SIGTERM))
            signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops as cleanly as Ctrl-C
        waiter = stop or threading.Event()
        try:
            # inside the try: a signal that lands as soon as this line is out (a test reacts
            # to it at once) is a clean stop too, not an escaped KeyboardInterrupt (exit 130)
            print("\nServing; Ctrl-C stops and removes everything.", file=out, flush=True)
            while not waiter.wait(3600):  # woken by Ctrl-C (KeyboardInterrupt) or `stop`
                pass
        except KeyboardInterrupt:
            print("stopping", file=out)
    return ExitCode.OK
