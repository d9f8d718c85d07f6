"""The stand-in cron over real HTTP on loopback, against real PostgreSQL: auth, windows, writes."""

from __future__ import annotations

import argparse
import contextlib
import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from cron_dryrun.cli import standin as command
from cron_dryrun.standin import LocalStack, start_local_stack
from cron_dryrun.standin.cron_app import CRON_PATH, DailyUsageCronApp
from cron_dryrun.standin.server import serving
from cron_dryrun.target.database import create_app_database, database_name, drop_database
from cron_dryrun.target.pg_server import RunningPostgres
from cron_dryrun.windows import daily_windows, naive_utc, unaligned_window

TIMEOUT = httpx.Timeout(15.0, connect=3.0)
_HTTP = httpx.Client(timeout=TIMEOUT)  # one client per module: building one costs ~40 ms


@pytest.fixture(scope="module", autouse=True)
def _close_http_client() -> Iterator[None]:
    yield
    _HTTP.close()


NOW = datetime(2025, 10, 8, 2, 0, tzinfo=UTC)
SECRET = "s3cret-for-the-standin-tests"


@dataclass(frozen=True)
class Snapshot:
    """usage_events as (id -> xmin, window); xmin changes whenever a row is inserted or rewritten."""

    rows: dict[int, tuple[str, datetime | None, datetime | None, int]]

    @classmethod
    def take(cls, dsn: str) -> Snapshot:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            found = conn.execute(
                "SELECT id, xmin::text, window_start, window_end, key_id FROM usage_events"
            ).fetchall()
        return cls({r[0]: (r[1], r[2], r[3], r[4]) for r in found})

    def inserted_since(self, before: Snapshot) -> set[int]:
        return set(self.rows) - set(before.rows)

    def updated_since(self, before: Snapshot) -> set[int]:
        return {
            i for i in set(self.rows) & set(before.rows) if self.rows[i][0] != before.rows[i][0]
        }

    def windows_of(self, ids: set[int]) -> set[tuple[int, datetime | None, datetime | None]]:
        return {(self.rows[i][3], self.rows[i][1], self.rows[i][2]) for i in ids}


def _trigger(
    stack: LocalStack, method: str = "POST", authorization: str | None = "secret"
) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if authorization == "secret":
        headers["Authorization"] = f"Bearer {stack.secret}"
    elif authorization is not None:
        headers["Authorization"] = authorization
    return _HTTP.request(method, stack.cron_url, headers=headers, timeout=TIMEOUT)


def _openai_keys(dsn: str) -> dict[int, str]:
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT id, usage_mode FROM provider_keys WHERE provider = 'openai'"
        ).fetchall()
    return {r[0]: r[1] for r in rows}


@contextlib.contextmanager
def _stack(
    dsn: str, clock: Callable[[], datetime] = lambda: NOW, **options: Any
) -> Iterator[LocalStack]:
    with start_local_stack(dsn, secret=SECRET, clock=clock, **options) as stack:
        yield stack


# -- auth table -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_stack(pg_server: RunningPostgres) -> Iterator[LocalStack]:
    """One stack for the read-only auth cases (each refused request must write nothing)."""
    dsn = create_app_database(pg_server.dsn)
    try:
        with _stack(dsn) as stack:
            yield stack
    finally:
        drop_database(pg_server.dsn, database_name(dsn))


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="no header"),
        pytest.param("Basic " + SECRET, id="not bearer"),
        pytest.param("bearer " + SECRET, id="scheme lower case"),
        pytest.param(SECRET, id="no scheme"),
        pytest.param("Bearer", id="empty token"),
        pytest.param("Bearer undefined", id="undefined"),
        pytest.param("Bearer null", id="null"),
        pytest.param("Bearer " + "x" * len(SECRET), id="wrong same length"),
        pytest.param("Bearer " + SECRET[:-1], id="shorter"),
        pytest.param("Bearer " + SECRET + "x", id="longer"),
        pytest.param("Bearer " + SECRET[:-1] + "X", id="last char"),
        pytest.param("Bearer x", id="one char"),
    ],
)
def test_refused_requests_answer_401_and_write_nothing(
    auth_stack: LocalStack, authorization: str | None
) -> None:
    before = Snapshot.take(auth_stack.database_dsn)
    for method in ("POST", "GET"):
        response = _trigger(auth_stack, method, authorization)
        assert response.status_code == 401
        assert response.json() == {"error": "Unauthorized"}
    after = Snapshot.take(auth_stack.database_dsn)
    assert after == before


