"""``cron-dryrun fetch-usage``: the OpenAI usage export, fetched from the usage API.

    OPENAI_ADMIN_KEY=... cron-dryrun fetch-usage --out exports/ --from 2025-10-07 --to 2025-10-08

Exit status: 0 fetched; 1 the API refused or failed (the message names the organisation);
2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from cron_dryrun.cli.options import environment, option, utc_date
from cron_dryrun.config.settings import DEFAULT_OPENAI_BASE_URL, admin_keys_from_env
from cron_dryrun.errors import ExitCode, SettingsError
from cron_dryrun.evidence import EvidenceWriter, Redactor
from cron_dryrun.session.usage_fetch import (
    PAGE_LIMIT,
    UsageFetchError,
    UsageQuery,
    describe,
    fetch_usage,
    write_pages,
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "fetch-usage",
        help="fetch the OpenAI usage (admin API) as export pages, one folder per organisation",
        description=(
            "Fetch /v1/organization/usage/completions (1d buckets, grouped by project, user, API "
            "key, model, batch and service tier) for each admin key in OPENAI_ADMIN_KEYS (or "
            "OPENAI_ADMIN_KEY), following every page, and write the pages as JSON under "
            "OUT/org-<n>/ with a .sha256 beside each: the export the parity diff reads."
        ),
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the pages")
    parser.add_argument(
        "--from", dest="first_day", type=utc_date, help="first UTC day (default: yesterday)"
    )
    parser.add_argument(
        "--to", dest="last_day", type=utc_date, help="last UTC day (default: today)"
    )
    parser.add_argument(
        "--bucket-width", choices=sorted(PAGE_LIMIT), default="1d", help="bucket width (default 1d)"
    )
    parser.add_argument(
        "--openai-base-url",
        default=None,
        help=f"the API's base URL [OPENAI_BASE_URL] (default {DEFAULT_OPENAI_BASE_URL}); e.g. the stand-in's",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> int:
    keys = admin_keys_from_env(environment(env))
    redact = Redactor(keys).redact
    if not keys:
        raise SettingsError(
            "no admin key: set OPENAI_ADMIN_KEY (or OPENAI_ADMIN_KEYS, comma-separated, "
            "one per organisation) in the environment; keys are never taken as arguments"
        )
    # the settings' row: checked (https, no credentials) and normalised (a trailing /v1)
    base_url = option("openai_base_url", args.openai_base_url, env) or DEFAULT_OPENAI_BASE_URL
    today = datetime.now(UTC).date()
    first: date = args.first_day or today - timedelta(days=1)
    last: date = args.last_day or max(today, first)
    if last < first:
        raise SettingsError(f"--to {last} is before --from {first}")
    query = UsageQuery.for_days(first, last, args.bucket_width)
    writer = EvidenceWriter(Path(args.out), Redactor(keys))
    try:
        orgs = fetch_usage(keys, base_url, query)
        written = write_pages(writer, "", orgs)
    except UsageFetchError as exc:
        print(redact(str(exc)), file=sys.stderr)
        return ExitCode.FAIL
    print(f"fetch-usage: {base_url}, {first} to {last} ({args.bucket_width} buckets)")
    for org, folder in zip(orgs, written.folders, strict=True):
        print(describe(org, Path(args.out) / folder))
    exports = " ".join(f"--export {Path(args.out) / f}" for f in written.folders)
    print(f"next: cron-dryrun diff {exports} --from {first} --to {last}")
    return ExitCode.OK
