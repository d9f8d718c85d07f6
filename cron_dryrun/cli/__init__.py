"""The ``cron-dryrun`` command: diff, rollback, gate, archive, fetch-usage, standin, verify-evidence.

One module per subcommand in this package (``cli/diff.py``, ``cli/gate.py``...), each with
``register(subparsers)``, which adds its parser and sets ``func(args) -> int``; the
capability itself lives in the package of its layer (parity, evidence, standin...).
A command returns an ``ExitCode`` or raises a ``CronDryrunError``: ``main`` says its message
on stderr, once, and exits with its ``exit_code`` (a bad option: 2).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from cron_dryrun import __version__
from cron_dryrun.errors import CronDryrunError, ExitCode

# subcommand -> (module holding its register(), one-line help). Only the chosen subcommand's
# module is imported, so `cron-dryrun diff` does not pay for the stand-in's imports.
SUBCOMMANDS = {
    "diff": ("cron_dryrun.cli.diff", "compare the OpenAI export with usage_events (parity)"),
    "rollback": (
        "cron_dryrun.cli.rollback",
        "delete the dry run's rows, after confirmation, logged",
    ),
    "gate": ("cron_dryrun.cli.gate", "where the 48-hour dry run stands (the ledger)"),
    "verify-evidence": (
        "cron_dryrun.cli.verify_evidence",
        "check the audit folder's SHA-256 manifests",
    ),
    "archive": (
        "cron_dryrun.cli.archive",
        "archive the complete dry run's artefacts and note it in the plan",
    ),
    "fetch-usage": (
        "cron_dryrun.cli.fetch_usage",
        "fetch the OpenAI usage from the admin API as export pages",
    ),
    "standin": (
        "cron_dryrun.cli.standin",
        "serve the local stack (stand-in cron + OpenAI API)",
    ),
}
# how each command's messages begin on stderr (the commands' own wording, kept as it was)
SAID_AS = {"archive": "archive", "fetch-usage": "fetch-usage", "verify-evidence": "verify-evidence"}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or with ``only`` the real parser of that subcommand alone."""
    parser = argparse.ArgumentParser(
        prog="cron-dryrun",
        description=(
            "Daily usage cron dry run: parity diff, rollback, gate status, usage fetch, "
            "archive, local stand-in, evidence checks."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, summary) in SUBCOMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=summary)  # listed, never parsed in this run
            continue
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=chosen if chosen in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except CronDryrunError as exc:
        said_as = SAID_AS.get(args.command, f"cron-dryrun {args.command}")
        print(f"{said_as}: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
