"""The settings table: every value a dry run or a command reads, one row each, with its flag,
environment variable, ini key, help, default, parser and choices.

The rows with a flag or an ini key are pytest's options (``OPTIONS``); the environment-only
rows (secrets, TLS, the CI's own variables) have neither and are read as given. Both the
plugin (``settings.resolve_settings``) and the ``cron-dryrun`` commands (``read_option``) read
through these rows: there is no second parser. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cron_dryrun.config import parsers
from cron_dryrun.config.parsers import DEFAULT_OPENAI_BASE_URL
from cron_dryrun.redaction import SECRET_VARIABLES

DB_BACKENDS = ("auto", "url", "testcontainers", "embedded")
CRON_METHODS = ("POST", "GET")
STANDIN_COMPRESSIONS = ("none", "gzip", "br", "zstd")
OPENAI_USAGE_SOURCES = ("export", "api")
DEFAULT_POSTGRES_IMAGE = "postgres:15-alpine"
# Codes the app can emit that do not block the gate by default (contract.md section 2).
DEFAULT_ALLOWED_ISSUE_CODES = ("PRICING_FALLBACK",)
KNOWN_ISSUE_CODES = (
    "SCHEMA_MISSING",
    "CONFIGURATION_ERROR",
    "SCOPE_MISSING",
    "UNAUTHORIZED",
    "PROVIDER_ERROR",
    "PRICING_FALLBACK",
    "UNKNOWN",
)
# Faults the stand-in can inject (issue 6). Kept here so a bad --fault stops the
# run at start, before any stack is built.
FAULTS = (
    "none",
    "auth-open",
    "auth-no-header",
    "auth-401-writes",
    "no-post",
    "flag-off",
    "flag-missing",
    "flag-string",
    "window-shift",
    "window-wide",
    "stale-update",
    "simulated",
    "simulated-count",
    "token-drift",
    "small-drift",
    "drop-window",
    "duplicate-rerun",
    "provider-error",
    "all-keys-fail",
    "pricing-fallback",
    "renamed-model",
    "null-breakdown",
    "html-500",
    "slow",
    "throttle",
    # the telemetry's counters (issue 27)
    "manual-fallback",
    "stored-updated-swapped",
    "warning-count-off",
    "fallback-keys-zero",
    "fallback-windows-off",
    "processed-users-off",
    "write-modes-off",
    "negative-count",
)
# CRON_DRYRUN_TARGET=staging is the environment's --require-staging (tox -e staging sets it).
TARGET_ENV = "CRON_DRYRUN_TARGET"
TARGET_VALUES = ("staging", "auto")
EVIDENCE_KEY_ENV = "CRON_DRYRUN_EVIDENCE_KEY"  # evidence.chain.EVIDENCE_KEY_VARIABLE


@dataclass(frozen=True)
class OptionSpec:
    """One setting as it enters (flag, variable, ini key, default, help) and how it is read
    (``parse``, ``choices``). ``secret``: never shown, environment only."""

    name: str
    flag: str | None
    env: str | None
    help: str
    default: Any = None
    parse: parsers.Parser = parsers.text
    choices: tuple[str, ...] = ()
    multiple: bool = False
    is_flag: bool = False
    secret: bool = False
    has_ini: bool = True  # False: environment only, no ini key and no flag

    @property
    def ini(self) -> str:
        return f"cron_dryrun_{self.name}"

    def where(self) -> str:
        places = [place for place in (self.flag, self.env) if place]
        return " / ".join(places) if places else self.ini

    def read(self, value: Any, where: str | None = None) -> Any:
        """``value`` parsed by this row's parser; errors name ``where`` (default: flag / env)."""
        return self.parse(self.where() if where is None else where, value)


def _target(where: str, value: object) -> str | None:
    chosen = str(value or "").strip().lower()
    if chosen and chosen not in TARGET_VALUES:
        raise parsers.fail(where, value, "expected staging (refuse the local stack) or auto")
    return chosen or None


def _flag(name: str, flag: str, help_text: str) -> OptionSpec:
    return OptionSpec(
        name, flag, None, help_text, default=False, parse=parsers.as_bool, is_flag=True
    )


def _secret(
    name: str, env: str, help_text: str, parse: parsers.Parser = parsers.as_given
) -> OptionSpec:
    return OptionSpec(
        name, None, env, help_text, default=None, parse=parse, secret=True, has_ini=False
    )


def _environment(name: str, env: str, help_text: str, parse: parsers.Parser) -> OptionSpec:
    return OptionSpec(name, None, env, help_text, default=None, parse=parse, has_ini=False)


OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "cron_url",
        "--cron-url",
        "CRON_URL",
        "full URL of /api/cron/daily-usage; unset: the local stack",
        parse=parsers.cron_url,
    ),
    OptionSpec(
        "database_url",
        "--database-url",
        "DATABASE_URL",
        "the app's PostgreSQL DSN; unset: provisioned by --db-backend",
        parse=parsers.database_dsn,
    ),
    OptionSpec(
        "db_backend",
        "--db-backend",
        "DB_BACKEND",
        "where the app database comes from",
        default="auto",
        parse=parsers.one_of(DB_BACKENDS, f"expected one of {', '.join(DB_BACKENDS)}", str.lower),
        choices=DB_BACKENDS,
    ),
    OptionSpec(
        "postgres_image",
        "--postgres-image",
        "POSTGRES_IMAGE",
        "image for the testcontainers backend",
        default=DEFAULT_POSTGRES_IMAGE,
    ),
    OptionSpec(
        "cron_method",
        "--cron-method",
        "CRON_METHOD",
        "the cron request's method (POST as the runbook sends it, GET as the platform scheduler)",
        default="POST",
        parse=parsers.one_of(CRON_METHODS, "expected POST or GET", str.upper),
        choices=CRON_METHODS,
    ),
    OptionSpec(
        "cron_timeout",
        "--cron-timeout",
        "CRON_TIMEOUT",
        "seconds to wait for the cron's answer",
        default=300.0,
        parse=parsers.number_in(0, 3600, "expected seconds in (0, 3600]"),
    ),
    OptionSpec(
        "openai_export",
        "--openai-export",
        "OPENAI_EXPORT",
        "OpenAI usage export file or folder (repeatable; env: os.pathsep-separated)",
        default=(),
        parse=parsers.paths,
        multiple=True,
    ),
    OptionSpec(
        "openai_usage",
        "--openai-usage",
        "OPENAI_USAGE",
        "where the OpenAI usage comes from (export files, or the usage api, read with OPENAI_ADMIN_KEY)",
        default="export",
        parse=parsers.one_of(
            OPENAI_USAGE_SOURCES, "expected export or api", lambda v: v.strip().lower()
        ),
        choices=OPENAI_USAGE_SOURCES,
    ),
    OptionSpec(
        "openai_base_url",
        "--openai-base-url",
        "OPENAI_BASE_URL",
        f"the OpenAI API for --openai-usage=api; default {DEFAULT_OPENAI_BASE_URL} "
        "(local stack: the stand-in)",
        parse=parsers.openai_base_url,
    ),
    OptionSpec(
        "parity_threshold",
        "--parity-threshold",
        "PARITY_THRESHOLD",
        "max relative token delta, in (0, 1)",
        default=0.02,
        parse=parsers.number_in(
            0, 1, "expected a fraction strictly between 0 and 1 (0.02 means 2 %)", high_open=True
        ),
    ),
    OptionSpec(
        "dry_run_start",
        "--dry-run-start",
        "DRY_RUN_START",
        "ISO start of the 48 h dry run; default: the first ledger entry",
        parse=parsers.utc_time,
    ),
    OptionSpec(
        "audit_dir",
        "--audit-dir",
        "AUDIT_DIR",
        "evidence root",
        default="audit",
        parse=parsers.path,
    ),
    OptionSpec(
        "run_label",
        "--run-label",
        "RUN_LABEL",
        "label of this run in summary.md and the notes",
        default="Dry run",
        parse=parsers.one_line,
    ),
    OptionSpec(
        "allow_issue_code",
        "--allow-issue-code",
        "ALLOW_ISSUE_CODE",
        "issuesByCode entries that only warn (repeatable; env: comma-separated)",
        default=DEFAULT_ALLOWED_ISSUE_CODES,
        parse=parsers.codes_among(KNOWN_ISSUE_CODES),
        choices=KNOWN_ISSUE_CODES,
        multiple=True,
    ),
    _flag("promotion_gate", "--promotion-gate", "also require a complete 48 h ledger for GO"),
    _flag("allow_destructive", "--allow-destructive", "permit the rollback check to delete rows"),
    OptionSpec(
        "ca_bundle",
        "--ca-bundle",
        "CRON_CA_BUNDLE",
        "PEM bundle of the private CA that signed the cron's TLS certificate",
        parse=parsers.ca_bundle,
    ),
    OptionSpec(
        "db_connect_timeout",
        "--db-connect-timeout",
        "DB_CONNECT_TIMEOUT",
        "seconds to keep retrying the first database connection (a waking Neon compute)",
        default=30.0,
        parse=parsers.connect_timeout,
    ),
    _flag(
        "allow_insecure_db",
        "--allow-insecure-db",
        "permit sslmode=disable to a database that is not on this machine",
    ),
    OptionSpec(
        "fault",
        "--fault",
        None,
        "local stack only: inject one stand-in fault",
        default="none",
        parse=parsers.one_of(FAULTS, f"unknown fault; known faults: {', '.join(FAULTS)}"),
        choices=FAULTS,
    ),
    OptionSpec(
        "standin_compress",
        "--standin-compress",
        None,
        "local stack only: the stand-in's edge compresses answers",
        default="none",
        parse=parsers.one_of(
            STANDIN_COMPRESSIONS, f"expected one of {', '.join(STANDIN_COMPRESSIONS)}", str.lower
        ),
        choices=STANDIN_COMPRESSIONS,
    ),
    _flag(
        "standin_protection",
        "--standin-protection",
        "local stack only: the stand-in's edge behaves like Vercel Deployment Protection",
    ),
    _flag(
        "require_staging",
        "--require-staging",
        "refuse to fall back to the local stack: CRON_URL must be set [CRON_DRYRUN_TARGET=staging]",
    ),
)
# Read from the environment only (no flag, no ini key): secrets, TLS, the CI's own variables.
ENVIRONMENT_ONLY_OPTIONS: tuple[OptionSpec, ...] = (
    _secret("cron_secret", "CRON_SECRET", "the cron's bearer secret"),
    _secret(
        "openai_admin_key",
        "OPENAI_ADMIN_KEY",
        "an OpenAI admin key with usage read",
        parsers.admin_key,
    ),
    _secret(
        "openai_admin_keys",
        "OPENAI_ADMIN_KEYS",
        "OpenAI admin keys, comma-separated, one per organisation",
        parsers.admin_keys,
    ),
    _environment("ssl_cert_file", "SSL_CERT_FILE", "a PEM bundle of trusted CAs", parsers.pem_file),
    _secret(
        "vercel_bypass_secret",
        "VERCEL_AUTOMATION_BYPASS_SECRET",
        "Vercel Deployment Protection's bypass (x-vercel-protection-bypass)",
    ),
    _environment(
        "github_actions", "GITHUB_ACTIONS", "true in a GitHub Actions job", parsers.true_text
    ),
    _environment(
        "github_step_summary",
        "GITHUB_STEP_SUMMARY",
        "the job's step summary file",
        parsers.optional_path,
    ),
    _environment("target", TARGET_ENV, "staging: the environment's --require-staging", _target),
    _secret("evidence_key", EVIDENCE_KEY_ENV, "signs each ledger line and manifest (HMAC-SHA256)"),
)
TABLE = OPTIONS + ENVIRONMENT_ONLY_OPTIONS
OPTIONS_BY_NAME = {spec.name: spec for spec in TABLE}
# environment-only rows that are not fields of Settings (read where they are used)
NOT_SETTINGS = ("openai_admin_key", "target", "evidence_key")


