"""Which PostgreSQL the local stack runs on: url, testcontainers, embedded, or auto
(design.md's rule), each yielding a *server* DSN and stopped on exit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from cron_dryrun.target.embedded import start_embedded
from cron_dryrun.target.pg_server import (
    RunningPostgres,
)

# -- provisioning ---------------------------------------------------------------------------------


def docker_engine_answers(timeout_s: float = 2.0) -> bool:
    """True when a Docker engine answers its ping; never raises."""
    try:
        import docker

        client = docker.from_env(timeout=int(max(1, timeout_s)))
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # last resort: it never raises (no SDK, no engine, a garbled answer)
        return False


def choose_backend(
    backend: str, database_url: str | None, docker_answers: Callable[[], bool]
) -> str:
    """design.md's auto rule: url if given, else testcontainers if Docker answers, else embedded."""
    if backend != "auto":
        return backend
    if database_url:
        return "url"
    return "testcontainers" if docker_answers() else "embedded"


def backend_problem(backend: str, postgres_image: str) -> str | None:
    """What stops the chosen backend before anything runs, or None. Only an explicit
    testcontainers backend is checked here: auto picks it only when an engine answers, and
    falls back to embedded when the image cannot be had."""
    if backend != "testcontainers":
        return None
    from cron_dryrun.target.containers import engine_and_image_problem

    return engine_and_image_problem(postgres_image)


@contextlib.contextmanager
def provide_server(backend: str, postgres_image: str) -> Iterator[RunningPostgres]:
    """A PostgreSQL server from the testcontainers or embedded backend, stopped on exit."""
    if backend == "testcontainers":
        from cron_dryrun.target.containers import start_postgres_container

        running = start_postgres_container(postgres_image)
    elif backend == "embedded":
        running = start_embedded()
    else:
        raise ValueError(f"backend {backend!r} does not provision a server")
    try:
        yield running
    finally:
        running.stop()
