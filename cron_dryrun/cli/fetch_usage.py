"""``cron-dryrun fetch-usage``: the OpenAI usage export, fetched from the usage API.

    OPENAI_ADMIN_KEY=... cron-dryrun fetch-usage --out exports/ --from 2025-10-07 --to 2025-10-08

Exit status: 0 fetched; 1 the API refused or failed (the message names the organisation);
2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from cron_dryrun.cli.options import utc_date
from cron_dryrun.config.settings import (
    DEFAULT_OPENAI_BASE_URL,
    admin_keys_from_env,
    base_url_problem,
    is_loopback_url,
)
from cron_dryrun.evidence import EvidenceWriter, Redactor
from cron_dryrun.session.usage_fetch import (
    PAGE_LIMIT,
    UsageFetchError,
    UsageQuery,
    describe,
    fetch_usage,
    write_pages,
)

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


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
    env = os.environ if env is None else env
    keys = admin_keys_from_env(env)
    redact = Redactor(keys).redact
    if not keys:
        print(
            "fetch-usage: no admin key: set OPENAI_ADMIN_KEY (or OPENAI_ADMIN_KEYS, comma-separated, "
            "one per organisation) in the environment; keys are never taken as arguments",
            file=sys.stderr,
        )
        return EXIT_USAGE
    base_url = (
        args.openai_base_url or env.get("OPENAI_BASE_URL", "").strip() or DEFAULT_OPENAI_BASE_URL
    )
    problem = base_url_problem(base_url, is_loopback_url(base_url))
    if problem:
        print(f"fetch-usage: --openai-base-url / OPENAI_BASE_URL: {problem}", file=sys.stderr)
        return EXIT_USAGE
    today = datetime.now(UTC).date()
    first: date = args.first_day or today - timedelta(days=1)
    last: date = args.last_day or max(today, first)
    if last < first:
        print(f"fetch-usage: --to {last} is before --from {first}", file=sys.stderr)
        return EXIT_USAGE
    query = UsageQuery.for_days(first, last, args.bucket_width)
    writer = EvidenceWriter(Path(args.out), Redactor(keys))
    try:
        orgs = fetch_usage(keys, base_url, query)
        written = write_pages(writer, "", orgs)
    except UsageFetchError as exc:
        print(redact(str(exc)), file=sys.stderr)
        return EXIT_FAIL
    print(f"fetch-usage: {base_url}, {first} to {last} ({args.bucket_width} buckets)")
    for org, folder in zip(orgs, written.folders, strict=True):
        print(describe(org, Path(args.out) / folder))
    exports = " ".join(f"--export {Path(args.out) / f}" for f in written.folders)
    print(f"next: cron-dryrun diff {exports} --from {first} --to {last}")
    return EXIT_OK
