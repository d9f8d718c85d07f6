"""The stand-in's pure parts: usage truth, export rows, API pages, auth table, seed, faults."""

from __future__ import annotations

import base64
import csv
import hmac
import io
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time

from cron_dryrun.config import settings
from cron_dryrun.standin import cron_app
from cron_dryrun.standin.cron_app import authorize, iso_ms
from cron_dryrun.standin.export import EXPORT_HEADER, export_rows, render_export
from cron_dryrun.standin.faults import FAULTS, get_fault
from cron_dryrun.standin.openai_api import (
    BadRequest,
    completions_page,
    decode_cursor,
    encode_cursor,
)
from cron_dryrun.standin.seed import decode_key, encode_key, seed_plan
from cron_dryrun.standin.usage_rows import EventRow, cost_estimate, price
from cron_dryrun.standin.usage_truth import (
    DATED_MODEL,
    SERVICE_TIERS,
    Usage,
    UsageOrg,
    epoch,
    group_usage,
)
from cron_dryrun.target.client import retry_after_seconds

DAY0 = datetime(2025, 10, 7, tzinfo=UTC)
ORG = UsageOrg.generate(7)


def _total(org: UsageOrg, start: datetime, end: datetime, width: int) -> Usage:
    total = Usage()
    for bucket in org.buckets(epoch(start), epoch(end), width):
        for usage in bucket.usage.values():
            total = total + usage
    return total


# -- usage truth ----------------------------------------------------------------------------------


def test_truth_is_deterministic_and_seed_dependent() -> None:
    assert UsageOrg.generate(7) == ORG
    assert UsageOrg.generate(8).streams != ORG.streams
    day = ORG.total(epoch(DAY0), epoch(DAY0 + timedelta(days=1)))
    assert day == UsageOrg.generate(7).total(epoch(DAY0), epoch(DAY0 + timedelta(days=1)))


def test_truth_has_the_variety_the_parity_check_needs() -> None:
    streams = ORG.streams
    assert len(streams) == len(set(streams)) == 24
    assert len({s.project_id for s in streams}) > 1
    assert len({s.user_id for s in streams}) > 1
    assert len({s.api_key_id for s in streams}) > 1
    assert len({s.model for s in streams}) > 1
    assert {True, False} <= {s.batch for s in streams}
    assert {"default", "flex"} <= {s.service_tier for s in streams} <= set(SERVICE_TIERS)
    assert all(not s.model.endswith(("-2024", "-2025")) and s.model != DATED_MODEL for s in streams)
    day = ORG.total(epoch(DAY0), epoch(DAY0 + timedelta(days=1)))
    assert 10 <= len(day) <= 40  # a few dozen rows at 1d
    assert any(u.input_cached_tokens for u in day.values())


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (DAY0, DAY0 + timedelta(days=2)),
        (DAY0 + timedelta(hours=5, minutes=17), DAY0 + timedelta(days=1, hours=2, minutes=3)),
    ],
)
def test_every_bucket_width_sums_to_the_same_totals(start: datetime, end: datetime) -> None:
    per_day = _total(ORG, start, end, 86400)
    assert per_day == _total(ORG, start, end, 3600) == _total(ORG, start, end, 60)
    assert per_day.num_model_requests > 0


def test_dated_model_renames_only_the_model() -> None:
    dated = ORG.with_dated_model()
    assert DATED_MODEL in {s.model for s in dated.streams}
    assert "gpt-4o-mini" not in {s.model for s in dated.streams}
    span = epoch(DAY0), epoch(DAY0 + timedelta(days=1))
    assert sum(u.output_tokens for u in dated.total(*span).values()) == sum(
        u.output_tokens for u in ORG.total(*span).values()
    )


def test_group_usage_leaves_ungrouped_fields_null() -> None:
    usage = ORG.total(epoch(DAY0), epoch(DAY0 + timedelta(days=1)))
    by_model = group_usage(usage, ["model"])
    assert {ids["model"] for ids, _ in by_model} == {s.model for s in usage}
    assert all(ids["project_id"] is None and ids["batch"] is None for ids, _ in by_model)
    with pytest.raises(ValueError, match="unknown group_by"):
        group_usage(usage, ["colour"])


# -- dashboard export -----------------------------------------------------------------------------


def test_export_has_the_dashboard_shape() -> None:
    text = render_export(export_rows(ORG, DAY0, DAY0 + timedelta(days=1), "1d"))
    reader = csv.DictReader(io.StringIO(text))
    assert tuple(reader.fieldnames or ()) == EXPORT_HEADER
    rows = list(reader)
    assert rows and all(r["start_time_iso"] == "2025-10-07T00:00:00+00:00" for r in rows)
    assert all(r["end_time_iso"] == "2025-10-08T00:00:00+00:00" for r in rows)
    assert {r["batch"] for r in rows} == {"TRUE", "FALSE"}
    assert all(
        r["input_tokens"].endswith(".0") and r["num_model_requests"].endswith(".0") for r in rows
    )
    assert all(r["start_time"] == str(epoch(DAY0)) for r in rows)


def test_empty_bucket_is_one_row_with_empty_id_and_metric_cells() -> None:
    rows = export_rows(ORG, DAY0, DAY0 + timedelta(hours=1), "1m")
    per_bucket = Counter(r["start_time"] for r in rows)
    assert len(per_bucket) == 60
    empty = [r for r in rows if r["model"] == ""]
    assert empty, "an hour at 1m always has empty minutes"
    for row in empty:
        assert per_bucket[row["start_time"]] == 1
        assert all(row[c] == "" for c in EXPORT_HEADER[4:])
        assert row["start_time_iso"].endswith("+00:00")


