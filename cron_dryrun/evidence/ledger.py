"""The 48-hour dry-run ledger: one JSON line per run, and the rules that say when it is complete.

``assess`` is pure (time comes in as ``now``), so the rules are tested with
freezegun or plain datetimes. The rule, stated once (``DRY_RUN_RULE``: ``gate --help`` and
the README print this text):

- Each green run vouches for the 24 hours before it (the cron's window).
- Consecutive counted green runs are 20 to 28 hours apart (a daily cadence, with 4 hours of
  slack for the scheduler or the operator). A green run less than 20 h after the last
  counted one is an extra trigger: recorded, not counted, not breaking the cadence. A gap
  over 28 h restarts the count.
- The dry run is complete when the counted green runs cover 48 hours: the first and the last
  at least 24 hours apart (two runs 24-28 h apart, or three 20 h apart), since the dry-run
  start (default: the ledger's first counted run for the target), and no red run after the
  first green one is left without a later green run. So "complete" is never printed next to
  a covered span under 48 h.

Also:

- ``manualFallbackWindows > 0`` on two consecutive runs is flagged (contract.md
  section 2: it warrants an ingestion ticket); it does not block completion.
- A corrupt ledger line, or a break in its chain, blocks completion: the ledger is the evidence.
- Only complete runs against a remote target count, each target on its own
  (URLs compared normalised: ``normalise_target``). Local-stack runs, partial
  runs (a collected test did not run) and interrupted runs are recorded and
  never count, neither green nor red. Which lines the suite wrote at all is
  ``evidence.trust``'s to say: ``assess`` is given only those.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from cron_dryrun.errors import CronDryrunError

if TYPE_CHECKING:
    from cron_dryrun.evidence.writer import EvidenceWriter

LEDGER_VERSION = 1
REQUIRED_GREENS = 2
MIN_GAP = timedelta(hours=20)
MAX_GAP = timedelta(hours=28)
LOOKBACK = timedelta(hours=24)
REQUIRED_COVERAGE = timedelta(hours=48)
# The one statement of the rule (module docstring): gate --help and the README say exactly this.
DRY_RUN_RULE = (
    "complete when green runs, consecutive ones 20 to 28 hours apart, cover 48 hours (each "
    "covers the 24 hours before it, so the first and last are at least 24 hours apart) since "
    "the dry-run start, and no red run after the first green one is left without a later "
    "green run; a green run under 20 hours after the last counted one is not counted, and a "
    "gap over 28 hours restarts the count"
)
GREEN = "GO"
RED = "NO-GO"
COMPLETE = "complete"
PARTIAL = "partial"
INTERRUPTED = "interrupted"
COMPLETENESS = (COMPLETE, PARTIAL, INTERRUPTED)
_DEFAULT_PORTS = {"https": 443, "http": 80}


def normalise_target(target: str) -> str:
    """One spelling per cron endpoint: scheme and host lower-cased, no userinfo, default port,
    query, fragment or trailing slash. Anything that is not an http(s) URL is kept as given."""
    text = target.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return text
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return text
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), "", ""))


def is_remote_target(target: str) -> bool:
    """A cron URL (staging or any other deployment), not the local stack."""
    return urlsplit(normalise_target(target)).scheme in _DEFAULT_PORTS


class LedgerError(CronDryrunError, ValueError):
    """The ledger file cannot be trusted as it is; the message names file and line."""


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _parse_time(text: str) -> datetime:
    return _utc(datetime.fromisoformat(text.strip().replace("Z", "+00:00")))


def short_time(value: datetime) -> str:
    """2025-10-08T02:00Z: the precision an operator plans the next trigger with."""
    return _utc(value).strftime("%Y-%m-%dT%H:%MZ")


def iso_z(value: datetime) -> str:
    return _utc(value).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class LedgerEntry:
    """One run of the dry run, as recorded in cron-dry-run/ledger.jsonl."""

    time: datetime
    target: str
    verdict: str  # "GO" or "NO-GO"
    label: str = ""
    telemetry: Mapping[str, Any] = field(default_factory=dict)  # the response's numbers
    windows: Sequence[tuple[str, str]] = ()  # expected windows [start, end), ISO
    artefacts: Mapping[str, str] = field(default_factory=dict)  # name -> path under audit/
    manual_fallback_windows: int | None = None
    failed_checks: Sequence[str] = ()
    completeness: str = COMPLETE  # complete, partial (a collected test did not run), interrupted
    run_id: str = ""  # the run's manifest lists this line's checksum under it

    def __post_init__(self) -> None:
        if self.verdict not in (GREEN, RED):
            raise ValueError(f"verdict must be {GREEN!r} or {RED!r}, got {self.verdict!r}")
        if self.completeness not in COMPLETENESS:
            raise ValueError(
                f"completeness must be one of {', '.join(COMPLETENESS)}, got {self.completeness!r}"
            )
        if self.completeness != COMPLETE and self.verdict == GREEN:
            raise ValueError(f"a {self.completeness} run cannot be GO")
        object.__setattr__(self, "time", _utc(self.time))

    @property
    def green(self) -> bool:
        return self.verdict == GREEN

    @property
    def counts(self) -> bool:
        """Whether this run can count toward promotion: complete and against a remote target."""
        return self.completeness == COMPLETE and is_remote_target(self.target)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": LEDGER_VERSION,
            "time": iso_z(self.time),
            "target": self.target,
            "verdict": self.verdict,
            "label": self.label,
            "telemetry": dict(self.telemetry),
            "windows": [{"start": s, "end": e} for s, e in self.windows],
            "artefacts": dict(self.artefacts),
            "manual_fallback_windows": self.manual_fallback_windows,
            "failed_checks": list(self.failed_checks),
            "completeness": self.completeness,
            **({"run_id": self.run_id} if self.run_id else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LedgerEntry:
        """Raises ValueError (with the field's name) on anything that is not a ledger entry."""
        if not isinstance(data, Mapping):
            raise ValueError("expected a JSON object")
        for key in ("time", "target", "verdict"):
            if not isinstance(data.get(key), str):
                raise ValueError(f"field {key!r} missing or not a string")
        try:
            when = _parse_time(data["time"])
        except ValueError:
            raise ValueError(f"field 'time' is not an ISO time: {data['time']!r}") from None
        mfw = data.get("manual_fallback_windows")
        if mfw is not None and (not isinstance(mfw, int) or isinstance(mfw, bool)):
            raise ValueError(f"field 'manual_fallback_windows' is not an integer: {mfw!r}")
        windows = tuple((str(w["start"]), str(w["end"])) for w in data.get("windows") or ())
        return cls(
            time=when,
            target=data["target"],
            verdict=data["verdict"],
            label=str(data.get("label") or ""),
            telemetry=dict(data.get("telemetry") or {}),
            windows=windows,
            artefacts=dict(data.get("artefacts") or {}),
            manual_fallback_windows=mfw,
            failed_checks=tuple(data.get("failed_checks") or ()),
            completeness=str(data.get("completeness") or COMPLETE),
            run_id=str(data.get("run_id") or ""),
        )


# -- I/O ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerRead:
    entries: tuple[LedgerEntry, ...]
    problems: tuple[str, ...]


def entries_for(entries: Iterable[LedgerEntry], target: str) -> list[LedgerEntry]:
    """One target's entries, in the order given; targets compare as ``normalise_target`` says
    (scheme and host case, default port, trailing slash)."""
    key = normalise_target(target)
    return [e for e in entries if normalise_target(e.target) == key]


def read_ledger(path: Path) -> LedgerRead:
    """Every good line as an entry and every bad one as a problem naming its line; missing file: empty."""
    path = Path(path)
    if not path.exists():
        return LedgerRead((), ())
    entries: list[LedgerEntry] = []
    problems: list[str] = []
    for number, line in enumerate(
        path.read_text(encoding="utf-8", errors="replace").splitlines(), 1
    ):
        if not line.strip():
            continue
        try:
            entries.append(LedgerEntry.from_json(json.loads(line)))
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            problems.append(f"{path} line {number}: corrupt ledger entry ({exc})")
    return LedgerRead(tuple(entries), tuple(problems))


def load_ledger(path: Path) -> list[LedgerEntry]:
    """The entries of ``path`` ([] when it does not exist); raises LedgerError on a corrupt line."""
    read = read_ledger(path)
    if read.problems:
        raise LedgerError("; ".join(read.problems))
    return list(read.entries)


def append_entry(
    writer: EvidenceWriter,
    entry: LedgerEntry,
    relpath: str | None = None,
    *,
    key: str | None = None,
    before_append: Callable[[str, int], object] | None = None,
) -> Path:
    """Append one chained line to cron-dry-run/ledger.jsonl under the writer's lock.

    The line carries ``prev`` (SHA-256 of the line before it) and, with ``key``, its HMAC
    (``evidence.chain``). ``before_append(line, position)`` runs under the same lock before
    the line is written (the run's manifest records the line and the chain head there);
    if it raises, nothing is appended.
    """
    from cron_dryrun.evidence.chain import chained_line, ledger_lines
    from cron_dryrun.evidence.paths import LEDGER_RELPATH
    from cron_dryrun.redaction import redact_json_value

    obj = redact_json_value(entry.to_json(), writer.redactor.redact)

    def append(existing: str) -> str:
        lines = ledger_lines(existing)
        line = chained_line(obj, lines[-1] if lines else None, key)
        if before_append is not None:
            before_append(line, len(lines) + 1)
        if existing and not existing.endswith("\n"):
            existing += "\n"
        return existing + line + "\n"

    return writer.update_locked(relpath or LEDGER_RELPATH, append, redact_all=False)


# -- the rules ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DryRunStatus:
    """Where the 48-hour dry run stands at ``now``."""

    complete: bool
    greens: int  # green runs since the start (counted or not)
    reds: int
    counted: tuple[datetime, ...]  # the green runs that make (or start) the cadence
    dry_run_start: datetime | None
    now: datetime
    target: str | None
    next_due: tuple[datetime, datetime] | None = None
    blocking_red: datetime | None = None
    restarted_after: tuple[datetime, datetime] | None = (
        None  # (last counted, next green) > 28h apart
    )
    manual_fallback_streak: bool = False
    manual_fallback_note: str | None = None
    problems: tuple[str, ...] = ()
    runs: int = 0
    not_counted: int = 0  # this target's partial or interrupted runs: recorded, never counted

    @property
    def local_target(self) -> bool:
        return self.target is not None and not is_remote_target(self.target)

    def describe(self) -> str:
        """One line for the terminal summary and the gate command."""
        if self.local_target:
            return (
                f"not complete: runs on the {self.target} never count toward promotion; only "
                "complete runs against a remote CRON_URL do"
            )
        if self.problems:
            # corrupt lines and breaks in the chain (evidence.trust): the ledger is the evidence
            return (
                f"not complete: the ledger has {len(self.problems)} problem(s): {self.problems[0]}"
            )
        if self.complete:
            first, last = self.counted[0], self.counted[-1]
            covered = _covered(self.counted).total_seconds() / 3600
            return (
                f"complete: {len(self.counted)} green runs, {short_time(first)} and {short_time(last)} "
                f"({_hours(self.counted)}), covering {covered:.0f}h since {short_time(self.dry_run_start or first)}"
            )
        start = short_time(self.dry_run_start) if self.dry_run_start else None
        if self.runs == 0:
            since = f" since {start}" if start else ""
            return f"run 0 of {REQUIRED_GREENS}: no runs recorded{since}; trigger the first run now"
        parts: list[str] = []
        if self.blocking_red is not None:
            parts.append(
                f"not complete: the run at {short_time(self.blocking_red)} was NO-GO and no green run "
                "has followed it"
            )
        short = len(self.counted) >= REQUIRED_GREENS and _covered(self.counted) < REQUIRED_COVERAGE
        if short:
            # rounded down: 47.95 h must never read as the 48 h it falls short of
            hours = math.floor(_covered(self.counted).total_seconds() / 360) / 10
            progress = (
                f"{len(self.counted)} green runs counted ({short_time(self.counted[0])} and "
                f"{short_time(self.counted[-1])}, {_hours(self.counted)}) cover {hours:.1f}h of "
                f"the {REQUIRED_COVERAGE.total_seconds() / 3600:.0f}h"
            )
            if self.next_due is not None:
                lo, hi = self.next_due
                progress += (
                    f"; the next green run, due between {short_time(lo)} and {short_time(hi)}, "
                    "completes it"
                )
            parts.append(progress)
        elif len(self.counted) >= REQUIRED_GREENS:
            parts.append(
                f"{len(self.counted)} green runs counted ({short_time(self.counted[0])} and "
                f"{short_time(self.counted[-1])}); one more green run, at any time, completes it"
            )
        elif not self.counted:
            parts.append(
                f"run 0 of {REQUIRED_GREENS}: no green run yet; the next green run starts the count"
            )
        else:
            n = min(len(self.counted), REQUIRED_GREENS - 1)
            progress = f"run {n} of {REQUIRED_GREENS}"
            if self.restarted_after is not None:
                a, b = self.restarted_after
                progress += (
                    f" (count restarted: {short_time(a)} to {short_time(b)} is more than 28h)"
                )
            if self.next_due is not None:
                lo, hi = self.next_due
                if self.now > hi:
                    progress += (
                        f"; the next run was due by {short_time(hi)} and is overdue: "
                        "the next green run restarts the count"
                    )
                else:
                    progress += f"; next run due between {short_time(lo)} and {short_time(hi)}"
            parts.append(progress)
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        """The ``dry_run`` object of gate.json."""
        return {
            "complete": self.complete,
            "description": self.describe(),
            "greens": self.greens,
            "reds": self.reds,
            "counted": [iso_z(t) for t in self.counted],
            "dry_run_start": iso_z(self.dry_run_start) if self.dry_run_start else None,
            "next_due": [iso_z(t) for t in self.next_due] if self.next_due else None,
            "manual_fallback_streak": self.manual_fallback_streak,
            "manual_fallback_note": self.manual_fallback_note,
            "problems": list(self.problems),
            "target": self.target,
            "not_counted": self.not_counted,
        }


def _covered(counted: Sequence[datetime]) -> timedelta:
    """The span the counted green runs vouch for: each covers the 24 hours before it."""
    return counted[-1] - counted[0] + LOOKBACK


def _hours(times: Sequence[datetime]) -> str:
    gaps = [f"{(b - a).total_seconds() / 3600:.1f}h" for a, b in itertools.pairwise(times)]
    return ", ".join(gaps) + " apart"


def _manual_fallback(runs: Sequence[LedgerEntry]) -> tuple[bool, str | None]:
    for a, b in itertools.pairwise(runs):
        if (a.manual_fallback_windows or 0) > 0 and (b.manual_fallback_windows or 0) > 0:
            return True, (
                f"manualFallbackWindows > 0 on two consecutive runs ({short_time(a.time)}: "
                f"{a.manual_fallback_windows}, {short_time(b.time)}: {b.manual_fallback_windows}): "
                "open an ingestion ticket (the unique-index upsert is not in use)"
            )
    return False, None


def latest_target(entries: Iterable[LedgerEntry]) -> str | None:
    """The latest remote run's target (else the latest run's); None for no runs."""
    listed = sorted(entries, key=lambda e: e.time)
    remote = [e for e in listed if is_remote_target(e.target)]
    return (remote or listed)[-1].target if listed else None


def assess(
    entries: Iterable[LedgerEntry],
    dry_run_start: datetime | None,
    now: datetime,
    *,
    target: str | None = None,
    problems: Sequence[str] = (),
) -> DryRunStatus:
    """Apply the dry-run rules (module docstring) to the ledger at ``now``.

    ``target``: only that target's runs count; None takes the latest run's target.
    """
    now = _utc(now)
    all_entries = sorted(entries, key=lambda e: e.time)
    if target is None:
        target = latest_target(all_entries)
    target = normalise_target(target) if target is not None else None
    mine = [e for e in entries_for(all_entries, target) if e.time <= now] if target else []
    runs = [e for e in mine if e.counts]
    start = _utc(dry_run_start) if dry_run_start else (runs[0].time if runs else None)
    if start is not None:
        runs = [e for e in runs if e.time >= start]

    chain: list[datetime] = []
    completed: tuple[datetime, ...] | None = None
    restarted: tuple[datetime, datetime] | None = None
    blocking_red: datetime | None = None
    for run in runs:
        if not run.green:
            if chain:  # reds before the first green do not matter
                blocking_red = blocking_red or run.time
            continue
        blocking_red = None
        if not chain:
            chain = [run.time]
            continue
        gap = run.time - chain[-1]
        if gap < MIN_GAP:
            continue  # an extra trigger the same day: recorded, not counted
        if gap <= MAX_GAP:
            chain.append(run.time)
        else:
            restarted = (chain[-1], run.time)
            chain = [run.time]
        if (
            completed is None
            and len(chain) >= REQUIRED_GREENS
            and _covered(chain) >= (REQUIRED_COVERAGE)
        ):
            completed = tuple(chain)

    streak, note = _manual_fallback(runs)
    complete = completed is not None and blocking_red is None and not problems
    counted = completed if completed is not None else tuple(chain)
    next_due = None
    if not complete and chain:
        next_due = (chain[-1] + MIN_GAP, chain[-1] + MAX_GAP)
    return DryRunStatus(
        complete=complete,
        greens=sum(1 for r in runs if r.green),
        reds=sum(1 for r in runs if not r.green),
        counted=counted,
        dry_run_start=start,
        now=now,
        target=target,
        next_due=next_due,
        blocking_red=blocking_red,
        restarted_after=restarted if not complete and len(chain) < REQUIRED_GREENS else None,
        manual_fallback_streak=streak,
        manual_fallback_note=note,
        problems=tuple(problems),
        runs=len(runs),
        not_counted=sum(
            1 for e in mine if e.completeness != COMPLETE and (start is None or e.time >= start)
        ),
    )


def targets_in(entries: Iterable[LedgerEntry]) -> dict[str, tuple[int, int]]:
    """normalised target -> (runs recorded, runs that count), in the order first seen."""
    found: dict[str, tuple[int, int]] = {}
    for e in entries:
        key = normalise_target(e.target)
        runs, counting = found.get(key, (0, 0))
        found[key] = (runs + 1, counting + (1 if e.counts else 0))
    return found


def dry_run_start_of(entries: Iterable[LedgerEntry], target: str | None = None) -> datetime | None:
    """Where the dry run's rows begin, for rollback: the UTC midnight that starts the earliest
    window of the target's first recorded run (the cron looks back a day, so its first run
    already wrote yesterday's window). ``target`` None: the latest remote run's target.
    None when the ledger has no run for it: the start is then unknown."""
    listed = sorted(entries, key=lambda e: e.time)
    if target is None:
        remote = [e for e in listed if is_remote_target(e.target)]
        if not remote:
            return None
        target = remote[-1].target
    mine = entries_for(listed, target)
    if not mine:
        return None
    first = mine[0]
    starts = []
    for start, _end in first.windows:
        try:
            starts.append(_parse_time(start))
        except ValueError:
            continue
    earliest = min(starts) if starts else first.time - LOOKBACK
    return earliest.replace(hour=0, minute=0, second=0, microsecond=0)
