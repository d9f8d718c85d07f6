"""The one redaction layer, installed where pytest itself writes: its ``--debug`` trace and
every logging handler of the session (log file, live log, the per-test capture that JUnit
and the HTML report show, the root logger's).

The suite's own outputs go through the evidence writer and the report hooks; these are
pytest's. httpcore logs response headers at DEBUG (an endpoint echoing the token), psycopg
logs connection attempts, and pluggy's trace prints every hook's arguments and results
(the ``app_dsn`` fixture's value, the auth cases): each line passes the redactor first.

``redaction`` is a callable returning the run's current redactor: the secrets grow while
the session runs (the local stack's database password is known only once it is made).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cron_dryrun.redaction import Redactor, known_secrets, secrets_from_environment

Redact = Callable[[str], str]
Redaction = Callable[[], Redact]

# pytest's LoggingPlugin: the handlers it owns (created once, attached around each phase)
LOGGING_PLUGIN = "logging-plugin"
LOGGING_PLUGIN_HANDLERS = (
    "log_file_handler",
    "log_cli_handler",
    "caplog_handler",
    "report_handler",
)
_DONE = "_cron_dryrun_redacted"


def early_redactor(env: Mapping[str, str], cli: Mapping[str, Any]) -> Redactor:
    """The secrets known before the settings are resolved (or when they fail to resolve):
    what pytest may already have written, the command line included."""
    dsns = [env.get("DATABASE_URL"), cli.get("database_url")]
    urls = [env.get("CRON_URL"), cli.get("cron_url")]
    extra = [
        *secrets_from_environment(env),
        env.get("VERCEL_AUTOMATION_BYPASS_SECRET"),
        env.get("OPENAI_ADMIN_KEY"),
        *env.get("OPENAI_ADMIN_KEYS", "").split(","),
    ]
    return Redactor(
        known_secrets(
            env.get("CRON_SECRET"),
            dsns=[d for d in dsns if isinstance(d, str)],
            urls=[u for u in urls if isinstance(u, str)],
            extra=[e.strip() for e in extra if e and e.strip()],
        )
    )


class RunRedaction:
    """A ``Redaction`` for pytest's own outputs: the run's redactor once the session has
    one (``current``, set by the session object), else the secrets of the environment and
    the command line, which is what pytest may write before, or without, resolved settings."""

    def __init__(self, env: Mapping[str, str], early_cli: Callable[[], Mapping[str, Any]]) -> None:
        self.current: Redaction | None = None
        self._env = env
        self._early_cli = early_cli
        self._early: Redact | None = None

    def __call__(self) -> Redact:
        if self.current is not None:
            return self.current()
        if self._early is None:
            self._early = early_redactor(self._env, self._early_cli()).redact
        return self._early


class RedactingFilter(logging.Filter):
    """Redacts a record in place before any handler formats it: the message with its args
    merged (``getMessage()``), the formatted exception and the stack. Never drops one."""

    def __init__(self, redaction: Redaction) -> None:
        super().__init__("cron-dryrun")
        self._redaction = redaction

    def filter(self, record: logging.LogRecord) -> bool:
        done = record.__dict__.get(_DONE, ())
        if id(self) in done:
            # one record reaches several handlers: redacted once by each filter, since a
            # session in the same process (pytester) has its own filter and secrets
            return True
        redact = self._redaction()
        try:
            message = record.getMessage()
        except Exception:  # last resort: args that do not fit the format (or a raising __str__)
            message = f"{record.msg!s} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)  # formatters use it, not exc_info
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        record.__dict__[_DONE] = (*done, id(self))
        return True


def redact_log_handlers(pluginmanager: Any, redaction: Redaction) -> list[logging.Handler]:
    """Add the redacting filter to pytest's logging handlers and the root logger's; the
    handlers newly covered are returned (a second call adds nothing)."""
    plugin = pluginmanager.get_plugin(LOGGING_PLUGIN)
    candidates = [getattr(plugin, name, None) for name in LOGGING_PLUGIN_HANDLERS]
    root = logging.getLogger()
    candidates.extend(root.handlers)
    covered = []
    filt = RedactingFilter(redaction)
    for handler in candidates:
        if not isinstance(handler, logging.Handler) or handler in covered:
            continue
        if any(isinstance(f, RedactingFilter) for f in handler.filters):
            continue
        handler.addFilter(filt)
        covered.append(handler)
    if not any(isinstance(f, RedactingFilter) for f in root.filters):
        root.addFilter(filt)  # records logged on the root logger itself
    return covered


class RedactingTraceWriter:
    """pluggy's trace writer (``--debug``), every chunk redacted before it is written."""

    def __init__(self, write: Callable[[str], object], redaction: Redaction) -> None:
        self._write = write
        self._redaction = redaction
        self._pending: list[str] | None = None

    def __call__(self, text: str) -> None:
        if self._pending is not None:
            # traced while the redactor is fetched (an import is traced by pytest's
            # assertion rewriter): held, and redacted with the rest below
            self._pending.append(text)
            return
        self._pending = [text]
        try:
            redact = self._redaction()
        finally:
            held, self._pending = self._pending, None
        for chunk in held:  # in the order traced
            self._write(redact(chunk))


def redact_debug_trace(trace_root: Any, redaction: Redaction) -> bool:
    """Wrap the writer of pytest's ``--debug`` trace (``config.trace.root``) so that every
    line passes the redactor, and rewrite what it wrote before (its header's ``args=``,
    the command line) redacted. False when there is no trace to cover."""
    writer = getattr(trace_root, "_writer", None)
    if writer is None or isinstance(writer, RedactingTraceWriter):
        return False
    stream = getattr(writer, "__self__", None)  # helpconfig writes with debugfile.write
    name = getattr(stream, "name", None)
    if stream is not None and isinstance(name, str) and hasattr(stream, "seek"):
        stream.flush()
        path = Path(name)
        text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
        clean = redaction()(text)
        if clean != text:
            stream.seek(0)
            stream.write(clean)
            stream.truncate()
            stream.flush()
    trace_root.setwriter(RedactingTraceWriter(writer, redaction))
    return True


def redact_metadata(config: Any, redact: Redact, target: str) -> None:
    """pytest-metadata's environment table (the HTML report's, the JUnit properties it adds):
    its values redacted, and the run's target added (already described without secrets)."""
    try:
        from pytest_metadata.plugin import metadata_key
    except ImportError:
        return
    metadata = config.stash.get(metadata_key, None)
    if not metadata:
        return

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return redact(value)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    for key in list(metadata):
        metadata[key] = clean(metadata[key])
    metadata["cron-dryrun target"] = redact(target)
