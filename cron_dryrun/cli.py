"""The ``cron-dryrun`` command: diff, rollback, gate, standin, verify-evidence.

Each subcommand lives in the module of its capability and exposes
``register(subparsers)``, which adds its parser and sets ``func(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> module holding its register(); imported lazily so `--help` stays fast
SUBCOMMANDS = {
    "diff": "cron_dryrun.diff_command",
    "rollback": "cron_dryrun.rollback",
    "gate": "cron_dryrun.ledger_command",
    "verify-evidence": "cron_dryrun.evidence_command",
    "standin": "cron_dryrun.standin.command",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cron-dryrun",
        description="Daily usage cron dry run: parity diff, rollback, gate status, local stand-in, evidence checks.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for _name, module_name in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # capability not installed in this build
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