def _raw_post(stack: LocalStack, authorization: str) -> bytes:
    """POST with an Authorization value sent byte for byte, as curl would (httpx refuses
    values with trailing spaces). Returns the whole answer."""
    url = httpx.URL(stack.cron_url)
    assert url.host == "127.0.0.1" and url.port is not None
    request = (
        f"POST {url.path} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\nAuthorization: {authorization}\r\n"
        "Content-Length: 0\r\nConnection: close\r\n\r\n"
    ).encode()
    answer = b""
    with socket.create_connection((url.host, url.port), timeout=10) as sock:
        sock.settimeout(10)
        sock.sendall(request)
        for _ in range(1000):  # bounded: the server closes after one answer
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


def test_empty_token_with_trailing_space_as_curl_sends_it(auth_stack: LocalStack) -> None:
    head, _, body = _raw_post(auth_stack, "Bearer ").partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401 ")
    assert body == b'{"error":"Unauthorized"}'


@pytest.mark.parametrize("server_secret", [None, "", "  ", "undefined", "null", " undefined\n"])
def test_unusable_server_secret_answers_503(server_secret: str | None) -> None:
    app = DailyUsageCronApp(
        database_dsn="postgresql://unused", openai_url="http://127.0.0.1:9", secret=server_secret
    )
    with serving(app, name="cron-503") as running:
        for authorization in ({"Authorization": "Bearer undefined"}, {}):
            response = _HTTP.post(running.url + CRON_PATH, headers=authorization, timeout=TIMEOUT)
            assert response.status_code == 503
            assert response.json() == {"error": "Service unavailable"}


def test_padded_secrets_are_trimmed(app_database: str) -> None:
    with start_local_stack(app_database, secret=f"  {SECRET}\n", clock=lambda: NOW) as stack:
        # (httpx refuses trailing spaces in a header value; the raw-socket test covers those)
        assert _trigger(stack, authorization=f"Bearer   {SECRET}").status_code == 200
        assert _trigger(stack, authorization=f"Bearer {SECRET}").status_code == 200
        assert _raw_post(stack, f"Bearer   {SECRET}  ").startswith(b"HTTP/1.1 200 ")


def test_unhandled_failure_answers_500_with_timestamp(app_database: str) -> None:
    with _stack(app_database) as stack:
        with psycopg.connect(app_database, connect_timeout=10) as conn:
            conn.execute("ALTER TABLE usage_events RENAME TO usage_events_gone")
        response = _trigger(stack)
    assert response.status_code == 500
    assert response.json() == {
        "error": "Failed to run daily usage fetch",
        "timestamp": "2025-10-08T02:00:00.000Z",
    }


def test_methods(app_database: str) -> None:
    with _stack(app_database) as stack:
        options = _HTTP.options(stack.cron_url, timeout=TIMEOUT)
        assert options.status_code == 204 and options.headers["allow"] == "GET, HEAD, POST, OPTIONS"
        put = _trigger(stack, "PUT")
        assert put.status_code == 405 and put.content == b"" and "allow" not in put.headers
        before = Snapshot.take(app_database)
        head = _trigger(stack, "HEAD")
        assert head.status_code == 200 and head.content == b""
        assert Snapshot.take(app_database).inserted_since(before), "HEAD runs the whole ingestion"
        get = _trigger(stack, "GET")
        assert get.status_code == 200 and get.json()["success"] is True
        assert (
            _HTTP.get(stack.cron_url.replace(CRON_PATH, "/elsewhere"), timeout=TIMEOUT).status_code
            == 404
        )


# -- windows, telemetry, rerun --------------------------------------------------------------------


@pytest.mark.parametrize(
    "run_at",
    [
        datetime(2025, 10, 8, 0, 0, 0, tzinfo=UTC),
        datetime(2025, 10, 8, 2, 0, 0, tzinfo=UTC),
        datetime(2025, 10, 8, 23, 59, 59, tzinfo=UTC),
    ],
    ids=["00:00:00", "02:00:00", "23:59:59"],
)
@pytest.mark.parametrize("fault", ["none", "flag-off"])
def test_windows_per_key(app_database: str, run_at: datetime, fault: str) -> None:
    with _stack(app_database, clock=lambda: run_at, fault=fault) as stack:
        before = Snapshot.take(app_database)
        body = _trigger(stack).json()
        after = Snapshot.take(app_database)
    keys = _openai_keys(app_database)
    windows = daily_windows(run_at) if fault == "none" else [unaligned_window(run_at)]
    expected = {(k, naive_utc(w.start), naive_utc(w.end)) for k in keys for w in windows}
    written = after.windows_of(after.inserted_since(before) | after.updated_since(before))
    assert written == expected
    assert body["telemetry"]["windowsProcessed"] == len(windows) * len(keys)
    assert body["flags"] == {"enableDailyUsageWindows": fault == "none"}
    if fault == "flag-off":
        assert all(start.time() == run_at.time() for _, start, _ in written)


