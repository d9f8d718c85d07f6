"""The stand-in OpenAI usage API over real HTTP on loopback, and the export it must agree with."""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from cron_dryrun.standin import LocalStack, start_local_stack
from cron_dryrun.standin.openai_api import ApiAccount, OpenAIUsageApi
from cron_dryrun.standin.provider_client import ProviderError, UsageApiClient
from cron_dryrun.standin.seed import org_for, seed_plan
from cron_dryrun.standin.server import RunningServer, serving
from cron_dryrun.standin.usage_truth import GROUP_FIELDS, epoch

TIMEOUT = httpx.Timeout(10.0, connect=3.0)
_HTTP = httpx.Client(timeout=TIMEOUT)  # one client per module: building one costs ~40 ms


@pytest.fixture(scope="module", autouse=True)
def _close_http_client() -> Iterator[None]:
    yield
    _HTTP.close()


NOW = datetime(2025, 10, 8, 2, 0, tzinfo=UTC)
DAY = datetime(2025, 10, 7, tzinfo=UTC)
PLAN = seed_plan(7)
ADMIN = PLAN.admin_key.secret
STANDARD = next(k.secret for k in PLAN.openai_keys if k.usage_mode == "standard")
METRICS = ("num_model_requests", "input_tokens", "output_tokens", "input_cached_tokens")


def _accounts() -> dict[str, ApiAccount]:
    return {
        k.secret: ApiAccount(org_for(k), admin=k.usage_mode == "admin") for k in PLAN.openai_keys
    }


@pytest.fixture(scope="module")
def api() -> Iterator[RunningServer]:
    with serving(OpenAIUsageApi(_accounts()), name="openai-test") as running:
        yield running