def test_export_rejects_an_unknown_bucket_width() -> None:
    with pytest.raises(ValueError, match="bucket_width"):
        export_rows(ORG, DAY0, DAY0 + timedelta(days=1), "1w")


# -- API pages (pure) -----------------------------------------------------------------------------


def _params(**values: object) -> dict[str, list[str]]:
    return {k: [str(v)] for k, v in values.items()}


def test_cursor_round_trips_and_rejects_garbage() -> None:
    assert decode_cursor(encode_cursor(1759795200)) == 1759795200
    with pytest.raises(BadRequest):
        decode_cursor("not-a-cursor!")
    with pytest.raises(BadRequest):
        decode_cursor(base64.urlsafe_b64encode(b'{"v": 2}').decode())


def test_completions_page_validates_its_parameters() -> None:
    start = epoch(DAY0)
    for bad in (
        _params(),
        _params(start_time=start, bucket_width="2d"),
        _params(start_time=start, limit=0),
        _params(start_time=start, bucket_width="1d", limit=32),
        _params(start_time=start, end_time=start),
        _params(start_time=start, group_by="colour"),
        _params(start_time=start, end_time=start + 86400 * 3, page=encode_cursor(start + 17)),
    ):
        with pytest.raises(BadRequest):
            completions_page(ORG, bad)


def test_completions_page_groups_and_pages() -> None:
    start = epoch(DAY0)
    first = completions_page(
        ORG, _params(start_time=start, end_time=start + 3 * 86400, limit=2, group_by="model,batch")
    )
    assert first["object"] == "page" and first["has_more"] is True and len(first["data"]) == 2
    result = first["data"][0]["results"][0]
    assert result["object"] == "organization.usage.completions.result"
    assert result["project_id"] is None and result["model"] and isinstance(result["batch"], bool)
    params = _params(start_time=start, end_time=start + 3 * 86400, limit=2, page=first["next_page"])
    second = completions_page(ORG, params)
    assert second["has_more"] is False and second["next_page"] is None
    assert [b["start_time"] for b in first["data"] + second["data"]] == [
        start,
        start + 86400,
        start + 2 * 86400,
    ]


# -- cron auth table (pure) -----------------------------------------------------------------------


@pytest.mark.parametrize("server_secret", [None, "", "   ", "undefined", "null", " null\n"])
def test_unusable_server_secret_is_503(server_secret: str | None) -> None:
    assert authorize(server_secret, "Bearer undefined") == 503


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Basic s3cret",
        "bearer s3cret",
        "s3cret",
        "Bearer",
        "Bearer ",
        "Bearer    ",
        "Bearer undefined",
        "Bearer null",
        "Bearer s3cre",
        "Bearer s3cretx",
        "Bearer s3creT",
        "Bearer xxxxxx",
    ],
)
def test_refused_headers_are_401(authorization: str | None) -> None:
    assert authorize("s3cret", authorization) == 401


def test_both_sides_are_trimmed() -> None:
    assert authorize("  s3cret\n", "Bearer   s3cret  ") == 200


def test_compare_is_on_equal_length_digests(monkeypatch: pytest.MonkeyPatch) -> None:
    lengths: list[tuple[int, int]] = []
    real = hmac.compare_digest  # the spy replaces the module attribute both names share

    def spy(a: bytes, b: bytes) -> bool:
        lengths.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(cron_app.hmac, "compare_digest", spy)
    for token in ("x", "s3cre", "s3cret", "s3cret-and-much-longer"):
        authorize("s3cret", f"Bearer {token}")
    assert lengths == [(32, 32)] * 4


@freeze_time("2025-10-08T20:04:17.123456Z")
def test_timestamps_look_like_javascript_iso_strings() -> None:
    assert iso_ms(datetime.now(UTC)) == "2025-10-08T20:04:17.123Z"


# -- seed, pricing, retry-after, faults -----------------------------------------------------------


def test_seed_plan_has_the_required_keys_and_no_real_looking_secret() -> None:
    plan = seed_plan(7)
    assert len(plan.users) >= 3
    assert len(plan.openai_keys) == 4
    assert [k.usage_mode for k in plan.openai_keys].count("admin") == 1
    assert [k for k in plan.keys if not k.is_openai]
    for key in plan.keys:
        encrypted, iv, tag = encode_key(key.secret)
        assert not key.secret.startswith("sk-") and "sk-" not in encrypted
        assert decode_key(encrypted) == key.secret
        assert iv and tag
    assert seed_plan(7) == plan and seed_plan(8) != plan
    with pytest.raises(ValueError, match="not a stand-in key"):
        decode_key(base64.b64encode(b"sk-real").decode())


def test_dated_model_is_priced_by_its_base_with_a_fallback_flag() -> None:
    assert price("gpt-4o-mini") == (price("gpt-4o-mini")[0], False)
    assert price(DATED_MODEL) == (price("gpt-4o-mini")[0], True)
    usage = Usage(1, 1_000_000, 1_000_000, 0)
    assert cost_estimate("gpt-4o-mini", usage, discounted=False) == 2 * cost_estimate(
        "gpt-4o-mini", usage, discounted=True
    )
    row = EventRow(1, "gpt-4.1", datetime(2025, 10, 7), datetime(2025, 10, 8), usage, batch=True)
    assert row.cost == cost_estimate("gpt-4.1", usage, discounted=True)


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2025, 10, 8, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("1") == 1.0
    assert retry_after_seconds("Wed, 08 Oct 2025 12:00:30 GMT", now) == 30.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


def test_fault_catalogue_matches_the_settings() -> None:
    assert tuple(FAULTS) == settings.FAULTS
    assert all(f.breaks for f in FAULTS.values())
    assert get_fault("none") == FAULTS["none"]
    with pytest.raises(ValueError, match="known faults: none, auth-open"):
        get_fault("typo")