def environment_variables() -> tuple[str, ...]:
    """Every variable a run's settings read, in table order: what ``tox -e staging`` must pass."""
    names = [spec.env for spec in TABLE if spec.env]
    names += list(SECRET_VARIABLES)
    return tuple(dict.fromkeys(names))


def pick(
    spec: OptionSpec, cli: Mapping[str, Any], env: Mapping[str, str], ini: Mapping[str, Any]
) -> Any:
    """The first layer that says something wins: CLI, then env, then ini, then default. An
    environment-only row takes its variable as given (a secret's stray blank is reported)."""
    if not spec.has_ini:
        return (env.get(spec.env) if spec.env else None) or spec.default
    value = cli.get(spec.name)
    if value not in (None, [], (), False):
        return value
    if spec.env and env.get(spec.env, "").strip():
        return env[spec.env].strip()
    value = ini.get(spec.name)
    if value not in (None, "", [], ()):
        return value
    return spec.default


def read_option(name: str, given: Any, env: Mapping[str, str], where: str | None = None) -> Any:
    """A command's option by its row: the flag's value when given, else the variable's, else
    the default, parsed by the row's parser (no ini layer: a command reads no pytest ini).
    Errors name ``where``, by default the flag and the variable; a value from the variable
    alone is named by the variable."""
    spec = OPTIONS_BY_NAME[name]
    if not spec.has_ini:  # environment only: taken as given, as resolve_settings takes it
        return spec.read(pick(spec, {}, env, {}), spec.env if where is None else where)
    if given not in (None, [], (), False):
        return spec.read(given, where)
    if spec.env and str(env.get(spec.env, "")).strip():
        return spec.read(pick(spec, {}, env, {}), spec.env if where is None else where)
    return spec.read(spec.default, where)