def test_telemetry_matches_the_database_and_a_rerun_only_updates(app_database: str) -> None:
    with _stack(app_database) as stack:
        before = Snapshot.take(app_database)
        first = _trigger(stack).json()
        middle = Snapshot.take(app_database)
        second = _trigger(stack).json()
        after = Snapshot.take(app_database)
    t1, t2 = first["telemetry"], second["telemetry"]
    assert set(first) == {
        "success",
        "processed",
        "successful",
        "errors",
        "warningCount",
        "timestamp",
        "telemetry",
        "flags",
    }
    assert (
        first["success"],
        first["processed"],
        first["successful"],
        first["errors"],
        first["warningCount"],
    ) == (True, 3, 3, 0, 0)
    assert first["timestamp"] == "2025-10-08T02:00:00.000Z"
    assert (t1["processedUsers"], t1["processedKeys"], t1["windowsProcessed"]) == (3, 4, 8)
    assert (t1["simulatedKeys"], t1["failedKeys"], t1["issuesByCode"]) == (0, 0, {})
    assert t1["storedEvents"] == len(middle.inserted_since(before)) == t1["constraintInserts"] > 0
    assert t1["updatedEvents"] == len(middle.updated_since(before)) == t1["constraintUpdates"] == 0
    assert all(
        t1[f] == 0
        for f in (
            "manualFallbackInserts",
            "manualFallbackUpdates",
            "manualFallbackWindows",
            "manualFallbackKeys",
        )
    )
    # the rerun: same windows, nothing new, every row of the first run rewritten in place
    assert t2["storedEvents"] == 0 == len(after.inserted_since(middle))
    assert t2["updatedEvents"] == t1["storedEvents"] == len(after.updated_since(middle))
    assert len(after.rows) == len(middle.rows)


@pytest.mark.parametrize(("fault", "new_rows"), [("none", False), ("flag-off", True)])
def test_a_rerun_later_the_same_day(app_database: str, fault: str, new_rows: bool) -> None:
    """Flag on, a later rerun rewrites the day's rows; flag off, its new [T-24h, T) window
    makes every row new (contract.md section 3)."""
    current = [NOW]  # the injected clock reads this; the test moves it between runs

    def clock() -> datetime:
        return current[0]

    with _stack(app_database, clock=clock, fault=fault) as stack:
        first = _trigger(stack).json()["telemetry"]
        current[0] = NOW + timedelta(minutes=5, microseconds=250)
        second = _trigger(stack).json()["telemetry"]
    if new_rows:
        assert second["storedEvents"] == first["storedEvents"] and second["updatedEvents"] == 0
    else:
        assert second["storedEvents"] == 0 and second["updatedEvents"] == first["storedEvents"]


def test_rows_hold_utc_days_and_admin_ids(app_database: str) -> None:
    with _stack(app_database) as stack:
        assert _trigger(stack).status_code == 200
    with psycopg.connect(app_database, connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT k.usage_mode, e.window_start, e.window_end, e.timestamp, e.project_id, e.openai_user_id,"
            " e.openai_api_key_id, e.cost_estimate, e.tokens_in, e.input_uncached_tokens, e.input_cached_tokens"
            " FROM usage_events e JOIN provider_keys k ON k.id = e.key_id WHERE e.window_start >= '2025-10-07'"
        ).fetchall()
    assert rows
    for (
        mode,
        start,
        end,
        timestamp,
        project,
        user,
        api_key,
        cost,
        tokens_in,
        uncached,
        cached,
    ) in rows:
        assert start.tzinfo is None and start.time() == datetime.min.time()
        assert end - start == timedelta(days=1) and timestamp == start
        assert (project is not None and user is not None and api_key is not None) == (
            mode == "admin"
        )
        assert cost > 0 and tokens_in == uncached + cached


