"""The testcontainers backend: its messages, its clean-up, and a real container when Docker answers.

The real tests need a Docker engine (``scripts/docker-postgres-image.sh`` starts one and builds
a local image; run them with ``POSTGRES_IMAGE=<the tag it prints>``) and are skipped, with the
reason, only when no engine answers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import docker
import psycopg
import pytest

from cron_dryrun.config.settings import DEFAULT_POSTGRES_IMAGE
from cron_dryrun.target import containers
from cron_dryrun.target.containers import (
    LABEL,
    configure_testcontainers,
    ensure_image,
    start_postgres_container,
)
from cron_dryrun.target.database import create_app_database
from cron_dryrun.target.pg_server import DatabaseUnavailable
from cron_dryrun.target.providers import docker_engine_answers

MISSING_SOCKET = "unix:///nonexistent/cron-dryrun/docker.sock"


@pytest.fixture
def tc_config() -> Iterator[Any]:
    """testcontainers' global configuration, restored after the test."""
    from testcontainers.core.config import testcontainers_config as config

    saved = (config._ryuk_disabled, config.connection_mode_override)
    yield config
    config._ryuk_disabled, config.connection_mode_override = saved


# -- messages ------------------------------------------------------------------------------------


def test_no_engine_names_the_ways_out(monkeypatch: pytest.MonkeyPatch, tc_config: Any) -> None:
    monkeypatch.setenv("DOCKER_HOST", MISSING_SOCKET)
    monkeypatch.setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
    with pytest.raises(DatabaseUnavailable) as caught:
        start_postgres_container("postgres:15-alpine")
    lines = str(caught.value).splitlines()
    assert lines[:-1] == [
        "DB_BACKEND=testcontainers needs a Docker engine, and none answers "
        f"(DOCKER_HOST={MISSING_SOCKET}).",
        "Ways out:",
        "  - DB_BACKEND=embedded (or --db-backend embedded): a real PostgreSQL without Docker "
        "(the pgserver wheel or this machine's PostgreSQL binaries);",
        "  - DATABASE_URL=postgresql://user:password@host:port/dbname (or --database-url): "
        "a database you already have;",
        "  - start an engine: scripts/docker-postgres-image.sh (as root: installs and starts "
        "dockerd if needed, builds a local PostgreSQL image and prints its tag for "
        "POSTGRES_IMAGE); `scripts/docker-postgres-image.sh stop` stops it again.",
    ]
    assert lines[-1].startswith("docker said: ")
    assert "No such file or directory" in lines[-1]


def test_no_engine_message_when_docker_host_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    first = containers.engine_missing_message("refused").splitlines()[0]
    assert first.endswith("(DOCKER_HOST unset: unix:///var/run/docker.sock).")


class _Images:
    def __init__(self, pull_error: Exception | None) -> None:
        self.pull_error = pull_error
        self.pulled: list[tuple[str, str]] = []

    def get(self, image: str) -> None:
        raise docker.errors.ImageNotFound(f"No such image: {image}")

    def pull(self, repository: str, tag: str) -> None:
        self.pulled.append((repository, tag))
        if self.pull_error is not None:
            raise self.pull_error


class _Client:
    def __init__(self, pull_error: Exception | None = None) -> None:
        self.images = _Images(pull_error)


def test_missing_image_that_cannot_be_pulled_names_the_ways_out() -> None:
    client = _Client(docker.errors.APIError("no such host"))
    with pytest.raises(DatabaseUnavailable) as caught:
        ensure_image(client, "postgres:15-alpine")
    assert client.images.pulled == [("postgres", "15-alpine")]
    assert str(caught.value).splitlines() == [
        "the PostgreSQL image 'postgres:15-alpine' is not on this Docker engine and could not "
        "be pulled.",
        "Ways out:",
        "  - build one without any registry: scripts/docker-postgres-image.sh prints its tag; "
        "then POSTGRES_IMAGE=<that tag> (or --postgres-image <that tag>);",
        "  - POSTGRES_IMAGE=<an image this engine has> (`docker images` lists them);",
        "  - DB_BACKEND=embedded (or --db-backend embedded): no Docker at all.",
        "docker said: no such host",
    ]


