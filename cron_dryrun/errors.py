"""The package's one error base and the command line's exit codes (the bottom layer: imports
nothing of the package).

Every exception the package raises on purpose derives from ``CronDryrunError``, keeping the
builtin it was (``ValueError``, ``RuntimeError``...) as a second base, so ``except ValueError``
still catches what it caught. ``cron-dryrun``'s ``main`` catches ``CronDryrunError`` once,
prints its message on stderr and exits with its ``exit_code``.
"""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar


class ExitCode(IntEnum):
    """``cron-dryrun``'s exit status, as the README documents it for every command."""

    OK = 0  # done: parity holds, the ledger is complete, the rows were deleted, ...
    FAIL = 1  # the answer is no: parity fails, refused, not confirmed, a database that never woke
    USAGE = 2  # a bad option or configuration: nothing was done
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as a shell reports it)


class CronDryrunError(Exception):
    """Base of the package's exceptions; ``exit_code`` is what ``cron-dryrun`` exits with."""

    exit_code: ClassVar[ExitCode] = ExitCode.FAIL


class SettingsError(CronDryrunError, ValueError):
    """A bad option value (the run's settings or a command's option): the message names the
    option, its variable and the form wanted. The one "bad option" type."""

    exit_code: ClassVar[ExitCode] = ExitCode.USAGE
