"""Glue between the session's state and the evidence library: what each run writes where."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cron_dryrun.plugin import DryRunState


def write_all(state: DryRunState, gate_document: Callable[[DryRunState], dict[str, Any]]) -> None:
    audit = state.settings.audit_dir
    audit.mkdir(parents=True, exist_ok=True)
    path = audit / "gate.json"
    path.write_text(json.dumps(gate_document(state), indent=2, sort_keys=True))
    state.artefacts["gate"] = path


def finish_html(state: DryRunState) -> None:
    return None