def test_missing_image_that_can_be_pulled_is_pulled() -> None:
    client = _Client()
    ensure_image(client, "postgres")
    assert client.images.pulled == [("postgres", "latest")]


# -- testcontainers defaults ---------------------------------------------------------------------


def test_defaults_for_a_machine_without_registry(tc_config: Any) -> None:
    from testcontainers.core.config import ConnectionMode

    env: dict[str, str] = {}
    configure_testcontainers(env, in_container=True)
    assert env == {
        "TESTCONTAINERS_RYUK_DISABLED": "true",
        "TESTCONTAINERS_CONNECTION_MODE": "docker_host",
    }
    assert tc_config.ryuk_disabled is True
    assert tc_config.connection_mode_override is ConnectionMode.docker_host


def test_explicit_settings_win(tc_config: Any) -> None:
    from testcontainers.core.config import ConnectionMode

    env = {"TESTCONTAINERS_RYUK_DISABLED": "false", "TESTCONTAINERS_CONNECTION_MODE": "bridge_ip"}
    configure_testcontainers(env, in_container=True)
    assert env["TESTCONTAINERS_RYUK_DISABLED"] == "false"
    assert tc_config.ryuk_disabled is False
    assert tc_config.connection_mode_override is ConnectionMode.bridge_ip


def test_outside_a_container_the_connection_mode_is_left_alone(tc_config: Any) -> None:
    env: dict[str, str] = {}
    configure_testcontainers(env, in_container=False)
    assert "TESTCONTAINERS_CONNECTION_MODE" not in env


# -- clean-up, with a fake engine ----------------------------------------------------------------


class _FakeContainer:
    username = "u s"
    password = "p@ss/w:rd"
    dbname = "db"

    def __init__(self, start_error: BaseException | None = None) -> None:
        self.start_error = start_error
        self.stopped = 0

    def start(self) -> _FakeContainer:
        if self.start_error is not None:
            raise self.start_error
        return self

    def stop(self) -> None:
        self.stopped += 1

    def get_container_host_ip(self) -> str:
        return "localhost"

    def get_exposed_port(self, port: int) -> int:
        return 49153

    def get_wrapped_container(self) -> Any:
        raise RuntimeError("not started")


class _Removed:
    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name

    def remove(self, force: bool, v: bool) -> None:
        self.log.append(self.name)


class _FakeEngine:
    def __init__(self) -> None:
        self.removed: list[str] = []
        self.closed = 0
        engine = self

        class Containers:
            def get(self, name: str) -> _Removed:
                return _Removed(engine.removed, name)

        self.containers = Containers()

    def close(self) -> None:
        self.closed += 1


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch, tc_config: Any) -> _FakeEngine:
    engine = _FakeEngine()
    monkeypatch.setattr(containers, "configure_testcontainers", lambda: None)
    monkeypatch.setattr(containers, "docker_client", lambda: engine)
    monkeypatch.setattr(containers, "ensure_image", lambda client, image: None)
    return engine


@pytest.mark.parametrize("error", [KeyboardInterrupt(), RuntimeError("boom")])
def test_a_failed_start_removes_what_was_started(
    monkeypatch: pytest.MonkeyPatch, fake_engine: _FakeEngine, error: BaseException
) -> None:
    fake = _FakeContainer(start_error=error)
    monkeypatch.setattr(containers, "_new_container", lambda image, name: fake)
    with pytest.raises(type(error)):
        start_postgres_container("img")
    assert fake.stopped == 1
    assert len(fake_engine.removed) == 1
    assert fake_engine.removed[0].startswith(containers.CONTAINER_PREFIX)
    assert fake_engine.closed == 1