def test_seed_history_and_idempotent_seed(app_database: str) -> None:
    with _stack(app_database):
        pass
    first = Snapshot.take(app_database)
    with _stack(app_database):
        pass
    assert Snapshot.take(app_database) == first
    with psycopg.connect(app_database, connect_timeout=10) as conn:
        users = conn.execute("SELECT count(*) FROM users").fetchone()
        providers = conn.execute(
            "SELECT provider, usage_mode, encrypted_key FROM provider_keys"
        ).fetchall()
    assert users == (3,)
    assert sorted(p for p, _, _ in providers) == [
        "anthropic",
        "openai",
        "openai",
        "openai",
        "openai",
    ]
    assert all("sk-" not in enc for _, _, enc in providers)
    days = {(NOW.date() - start.date()).days for _, start, _, _ in first.rows.values()}
    assert days == {3, 4, 5, 6, 7}


def test_the_rest_of_the_stack_stays_on_loopback(app_database: str) -> None:
    with _stack(app_database) as stack:
        assert stack.cron_url.startswith("http://127.0.0.1:") and stack.cron_url.endswith(CRON_PATH)
        assert stack.openai_url.startswith("http://127.0.0.1:")
        assert SECRET not in repr(stack)
    with pytest.raises(httpx.ConnectError):
        _HTTP.get(stack.cron_url, timeout=TIMEOUT)  # stopped on exit


def test_unknown_fault_is_refused_before_anything_starts(app_database: str) -> None:
    with (
        pytest.raises(ValueError, match="unknown fault 'nope'"),
        start_local_stack(app_database, fault="nope"),
    ):
        pass
    assert Snapshot.take(app_database).rows == {}


# -- the command ----------------------------------------------------------------------------------


def test_standin_command_prints_what_to_paste(
    pg_server: RunningPostgres,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CRON_SECRET", SECRET)
    parser = argparse.ArgumentParser(prog="cron-dryrun")
    command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        [
            "standin",
            "--once",
            "--database-url",
            pg_server.dsn,
            "--export-dir",
            str(tmp_path),
            "--fault",
            "throttle",
        ]
    )
    code = args.func(args)
    out = capsys.readouterr().out
    assert code == 0
    assert "cron URL:     http://127.0.0.1:" in out and f"CRON_SECRET:  {SECRET}" in out
    assert "fault:        throttle" in out
    paste = next(line.strip() for line in out.splitlines() if "pytest acceptance/" in line)
    assert paste.startswith("CRON_URL=http://127.0.0.1:") and f"CRON_SECRET={SECRET}" in paste
    assert f"--openai-export {tmp_path}" in paste and "-m dryrun" in paste
    dsn = paste.split("DATABASE_URL=")[1].split()[0]
    with psycopg.connect(pg_server.dsn, connect_timeout=10) as conn:
        names = {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}
    assert database_name(dsn) not in names, "the command drops the database it created"
    assert len(list(tmp_path.glob("completions_usage_*.csv"))) == 2


def test_standin_command_serves_until_stopped(pg_server: RunningPostgres, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="cron-dryrun")
    command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["standin", "--database-url", pg_server.dsn, "--export-dir", str(tmp_path)]
    )
    out = io.StringIO()
    stop = threading.Event()
    result: list[int] = []
    server = threading.Thread(target=lambda: result.append(command.run(args, out=out, stop=stop)))
    server.start()
    try:
        deadline = time.monotonic() + 30
        while (
            "Serving;" not in out.getvalue() and time.monotonic() < deadline and server.is_alive()
        ):
            server.join(0.05)  # bounded wait for the banner, no fixed sleep
        url = next(
            line.split()[-1] for line in out.getvalue().splitlines() if line.startswith("cron URL:")
        )
        assert _HTTP.options(url).status_code == 204, "the stack serves while the command runs"
    finally:
        stop.set()
        server.join(30)
    assert result == [0] and not server.is_alive()


def test_standin_command_with_protection_and_compression_prints_the_bypass(
    pg_server: RunningPostgres,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VERCEL_AUTOMATION_BYPASS_SECRET", "standin-bypass-42")
    parser = argparse.ArgumentParser(prog="cron-dryrun")
    command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        [
            "standin",
            "--once",
            "--database-url",
            pg_server.dsn,
            "--export-dir",
            str(tmp_path),
            "--protection",
            "--compress",
            "zstd",
        ]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "compression:  zstd (when Accept-Encoding allows it)" in out
    assert "VERCEL_AUTOMATION_BYPASS_SECRET: standin-bypass-42   (Deployment Protection on)" in out
    paste = next(line.strip() for line in out.splitlines() if "pytest acceptance/" in line)
    assert "VERCEL_AUTOMATION_BYPASS_SECRET=standin-bypass-42 pytest" in paste
