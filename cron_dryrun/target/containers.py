"""The testcontainers backend: a PostgreSQL container, ready when a real connection succeeds.

- No registry is assumed: the Ryuk reaper is off unless the caller turned it on
  (``TESTCONTAINERS_RYUK_DISABLED``), so every container is stopped here, by the
  returned ``stop``, by an ``atexit`` hook, and on a failure during start.
- Inside a container (``/.dockerenv``) testcontainers would hand back the bridge
  gateway; ``TESTCONTAINERS_CONNECTION_MODE=docker_host`` is the default here.
- Readiness is a real psycopg connection with a bounded retry
  (:func:`cron_dryrun.target.database.wait_until_accepting`), not a log line.
- A missing engine or image is a :class:`DatabaseUnavailable` naming the ways out.

``scripts/docker-postgres-image.sh`` starts an engine and builds a local image
(``POSTGRES_IMAGE``) for machines without a registry.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import threading
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cron_dryrun.target.pg_server import DatabaseUnavailable, RunningPostgres, wait_until_accepting

POSTGRES_PORT = 5432
READY_TIMEOUT_S = 60.0
SCRIPT = "scripts/docker-postgres-image.sh"
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
CONTAINER_PREFIX = "cron-dryrun-pg-"
LABEL = "org.cron-dryrun.backend"


def configure_testcontainers(
    env: MutableMapping[str, str] | None = None, in_container: bool | None = None
) -> None:
    """Defaults for a machine without a registry; an explicit setting always wins.

    testcontainers reads some settings once, when first imported, so they are
    also applied to its configuration object here.
    """
    env = os.environ if env is None else env
    if in_container is None:
        in_container = Path("/.dockerenv").exists()
    env.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    if in_container:
        env.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")

    from testcontainers.core.config import ENABLE_FLAGS, ConnectionMode
    from testcontainers.core.config import testcontainers_config as config

    config.ryuk_disabled = env["TESTCONTAINERS_RYUK_DISABLED"].strip().lower() in ENABLE_FLAGS
    mode = env.get("TESTCONTAINERS_CONNECTION_MODE", "").strip()
    if mode:
        config.connection_mode_override = ConnectionMode(mode)


def docker_host_description(env: MutableMapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    host = env.get("DOCKER_HOST", "").strip()
    return f"DOCKER_HOST={host}" if host else "DOCKER_HOST unset: unix:///var/run/docker.sock"


def engine_missing_message(cause: str, env: MutableMapping[str, str] | None = None) -> str:
    return "\n".join(
        [
            "DB_BACKEND=testcontainers needs a Docker engine, and none answers "
            f"({docker_host_description(env)}).",
            "Ways out:",
            "  - DB_BACKEND=embedded (or --db-backend embedded): a real PostgreSQL without Docker "
            "(the pgserver wheel or this machine's PostgreSQL binaries);",
            "  - DATABASE_URL=postgresql://user:password@host:port/dbname (or --database-url): "
            "a database you already have;",
            f"  - start an engine: {SCRIPT} (as root: installs and starts dockerd if needed, "
            "builds a local PostgreSQL image and prints its tag for POSTGRES_IMAGE); "
            f"`{SCRIPT} stop` stops it again.",
            f"docker said: {cause}",
        ]
    )


def image_missing_message(image: str, cause: str) -> str:
    return "\n".join(
        [
            f"the PostgreSQL image {image!r} is not on this Docker engine and could not be pulled.",
            "Ways out:",
            f"  - build one without any registry: {SCRIPT} prints its tag; then "
            "POSTGRES_IMAGE=<that tag> (or --postgres-image <that tag>);",
            "  - POSTGRES_IMAGE=<an image this engine has> (`docker images` lists them);",
            "  - DB_BACKEND=embedded (or --db-backend embedded): no Docker at all.",
            f"docker said: {cause}",
        ]
    )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:300] + "...") if len(text) > 300 else text or type(exc).__name__


def docker_client() -> Any:
    """A docker SDK client whose engine answers, or DatabaseUnavailable naming the ways out."""
    import docker

    try:
        client = docker.from_env(timeout=30)
    except docker.errors.DockerException as exc:
        raise DatabaseUnavailable(engine_missing_message(_one_line(exc))) from exc
    try:
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:  # requests' errors are OSErrors
        client.close()
        raise DatabaseUnavailable(engine_missing_message(_one_line(exc))) from exc
    return client


def ensure_image(client: Any, image: str) -> None:
    """The image is on the engine, pulled if it can be; else DatabaseUnavailable."""
    import docker
    from docker.utils import parse_repository_tag

    try:
        client.images.get(image)
        return
    except docker.errors.ImageNotFound:
        pass
    repository, tag = parse_repository_tag(image)
    try:
        client.images.pull(repository, tag=tag or "latest")
    except docker.errors.DockerException as exc:
        raise DatabaseUnavailable(image_missing_message(image, _one_line(exc))) from exc


def _postgres_container_class() -> type[Any]:
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:  # testcontainers < 4.14
        from testcontainers.postgres import PostgresContainer

    class ReadyOnConnectPostgres(PostgresContainer):
        """PostgresContainer whose readiness is a psycopg connection from this host."""

        def _connect(self) -> None:
            wait_until_accepting(
                server_dsn(self),
                timeout_s=READY_TIMEOUT_S,
                alive=lambda: _running(self),
            )

    return ReadyOnConnectPostgres


def _running(container: Any) -> bool:
    wrapped = container.get_wrapped_container()
    wrapped.reload()
    return bool(wrapped.status in ("created", "running"))


def server_dsn(container: Any) -> str:
    """``postgresql://user:password@host:port/db``, quoted for psycopg."""
    host = container.get_container_host_ip()
    port = container.get_exposed_port(POSTGRES_PORT)
    if ":" in host:
        host = f"[{host}]"
    user = quote(container.username, safe="")
    password = quote(container.password, safe="")
    return f"postgresql://{user}:{password}@{host}:{port}/{quote(container.dbname, safe='')}"


