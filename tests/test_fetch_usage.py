"""`cron-dryrun fetch-usage` against the stand-in OpenAI usage API, over real HTTP on loopback."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import pytest

from cron_dryrun.cli import main
from cron_dryrun.config.settings import admin_keys_from_env, base_url_problem, normalise_base_url
from cron_dryrun.parity.formats import JSON_METRICS, METRICS, expand_export_paths
from cron_dryrun.parity.readers import rollup_daily
from cron_dryrun.session.usage_fetch import UsageFetchError, UsageQuery, fetch_organisation
from cron_dryrun.standin.export import write_export
from cron_dryrun.standin.openai_api import ApiAccount, OpenAIUsageApi
from cron_dryrun.standin.seed import org_for, seed_plan
from cron_dryrun.standin.server import RunningServer, serving
from cron_dryrun.standin.usage_truth import UsageOrg

FIRST, LAST = date(2025, 10, 6), date(2025, 10, 8)
PLAN = seed_plan(7)
ADMIN_1 = PLAN.admin_key.secret
STANDARD = next(k.secret for k in PLAN.openai_keys if k.usage_mode == "standard")
ORG_1 = org_for(PLAN.admin_key)
ORG_2 = UsageOrg.generate(4242, streams=8, projects=2)
ADMIN_2 = "standin-admin-second-org-0123456789abcdef"


def _api(**kwargs: object) -> OpenAIUsageApi:
    return OpenAIUsageApi(
        {
            ADMIN_1: ApiAccount(ORG_1, admin=True),
            ADMIN_2: ApiAccount(ORG_2, admin=True),
            STANDARD: ApiAccount(org_for(PLAN.openai_keys[1]), admin=False),
        },
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=httpx.Timeout(10.0, connect=3.0)) as client:
        yield client


class Sleeps(list[float]):
    """Records the waits instead of waiting (the backoff is asserted, not endured)."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def _truth(org: UsageOrg, tmp_path: Path, name: str) -> dict[object, list[int]]:
    start = datetime(FIRST.year, FIRST.month, FIRST.day, tzinfo=UTC)
    end = datetime(LAST.year, LAST.month, LAST.day + 1, tzinfo=UTC)
    csv = write_export(tmp_path / f"{name}.csv", org, start, end, "1d")
    return _json_metric_totals([csv])


def _json_metric_totals(paths: list[Path]) -> dict[object, list[int]]:
    rollup = rollup_daily(expand_export_paths(paths))
    assert rollup.problems == []
    index = [METRICS.index(m) for m in JSON_METRICS]
    return {k: [v[i] for i in index] for k, v in rollup.totals.items()}


def test_pages_are_followed_until_has_more_is_false(http: httpx.Client, tmp_path: Path) -> None:
    with serving(_api(), name="openai-fetch") as api:
        query = UsageQuery.for_days(FIRST, LAST, "1d")
        org = fetch_organisation(
            http, api.url, ADMIN_1, 1, UsageQuery(query.start, query.end, limit=1)
        )
    assert len(org.pages) == 3 and org.requests == 3 and org.retries == 0
    assert [p["has_more"] for p in org.pages] == [True, True, False]
    files = []
    for n, page in enumerate(org.pages, 1):
        path = tmp_path / f"page-{n}.json"
        path.write_text(json.dumps(page))
        files.append(path)
    assert _json_metric_totals(files) == _truth(ORG_1, tmp_path, "truth")


def test_429_waits_its_retry_after_then_goes_on(http: httpx.Client) -> None:
    sleeps = Sleeps()
    with serving(_api(throttle_requests=2, retry_after="7"), name="openai-429") as api:
        org = fetch_organisation(
            http, api.url, ADMIN_1, 1, UsageQuery.for_days(FIRST, LAST), sleep=sleeps
        )
    assert sleeps == [7.0, 7.0]
    assert (org.requests, org.retries, len(org.pages)) == (3, 2, 1)


def test_429_asking_for_too_long_a_wait_stops_with_when_to_come_back(http: httpx.Client) -> None:
    sleeps = Sleeps()
    api_429 = _api(throttle_requests=1, retry_after="3600")
    with serving(api_429, name="openai-429") as api, pytest.raises(UsageFetchError) as caught:
        fetch_organisation(
            http, api.url, ADMIN_1, 1, UsageQuery.for_days(FIRST, LAST), sleep=sleeps
        )
    assert sleeps == []
    assert str(caught.value) == (
        "fetch-usage: organisation 1 (admin key 1), page 1: rate limited (429) with Retry-After "
        "3600s, over the 60s this fetch waits; fetch again later"
    )


def test_5xx_backs_off_and_is_bounded(http: httpx.Client) -> None:
    sleeps = Sleeps()
    with serving(_api(failing_requests=2), name="openai-503") as api:
        org = fetch_organisation(
            http, api.url, ADMIN_1, 1, UsageQuery.for_days(FIRST, LAST), sleep=sleeps
        )
    assert sleeps == [1.0, 2.0] and org.retries == 2

    sleeps = Sleeps()
    broken = OpenAIUsageApi({ADMIN_1: ApiAccount(ORG_1, admin=True, refusal_status=500)})
    with serving(broken, name="openai-500") as api, pytest.raises(UsageFetchError) as caught:
        fetch_organisation(
            http, api.url, ADMIN_1, 1, UsageQuery.for_days(FIRST, LAST), sleep=sleeps
        )
    assert sleeps == [1.0, 2.0, 4.0, 8.0]
    assert str(caught.value) == (
        "fetch-usage: organisation 1 (admin key 1), page 1: gave up after 5 attempts; last "
        "answer: 500 The server had an error while processing your request."
    )