def test_stop_is_idempotent_and_the_dsn_is_quoted(
    monkeypatch: pytest.MonkeyPatch, fake_engine: _FakeEngine
) -> None:
    fake = _FakeContainer()
    monkeypatch.setattr(containers, "_new_container", lambda image, name: fake)
    running = start_postgres_container("img")
    assert running.dsn == "postgresql://u%20s:p%40ss%2Fw%3Ard@localhost:49153/db"
    assert running.backend == "testcontainers (img)"
    running.stop()
    running.stop()
    assert fake.stopped == 1
    assert fake_engine.closed == 1


# -- a real engine -------------------------------------------------------------------------------


def _require_engine() -> None:
    if not docker_engine_answers():
        pytest.skip(
            "no Docker engine answers: start one with `scripts/docker-postgres-image.sh` and run "
            "with POSTGRES_IMAGE=<the tag it prints> (or use DB_BACKEND=embedded)"
        )


@pytest.fixture
def engine(tc_config: Any) -> Iterator[Any]:
    _require_engine()
    client = docker.from_env(timeout=30)
    try:
        yield client
    finally:
        client.close()


def _ours(client: Any) -> set[str]:
    return {c.name for c in client.containers.list(all=True, filters={"label": LABEL})}


@pytest.mark.slow
def test_a_real_container_serves_the_app_database(engine: Any) -> None:
    image = os.environ.get("POSTGRES_IMAGE") or DEFAULT_POSTGRES_IMAGE
    before = _ours(engine)
    started = time.monotonic()
    running = start_postgres_container(image)
    try:
        elapsed = time.monotonic() - started
        new = _ours(engine) - before
        assert len(new) == 1, new
        assert running.dsn.startswith("postgresql://cron_dryrun:")
        app_dsn = create_app_database(running.dsn)
        with psycopg.connect(app_dsn, connect_timeout=10) as conn:
            tables = {
                row[0]
                for row in conn.execute(
                    "select table_name from information_schema.tables where table_schema = 'public'"
                )
            }
            assert "usage_events" in tables
            count = conn.execute("select count(*) from usage_events").fetchone()
            assert count == (0,)
        print(f"container ready in {elapsed:.1f}s from {image}")
    finally:
        running.stop()
    assert _ours(engine) == before, "the container is still there after stop()"
    running.stop()  # idempotent


@pytest.mark.slow
def test_a_real_engine_without_the_image_names_the_ways_out(engine: Any) -> None:
    image = "cron-dryrun/does-not-exist:0"
    before = _ours(engine)
    with pytest.raises(DatabaseUnavailable) as caught:
        start_postgres_container(image)
    lines = str(caught.value).splitlines()
    assert lines[0] == (
        f"the PostgreSQL image {image!r} is not on this Docker engine and could not be pulled."
    )
    assert lines[-1].startswith("docker said: ")
    assert _ours(engine) == before


@pytest.mark.slow
def test_the_image_accepts_no_tcp_connection_before_its_database_exists(engine: Any) -> None:
    """What testcontainers' own psql readiness check relies on."""
    image = os.environ.get("POSTGRES_IMAGE") or DEFAULT_POSTGRES_IMAGE
    containers.ensure_image(engine, image)
    container = engine.containers.run(
        image,
        detach=True,
        environment={"POSTGRES_USER": "u", "POSTGRES_PASSWORD": "pw", "POSTGRES_DB": "late_db"},
        ports={"5432/tcp": ("127.0.0.1", None)},
        labels={LABEL: "test"},
    )
    try:
        port = None
        deadline = time.monotonic() + 30
        while port is None and time.monotonic() < deadline:
            container.reload()
            bindings = container.attrs["NetworkSettings"]["Ports"].get("5432/tcp")
            port = bindings[0]["HostPort"] if bindings else None
        assert port, "no port mapping"
        errors: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(
                    f"postgresql://u:pw@127.0.0.1:{port}/late_db", connect_timeout=2
                ) as conn:
                    assert conn.execute("select current_database()").fetchone() == ("late_db",)
                break
            except psycopg.OperationalError as exc:
                errors.append(str(exc))
                time.sleep(0.02)
        else:
            pytest.fail(f"never accepted a connection: {errors[-3:]}")
        assert not [e for e in errors if "does not exist" in e], errors
    finally:
        container.remove(force=True, v=True)