def _new_container(image: str, name: str) -> Any:
    container = _postgres_container_class()(
        image,
        username="cron_dryrun",
        password=secrets.token_urlsafe(18),
        dbname="cron_dryrun",
        driver=None,
    )
    container.with_name(name)
    container.with_kwargs(labels={LABEL: "testcontainers"})
    # A local engine publishes the port on loopback only (design.md: traffic stays on loopback).
    if container.get_docker_client().host() in LOCAL_HOSTS:
        container.ports[str(POSTGRES_PORT)] = ("127.0.0.1", None)
    return container


def _remove_by_name(client: Any, name: str) -> None:
    """Remove the container even when start was interrupted before its id was known."""
    import docker

    with contextlib.suppress(docker.errors.NotFound):
        client.containers.get(name).remove(force=True, v=True)


def _make_stop(client: Any, container: Any, name: str) -> Callable[[], None]:
    lock = threading.Lock()
    done = False

    def stop() -> None:
        nonlocal done
        with lock:
            if done:
                return
            done = True
        atexit.unregister(stop)
        try:
            with contextlib.suppress(Exception):
                container.stop()
            _remove_by_name(client, name)
        finally:
            client.close()

    return stop


def engine_and_image_problem(image: str) -> str | None:
    """Before anything runs: the engine answers and has (or can pull) ``image``; else the
    message naming the ways out (a configuration error, not one error per check)."""
    configure_testcontainers()
    try:
        client = docker_client()
    except DatabaseUnavailable as exc:
        return str(exc)
    try:
        ensure_image(client, image)
    except DatabaseUnavailable as exc:
        return str(exc)
    finally:
        client.close()
    return None


def start_postgres_container(image: str) -> RunningPostgres:
    """A PostgreSQL container from ``image``, ready for connections; ``stop`` removes it."""
    configure_testcontainers()
    client = docker_client()
    try:
        ensure_image(client, image)
        name = CONTAINER_PREFIX + secrets.token_hex(6)
        container = _new_container(image, name)
    except BaseException:
        client.close()
        raise
    stop = _make_stop(client, container, name)
    atexit.register(stop)  # the run may end without reaching the provider's finally
    try:
        container.start()
        dsn = server_dsn(container)
    except BaseException as exc:  # KeyboardInterrupt included: never leave it running
        import docker

        logs = _logs_tail(container)
        stop()
        if isinstance(exc, DatabaseUnavailable | TimeoutError | docker.errors.DockerException):
            raise DatabaseUnavailable(
                f"the PostgreSQL container from {image!r} did not become ready: {exc}{logs}"
            ) from exc
        raise
    return RunningPostgres(dsn=dsn, backend=f"testcontainers ({image})", stop=stop)


def _logs_tail(container: Any, lines: int = 15) -> str:
    with contextlib.suppress(Exception):
        wrapped = container.get_wrapped_container()
        text: str = wrapped.logs(tail=lines).decode(errors="replace").rstrip()
        if text:
            return "\ncontainer log (last lines):\n" + text
    return ""