def test_a_bounded_deadline_stops_retrying(http: httpx.Client) -> None:
    broken = OpenAIUsageApi({ADMIN_1: ApiAccount(ORG_1, admin=True, refusal_status=503)})
    out_of_time = pytest.raises(UsageFetchError, match="out of time: the fetch's deadline")
    with serving(broken, name="openai-503") as api, out_of_time:
        fetch_organisation(
            http, api.url, ADMIN_1, 1, UsageQuery.for_days(FIRST, LAST),
            sleep=Sleeps(), deadline_s=2.5,
        )  # fmt: skip


def _run_cli(monkeypatch: pytest.MonkeyPatch, api: RunningServer, out: Path, keys: str) -> int:
    monkeypatch.delenv("OPENAI_ADMIN_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("OPENAI_ADMIN_KEYS", keys)
    return main(
        ["fetch-usage", "--out", str(out), "--from", FIRST.isoformat(), "--to", LAST.isoformat(),
         f"--openai-base-url={api.url}/v1"]
    )  # fmt: skip


def test_two_organisations_one_folder_each_with_checksums(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "usage"
    with serving(_api(throttle_requests=1, retry_after="0"), name="openai-cli") as api:
        assert _run_cli(monkeypatch, api, out, f"{ADMIN_1}, {ADMIN_2}") == 0
    printed = capsys.readouterr()
    assert ADMIN_1 not in printed.out + printed.err and ADMIN_2 not in printed.out + printed.err
    assert "organisation 1: 1 page(s), 3 bucket(s)" in printed.out
    assert "1 retried" in printed.out
    assert (
        f"next: cron-dryrun diff --export {out / 'org-1'} --export {out / 'org-2'}" in printed.out
    )
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "org-1/page-001.json",
        "org-1/page-001.json.sha256",
        "org-2/page-001.json",
        "org-2/page-001.json.sha256",
    ]
    for org_dir in ("org-1", "org-2"):
        page = out / org_dir / "page-001.json"
        digest = hashlib.sha256(page.read_bytes()).hexdigest()
        assert (out / org_dir / "page-001.json.sha256").read_text() == f"{digest}  page-001.json\n"
        text = page.read_text()
        assert ADMIN_1 not in text and ADMIN_2 not in text
    assert _json_metric_totals([out / "org-1"]) == _truth(ORG_1, tmp_path, "one")
    assert _json_metric_totals([out / "org-2"]) == _truth(ORG_2, tmp_path, "two")


def test_a_refused_key_names_its_organisation_and_the_scope(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with serving(_api(), name="openai-cli") as api:
        assert _run_cli(monkeypatch, api, tmp_path / "a", f"{ADMIN_1},{STANDARD}") == 1
        err = capsys.readouterr().err
        assert err == (
            "fetch-usage: organisation 2 of 2 (admin key 2), page 1: refused with 403: needs an "
            "admin key with usage read (api.usage.read); the API said: You have insufficient "
            "permissions for this operation. Missing scopes: api.usage.read. Create one under "
            "Organization settings > Admin keys and set OPENAI_ADMIN_KEY(S).\n"
        )
        assert _run_cli(monkeypatch, api, tmp_path / "b", "sk-admin-not-known-0123456789") == 1
        err = capsys.readouterr().err
        assert "organisation 1 (admin key 1), page 1: refused with 401: needs an admin key" in err
        assert "0123456789" not in err


def test_the_cli_takes_keys_from_the_environment_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for name in ("OPENAI_ADMIN_KEY", "OPENAI_ADMIN_KEYS"):
        monkeypatch.delenv(name, raising=False)
    assert main(["fetch-usage", "--out", str(tmp_path)]) == 2
    assert "no admin key: set OPENAI_ADMIN_KEY (or OPENAI_ADMIN_KEYS" in capsys.readouterr().err


def test_a_folder_with_pages_is_not_fetched_into_twice(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with serving(_api(), name="openai-cli") as api:
        assert _run_cli(monkeypatch, api, tmp_path, ADMIN_1) == 0
        assert _run_cli(monkeypatch, api, tmp_path, ADMIN_1) == 1
    assert "already holds pages from an earlier fetch; choose an empty folder (--out)" in (
        capsys.readouterr().err
    )


def test_keys_and_base_url_rules() -> None:
    assert admin_keys_from_env({"OPENAI_ADMIN_KEYS": " a, ,b ", "OPENAI_ADMIN_KEY": "c"}) == (
        "a",
        "b",
    )
    assert admin_keys_from_env({"OPENAI_ADMIN_KEY": " c "}) == ("c",)
    assert admin_keys_from_env({}) == ()
    assert normalise_base_url("https://api.openai.com/v1/") == "https://api.openai.com"
    assert base_url_problem("https://api.openai.com", False) is None
    assert base_url_problem("http://127.0.0.1:9", True) is None
    assert base_url_problem("http://usage.example", False) == (
        "admin keys are sent only over https to a non-loopback host (got 'http://usage.example')"
    )