def _get(api: RunningServer, path: str, key: str | None = ADMIN, **params: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return _HTTP.get(api.url + path, params=params, headers=headers, timeout=TIMEOUT)


def _all_pages(api_url: str, key: str, **params: Any) -> tuple[list[dict[str, Any]], int]:
    """Every bucket, following next_page; bounded so a broken cursor cannot loop forever."""
    buckets: list[dict[str, Any]] = []
    with httpx.Client(
        base_url=api_url, timeout=TIMEOUT, headers={"Authorization": f"Bearer {key}"}
    ) as client:
        for pages in range(1, 100):
            page = (
                client.get("/v1/organization/usage/completions", params=params)
                .raise_for_status()
                .json()
            )
            buckets.extend(page["data"])
            if not page["has_more"]:
                return buckets, pages
            params = {**params, "page": page["next_page"]}
    raise AssertionError("pagination did not end within 100 pages")


def test_server_listens_on_loopback_ephemeral_port(api: RunningServer) -> None:
    assert api.url.startswith("http://127.0.0.1:") and api.port > 0


def test_bearer_auth(api: RunningServer) -> None:
    start = epoch(DAY)
    for key in (None, "wrong", "sk-nothing-like-it"):
        response = _get(api, "/v1/organization/usage/completions", key, start_time=start)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
    refused = _get(api, "/v1/organization/usage/completions", STANDARD, start_time=start)
    assert refused.status_code == 403 and "api.usage.read" in refused.json()["error"]["message"]
    assert _get(api, "/v1/organization/usage/completions", start_time=start).status_code == 200
    assert _get(api, "/v1/organization/usage/completions").status_code == 400
    assert _get(api, "/v1/nothing").status_code == 404


def test_pagination_over_several_pages(api: RunningServer) -> None:
    start, end = epoch(DAY), epoch(DAY + timedelta(days=7))
    group_by = ",".join(GROUP_FIELDS)
    paged, pages = _all_pages(
        api.url, ADMIN, start_time=start, end_time=end, limit=2, group_by=group_by
    )
    whole, one = _all_pages(
        api.url, ADMIN, start_time=start, end_time=end, limit=7, group_by=group_by
    )
    assert pages == 4 and one == 1
    assert paged == whole
    assert [b["start_time"] for b in paged] == list(range(start, end, 86400))
    hourly, hour_pages = _all_pages(
        api.url, ADMIN, start_time=start, end_time=start + 86400, bucket_width="1h", limit=5
    )
    assert hour_pages == 5 and len(hourly) == 24


def test_cron_client_follows_pages_and_gets_the_same_usage(api: RunningServer) -> None:
    start, end = DAY, DAY + timedelta(days=1)
    with UsageApiClient(api.url, page_limit=5) as paged, UsageApiClient(api.url) as single:
        hourly = paged.completions(ADMIN, start, end, bucket_width="1h")
        daily = single.completions(ADMIN, start, end)
    assert len(hourly) == 24 and len(daily) == 1

    def totals(buckets: list[dict[str, Any]]) -> Counter[str]:
        return Counter({m: sum(r[m] for b in buckets for r in b["results"]) for m in METRICS})

    assert totals(hourly) == totals(daily)


def test_legacy_usage_has_models_but_no_ids(api: RunningServer) -> None:
    body = _get(api, "/v1/usage", STANDARD, date="2025-10-07").raise_for_status().json()
    assert body["object"] == "list" and body["data"]
    for entry in body["data"]:
        assert epoch(DAY) <= entry["aggregation_timestamp"] < epoch(DAY + timedelta(days=1))
        assert entry["snapshot_id"] and "project_id" not in entry and "api_key_id" not in entry
    assert _get(api, "/v1/usage", STANDARD, date="yesterday").status_code == 400


def test_429_with_retry_after_then_success_and_client_retries_bounded() -> None:
    with serving(
        OpenAIUsageApi(_accounts(), throttle_requests=1, retry_after="1"), name="throttled"
    ) as api:
        first = _get(api, "/v1/organization/usage/completions", start_time=epoch(DAY))
        assert first.status_code == 429 and first.headers["retry-after"] == "1"
        assert (
            _get(api, "/v1/organization/usage/completions", start_time=epoch(DAY)).status_code
            == 200
        )
    with (
        serving(
            OpenAIUsageApi(_accounts(), throttle_requests=1, retry_after="0"), name="throttled"
        ) as api,
        UsageApiClient(api.url) as client,
    ):
        assert client.completions(ADMIN, DAY, DAY + timedelta(days=1))
    with (
        serving(
            OpenAIUsageApi(_accounts(), throttle_requests=1, retry_after="3600"), name="throttled"
        ) as api,
        UsageApiClient(api.url) as client,
        pytest.raises(ProviderError, match="asks to wait 3600s"),
    ):
        client.completions(ADMIN, DAY, DAY + timedelta(days=1))
    with (
        serving(
            OpenAIUsageApi(_accounts(), throttle_requests=99, retry_after="0"), name="throttled"
        ) as api,
        UsageApiClient(api.url, max_attempts=3) as client,
        pytest.raises(ProviderError, match="after 3 attempt"),
    ):
        client.completions(ADMIN, DAY, DAY + timedelta(days=1))


# -- the export the stack writes sums to what the API serves -------------------------------------


@pytest.fixture
def stack(app_database: str, tmp_path: Path) -> Iterator[LocalStack]:
    with start_local_stack(
        app_database, clock=lambda: NOW, export_dir=tmp_path / "exports"
    ) as local:
        yield local


def _csv_totals(path: Path) -> dict[tuple[int, tuple[str, ...]], Counter[str]]:
    sums: dict[tuple[int, tuple[str, ...]], Counter[str]] = defaultdict(Counter)
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if not row["model"]:
                continue  # an empty bucket's row
            key = (int(row["start_time"]), tuple(row[f] for f in GROUP_FIELDS))
            sums[key].update({m: int(float(row[m])) for m in METRICS})
    return dict(sums)


def _api_totals(buckets: list[dict[str, Any]]) -> dict[tuple[int, tuple[str, ...]], Counter[str]]:
    sums: dict[tuple[int, tuple[str, ...]], Counter[str]] = defaultdict(Counter)
    for bucket in buckets:
        for r in bucket["results"]:
            ids = tuple(
                ("TRUE" if r[f] else "FALSE") if f == "batch" else str(r[f]) for f in GROUP_FIELDS
            )
            sums[(bucket["start_time"], ids)].update({m: r[m] for m in METRICS})
    return dict(sums)


@pytest.mark.parametrize(
    ("width", "start", "end", "limit"),
    [
        ("1d", DAY - timedelta(days=1), DAY + timedelta(days=2), 2),
        ("1h", DAY, DAY + timedelta(days=1), 10),
        ("1m", DAY + timedelta(hours=13), DAY + timedelta(hours=15), 60),
    ],
)
def test_export_sums_to_what_the_api_serves(
    stack: LocalStack, tmp_path: Path, width: str, start: datetime, end: datetime, limit: int
) -> None:
    path = stack.write_export(tmp_path / f"export-{width}.csv", start, end, width)
    buckets, pages = _all_pages(
        stack.openai_url,
        ADMIN,
        start_time=epoch(start),
        end_time=epoch(end),
        bucket_width=width,
        limit=limit,
        group_by=",".join(GROUP_FIELDS),
    )
    assert pages > 1
    from_csv, from_api = _csv_totals(path), _api_totals(buckets)
    assert from_csv and from_csv == from_api
    with path.open(newline="") as handle:
        starts = {row["start_time"] for row in csv.DictReader(handle)}
    assert len(starts) == len(buckets)  # every bucket has a row, empty ones included


def test_stack_exports_yesterday_and_today(stack: LocalStack) -> None:
    names = [p.name for p in stack.export_paths]
    assert names == [
        "completions_usage_2025-10-07_2025-10-08_1d.csv",
        "completions_usage_2025-10-08_2025-10-09_1d.csv",
    ]
    assert all(p.is_file() for p in stack.export_paths)
    assert "secret" not in repr(stack) or stack.secret not in repr(stack)
