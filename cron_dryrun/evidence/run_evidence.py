"""One run's evidence end to end: smoke log, diff JSON, summary entry, notes, manifest."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from cron_dryrun.evidence.manifests import write_manifest
from cron_dryrun.evidence.notes import update_notes
from cron_dryrun.evidence.paths import SUMMARY_RELPATH, diff_relpath, smoke_log_relpath, stamp
from cron_dryrun.evidence.summary import RunFacts, add_summary_entry
from cron_dryrun.evidence.transcripts import format_transcripts
from cron_dryrun.evidence.writer import EvidenceWriter, dump_json

if TYPE_CHECKING:
    from cron_dryrun.target.client import Transcript


@dataclass(frozen=True)
class RunEvidence:
    """Where one run's evidence went, relative to the audit folder."""

    facts: RunFacts
    smoke_log: str | None
    diff_report: str | None
    summary: str
    notes: str
    manifest: str | None
    written: tuple[str, ...] = field(default=())


def write_run_evidence(
    writer: EvidenceWriter,
    facts: RunFacts,
    transcripts: Sequence[Transcript],
    *,
    diff: Any | None = None,
    extra_artefacts: Iterable[str | Path] = (),
    run_id: str | None = None,
) -> RunEvidence:
    """Smoke log, diff JSON, summary entry, notes, manifest: in that order, each on its own.

    ``facts.smoke_log``/``diff_report`` are filled with the paths actually
    written (a suffix when a run in the same second came first). Write the
    dated HTML report before calling and pass it in ``extra_artefacts`` (and
    ``facts.report``) to have it checksummed. gate.json and the ledger line
    are separate calls: ``writer.write_json(GATE_RELPATH, ...)``,
    ``ledger.append_entry(writer, ...)``.
    """
    smoke = None
    if transcripts:
        smoke = writer.relpath(
            writer.write_new(smoke_log_relpath(facts.run_at), format_transcripts(transcripts))
        )
        facts = replace(facts, smoke_log=smoke)
    diff_rel = facts.diff_report
    if diff is not None:
        diff_rel = writer.relpath(writer.write_new(diff_relpath(facts.run_at), dump_json(diff)))
        facts = replace(facts, diff_report=diff_rel)
    add_summary_entry(writer, facts)
    notes = writer.relpath(update_notes(writer, facts))
    own = [p for p in (smoke, diff_rel if diff is not None else None) if p]
    own.extend(writer.relpath(p) for p in extra_artefacts)
    manifest = None
    if own:
        rid = run_id or (
            PurePosixPath(smoke).stem.removeprefix("smoke-") if smoke else stamp(facts.run_at)
        )
        manifest = writer.relpath(write_manifest(writer, rid, own))
    return RunEvidence(
        facts=facts,
        smoke_log=smoke,
        diff_report=diff_rel,
        summary=SUMMARY_RELPATH,
        notes=notes,
        manifest=manifest,
        written=tuple(p for p in (smoke, diff_rel, SUMMARY_RELPATH, notes, manifest) if p),
    )
