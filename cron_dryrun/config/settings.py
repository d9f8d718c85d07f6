"""One frozen Settings object, resolved once: CLI > environment > ini > default.

Pure: takes plain mappings, so each layer is tested without pytest. The
plugin feeds it ``config.getoption`` / ``os.environ`` / ``config.getini``
values once, at configure time; nothing reads those sources afterwards.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from cron_dryrun.config.db_url import (
    InsecureDatabaseUrl,
    check_connect_timeout,
    is_keyword_dsn,
    secure_dsn,
)
from cron_dryrun.config.dsn_rules import dsn_problem
from cron_dryrun.errors import (
    SettingsError as SettingsError,
)  # re-exported: its home before errors.py
from cron_dryrun.redaction import (
    SECRET_VARIABLES,
    first_wording_without,
    secrets_from_environment,
    without_userinfo,
)

DB_BACKENDS = ("auto", "url", "testcontainers", "embedded")
CRON_METHODS = ("POST", "GET")
STANDIN_COMPRESSIONS = ("none", "gzip", "br", "zstd")
OPENAI_USAGE_SOURCES = ("export", "api")
DEFAULT_OPENAI_BASE_URL = "https://api.openai.com"
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


@dataclass(frozen=True)
class OptionSpec:
    """One setting as it enters: CLI flag, env variable, ini key, default, help."""

    name: str
    flag: str | None
    env: str | None
    help: str
    default: Any = None
    multiple: bool = False
    is_flag: bool = False

    @property
    def ini(self) -> str:
        return f"cron_dryrun_{self.name}"

    def where(self) -> str:
        places = [p for p in (self.flag, self.env) if p]
        return " / ".join(places) if places else self.ini


OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "cron_url",
        "--cron-url",
        "CRON_URL",
        "full URL of /api/cron/daily-usage; unset: the local stack",
    ),
    OptionSpec(
        "database_url",
        "--database-url",
        "DATABASE_URL",
        "the app's PostgreSQL DSN; unset: provisioned by --db-backend",
    ),
    OptionSpec(
        "db_backend", "--db-backend", "DB_BACKEND", "auto, url, testcontainers or embedded", "auto"
    ),
    OptionSpec(
        "postgres_image",
        "--postgres-image",
        "POSTGRES_IMAGE",
        "image for the testcontainers backend",
        DEFAULT_POSTGRES_IMAGE,
    ),
    OptionSpec(
        "cron_method",
        "--cron-method",
        "CRON_METHOD",
        "POST (runbook) or GET (platform scheduler)",
        "POST",
    ),
    OptionSpec(
        "cron_timeout",
        "--cron-timeout",
        "CRON_TIMEOUT",
        "seconds to wait for the cron's answer",
        300.0,
    ),
    OptionSpec(
        "openai_export",
        "--openai-export",
        "OPENAI_EXPORT",
        "OpenAI usage export file or folder (repeatable; env: os.pathsep-separated)",
        (),
        multiple=True,
    ),
    OptionSpec(
        "openai_usage",
        "--openai-usage",
        "OPENAI_USAGE",
        "where the OpenAI usage comes from: export (files) or api (fetched with OPENAI_ADMIN_KEY)",
        "export",
    ),
    OptionSpec(
        "openai_base_url",
        "--openai-base-url",
        "OPENAI_BASE_URL",
        "the OpenAI API for --openai-usage=api; default https://api.openai.com (local stack: the stand-in)",
    ),
    OptionSpec(
        "parity_threshold",
        "--parity-threshold",
        "PARITY_THRESHOLD",
        "max relative token delta, in (0, 1)",
        0.02,
    ),
    OptionSpec(
        "dry_run_start",
        "--dry-run-start",
        "DRY_RUN_START",
        "ISO start of the 48 h dry run; default: the first ledger entry",
    ),
    OptionSpec("audit_dir", "--audit-dir", "AUDIT_DIR", "evidence root", "audit"),
    OptionSpec(
        "run_label",
        "--run-label",
        "RUN_LABEL",
        "label of this run in summary.md and the notes",
        "Dry run",
    ),
    OptionSpec(
        "allow_issue_code",
        "--allow-issue-code",
        "ALLOW_ISSUE_CODE",
        "issuesByCode entries that only warn (repeatable; env: comma-separated)",
        DEFAULT_ALLOWED_ISSUE_CODES,
        multiple=True,
    ),
    OptionSpec(
        "promotion_gate",
        "--promotion-gate",
        None,
        "also require a complete 48 h ledger for GO",
        False,
        is_flag=True,
    ),
    OptionSpec(
        "allow_destructive",
        "--allow-destructive",
        None,
        "permit the rollback check to delete rows",
        False,
        is_flag=True,
    ),
    OptionSpec(
        "ca_bundle",
        "--ca-bundle",
        "CRON_CA_BUNDLE",
        "PEM bundle of the private CA that signed the cron's TLS certificate",
    ),
    OptionSpec(
        "db_connect_timeout",
        "--db-connect-timeout",
        "DB_CONNECT_TIMEOUT",
        "seconds to keep retrying the first database connection (a waking Neon compute)",
        30.0,
    ),
    OptionSpec(
        "allow_insecure_db",
        "--allow-insecure-db",
        None,
        "permit sslmode=disable to a database that is not on this machine",
        False,
        is_flag=True,
    ),
    OptionSpec("fault", "--fault", None, "local stack only: inject one stand-in fault", "none"),
    OptionSpec(
        "standin_compress",
        "--standin-compress",
        None,
        "local stack only: the stand-in's edge compresses answers (none, gzip, br, zstd)",
        "none",
    ),
    OptionSpec(
        "standin_protection",
        "--standin-protection",
        None,
        "local stack only: the stand-in's edge behaves like Vercel Deployment Protection",
        False,
        is_flag=True,
    ),
    OptionSpec(
        "require_staging",
        "--require-staging",
        None,
        "refuse to fall back to the local stack: CRON_URL must be set [CRON_DRYRUN_TARGET=staging]",
        False,
        is_flag=True,
    ),
)
# CRON_DRYRUN_TARGET=staging is the environment's --require-staging (tox -e staging sets it).
TARGET_ENV = "CRON_DRYRUN_TARGET"
TARGET_VALUES = ("staging", "auto")
OPTIONS_BY_NAME = {spec.name: spec for spec in OPTIONS}
# Read from the environment only (no flag, no ini key): secrets, TLS, the CI's own variables.
ENVIRONMENT_ONLY: tuple[str, ...] = (
    "CRON_SECRET",
    "OPENAI_ADMIN_KEY",
    "OPENAI_ADMIN_KEYS",
    "SSL_CERT_FILE",
    "VERCEL_AUTOMATION_BYPASS_SECRET",
    "GITHUB_ACTIONS",
    "GITHUB_STEP_SUMMARY",
    TARGET_ENV,
)


def environment_variables() -> tuple[str, ...]:
    """Every variable a run's settings read, in table order: what ``tox -e staging`` must pass."""
    names = [spec.env for spec in OPTIONS if spec.env]
    names += [*ENVIRONMENT_ONLY, *SECRET_VARIABLES]
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class Settings:
    """Everything a dry run is configured by. Built only by ``resolve_settings``."""

    cron_url: str | None = field(default=None, repr=False)  # may hold userinfo
    cron_secret: str | None = field(default=None, repr=False)
    # every SECRET_VARIABLES value from the environment (redaction.py), for the redactor
    extra_secrets: tuple[str, ...] = field(default=(), repr=False)
    database_url: str | None = field(default=None, repr=False)
    db_backend: str = "auto"
    postgres_image: str = DEFAULT_POSTGRES_IMAGE
    cron_method: str = "POST"
    cron_timeout: float = 300.0
    openai_export: tuple[Path, ...] = ()
    openai_usage: str = "export"
    openai_base_url: str | None = None
    openai_admin_keys: tuple[str, ...] = field(default=(), repr=False)
    parity_threshold: float = 0.02
    dry_run_start: datetime | None = None
    audit_dir: Path = Path("audit")
    run_label: str = "Dry run"
    allow_issue_code: tuple[str, ...] = DEFAULT_ALLOWED_ISSUE_CODES
    promotion_gate: bool = False
    allow_destructive: bool = False
    fault: str = "none"
    ca_bundle: Path | None = None
    ssl_cert_file: Path | None = None  # SSL_CERT_FILE, read explicitly (httpx ignores the env)
    db_connect_timeout: float = 30.0
    allow_insecure_db: bool = False
    standin_compress: str = "none"
    standin_protection: bool = False
    # Vercel Deployment Protection's bypass (x-vercel-protection-bypass): environment only
    vercel_bypass_secret: str | None = field(default=None, repr=False)
    # GitHub Actions (GITHUB_ACTIONS=true): step summary file and error annotations
    github_actions: bool = False
    github_step_summary: Path | None = None
    require_staging: bool = False

    @property
    def is_remote(self) -> bool:
        """True when a real cron URL was given: staging, not the local stack."""
        return self.cron_url is not None

    @property
    def target_name(self) -> str:
        return without_userinfo(self.cron_url) if self.cron_url else "local stack"

    def local_stack_problem(self) -> str | None:
        """Why this run must not build the local stack, or None (checked before anything is sent)."""
        if self.is_remote:
            return None
        if self.require_staging:
            return (
                "this run must target staging (--require-staging / CRON_DRYRUN_TARGET=staging, as "
                "tox -e staging sets), but CRON_URL is not set, and it never falls back to the local "
                "stack: export CRON_URL=https://<staging host>/api/cron/daily-usage with CRON_SECRET, "
                "DATABASE_URL and OPENAI_EXPORT"
            )
        if self.database_url and self.db_backend == "auto":
            return (
                "DATABASE_URL is set but CRON_URL is not: to run against staging, export "
                "CRON_URL=https://<staging host>/api/cron/daily-usage (with CRON_SECRET and "
                "OPENAI_EXPORT); to build the local stack on the server in DATABASE_URL (it creates "
                "and drops a scratch database there), pass --db-backend=url; to run on a provisioned "
                "local database, unset DATABASE_URL"
            )
        return None

    def missing_remote_configuration(self) -> list[str]:
        """What a remote run lacks, each naming the variable and how to set it."""
        if not self.is_remote:
            return []
        missing = []
        if not self.cron_secret:
            missing.append("CRON_SECRET is not set: export CRON_SECRET=<staging secret> (env only)")
        if not self.database_url:
            missing.append(
                "DATABASE_URL is not set: export DATABASE_URL=postgres://... "
                "or pass --database-url (the staging database the cron writes to)"
            )
        if self.openai_usage == "api":
            if not self.openai_admin_keys:
                missing.append(
                    "OPENAI_ADMIN_KEY is not set: --openai-usage=api needs an admin key with usage "
                    "read in OPENAI_ADMIN_KEY (or OPENAI_ADMIN_KEYS, one per organisation; env only)"
                )
        elif not self.openai_export:
            missing.append(
                "OPENAI_EXPORT is not set: pass --openai-export PATH "
                "(the OpenAI usage export CSV or a folder of them) or set OPENAI_EXPORT"
            )
        return missing


WEAK_SECRET_LENGTH = 16


def secret_problem(name: str, value: str) -> str | None:
    """Why ``value`` cannot be sent as a header secret; the message never quotes the value."""
    if not value.strip():
        return f"{name} is blank: set it to the secret the app expects"
    if value != value.strip():
        return (
            f"{name} has leading or trailing whitespace (often a newline read from a file "
            "or `echo`): strip it"
        )
    for position, char in enumerate(value, start=1):
        if ord(char) < 0x20 or ord(char) == 0x7F:
            return (
                f"{name} contains a control character (code {ord(char)}) at position {position}: "
                "a header value must be printable ASCII"
            )
        if ord(char) > 0x7E:
            return (
                f"{name} contains a non-ASCII character at position {position}: "
                "a header value must be printable ASCII"
            )
    return None


def weak_secret_warning(name: str, value: str) -> str | None:
    """The warning for a short secret, in the first wording that holds no form of the secret:
    the redactor would otherwise cut the warning into a hint ("a secret [REDACTED]er than")."""
    if len(value) >= WEAK_SECRET_LENGTH:
        return None
    n, weak = len(value), WEAK_SECRET_LENGTH
    wordings = (
        f"warning: {name} is {n} characters long: a secret shorter than {weak} characters is "
        "weak, and hard to redact (it may also be ordinary text); use a long random secret",
        f"warning: {name} has {n} characters: under {weak} is weak and hard to redact; "
        "use a long random one",
        f"warning: {name}: {n} < {weak} characters; use a long random value",
        f"warning: {name}: {n} < {weak}",
        f"warning: {n} < {weak}",
    )
    return first_wording_without(wordings, [value])


def _is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_url(url: str) -> bool:
    return _is_loopback_host(urlsplit(url).hostname or "")


class AdminKey(str):
    """An OpenAI admin key: the value itself, but a repr (tracebacks, ``-l``) that hides it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "AdminKey('[REDACTED]')"


def admin_keys_from_env(env: Mapping[str, str]) -> tuple[str, ...]:
    """``OPENAI_ADMIN_KEYS`` (comma-separated, one per organisation) when set, else
    ``OPENAI_ADMIN_KEY``; blanks dropped, order kept (it numbers the organisations)."""
    many = env.get("OPENAI_ADMIN_KEYS", "")
    if many.strip():
        return tuple(AdminKey(k.strip()) for k in many.split(",") if k.strip())
    one = env.get("OPENAI_ADMIN_KEY", "").strip()
    return (AdminKey(one),) if one else ()


def normalise_base_url(url: str) -> str:
    """``https://api.openai.com``, also when given with a trailing ``/v1`` as SDKs write it."""
    url = url.strip().rstrip("/")
    return url.removesuffix("/v1")


def base_url_problem(url: str, is_loopback: bool) -> str | None:
    """Why ``url`` cannot carry admin keys, or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"expected an http(s) URL like {DEFAULT_OPENAI_BASE_URL} (got {url!r})"
    if parts.scheme != "https" and not is_loopback:
        return f"admin keys are sent only over https to a non-loopback host (got {url!r})"
    if parts.username or parts.password:
        return "the URL must not carry credentials: admin keys come from OPENAI_ADMIN_KEY(S)"
    return None


def _fail(spec: OptionSpec, value: object, why: str) -> SettingsError:
    return SettingsError(f"{spec.where()}: {why} (got {value!r})")


_NOT_SHOWN = "value not shown: it may hold a password"
# The keywords this suite accepts in a keyword DSN: a subset of libpq's (dsn_rules.LIBPQ_KEYWORDS)
# without the ones that carry a second secret the redactor does not know (sslpassword) or that
# change what a connection is (replication).
ACCEPTED_DSN_KEYWORDS = frozenset(
    {
        "host",
        "hostaddr",
        "port",
        "dbname",
        "user",
        "password",
        "passfile",
        "connect_timeout",
        "options",
        "application_name",
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "sslnegotiation",
        "target_session_attrs",
        "channel_binding",
        "service",
        "gssencmode",
        "keepalives",
        "require_auth",
    }
)


def _check_url(spec: OptionSpec, value: str, schemes: Sequence[str]) -> str:
    """A URL with one of ``schemes`` and a host. The error never echoes the value: a URL
    whose password is not percent-encoded cannot be redacted reliably."""
    try:
        parts = urlsplit(value)
        hostname = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        parts, hostname = None, None
    # libpq URLs may name the host (or a socket directory) in the query: ?host=/run/postgresql
    has_host = parts is not None and (bool(hostname) or "host=" in parts.query)
    if parts is None or parts.scheme not in schemes or not has_host:
        # a value without userinfo or keywords holds no password: it helps to see it
        shown = _NOT_SHOWN if "@" in value or "=" in value else f"got {value!r}"
        raise SettingsError(
            f"{spec.where()}: expected a URL like {schemes[0]}://host/..., with a scheme among "
            f"{', '.join(schemes)}, and any user or password percent-encoded ({shown})"
        )
    if parts.password is not None and "%" in parts.password:
        try:
            unquote(parts.password, errors="strict")
        except UnicodeDecodeError:
            raise SettingsError(
                f"{spec.where()}: the password's percent-encoding is not valid UTF-8 ({_NOT_SHOWN})"
            ) from None
        if re.search(r"%(?![0-9A-Fa-f]{2})", parts.password):
            raise SettingsError(
                f"{spec.where()}: the password has a '%' that is not a percent-escape; encode it "
                f"as %25 ({_NOT_SHOWN})"
            )
    return value


def _check_database_dsn(spec: OptionSpec, value: str) -> str:
    """A postgres:// URL, or a libpq keyword DSN (``host=... dbname=... password=...``),
    that libpq reads as this suite does (config.dsn_rules); refused quoting nothing."""
    problem = dsn_problem(value, keyword_form=is_keyword_dsn(value))
    if problem:
        raise SettingsError(f"{spec.where()}: {problem} ({_NOT_SHOWN})")
    if not is_keyword_dsn(value):
        return _check_url(spec, value, ("postgresql", "postgres"))
    keys = [k.lower() for k in re.findall(r"(?:^|\s)([A-Za-z_]+)\s*=", value)]
    unknown = sorted({k for k in keys if k not in ACCEPTED_DSN_KEYWORDS})
    if unknown:
        raise SettingsError(
            f"{spec.where()}: not a libpq keyword DSN: unknown keyword(s) {', '.join(unknown)} "
            f"({_NOT_SHOWN})"
        )
    if "host" not in keys and "hostaddr" not in keys and "service" not in keys:
        raise SettingsError(
            f"{spec.where()}: a keyword DSN must name host= (or hostaddr=, service=) ({_NOT_SHOWN})"
        )
    return value


def _as_float(spec: OptionSpec, value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise _fail(spec, value, "expected a number") from None


def _as_bool(spec: OptionSpec, value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise _fail(spec, value, "expected true or false")


def _split_multi(spec: OptionSpec, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        sep = "," if spec.name == "allow_issue_code" else None
        if sep is None:
            import os

            sep = os.pathsep
        return tuple(v.strip() for v in value.split(sep) if v.strip())
    return tuple(str(v) for v in cast("Iterable[object]", value))


def _pick(
    spec: OptionSpec,
    cli: Mapping[str, Any],
    env: Mapping[str, str],
    ini: Mapping[str, Any],
) -> Any:
    """The first layer that says something wins: CLI, then env, then ini, then default."""
    value = cli.get(spec.name)
    if value not in (None, [], (), False):
        return value
    if spec.env and env.get(spec.env, "").strip():
        return env[spec.env].strip()
    value = ini.get(spec.name)
    if value not in (None, "", [], ()):
        return value
    return spec.default


def parse_utc(text: str) -> datetime:
    """ISO 8601 to an aware UTC datetime; a naive value is taken as UTC."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def resolve_settings(
    cli: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    ini: Mapping[str, Any] | None = None,
) -> Settings:
    """Build and validate Settings from the three layers; raise SettingsError on a bad value."""
    cli = cli or {}
    env = env or {}
    ini = ini or {}
    raw = {spec.name: _pick(spec, cli, env, ini) for spec in OPTIONS}
    o = OPTIONS_BY_NAME

    cron_url = raw["cron_url"] or None
    if cron_url is not None:
        _check_url(o["cron_url"], cron_url, ("https", "http"))
    database_url = raw["database_url"] or None
    allow_insecure_db = _as_bool(o["allow_insecure_db"], raw["allow_insecure_db"])
    if database_url is not None:
        _check_database_dsn(o["database_url"], database_url)
        try:
            database_url = secure_dsn(database_url, allow_insecure_db)
        except InsecureDatabaseUrl as exc:
            raise SettingsError(f"{o['database_url'].where()}: {exc}") from None

    db_connect_timeout = _as_float(o["db_connect_timeout"], raw["db_connect_timeout"])
    try:
        check_connect_timeout(db_connect_timeout)
    except ValueError as exc:
        raise _fail(o["db_connect_timeout"], raw["db_connect_timeout"], str(exc)) from None
    ca_bundle = Path(str(raw["ca_bundle"])) if raw["ca_bundle"] else None
    if ca_bundle is not None and not ca_bundle.is_file():
        raise _fail(o["ca_bundle"], str(ca_bundle), "no such file: give the CA bundle's PEM file")
    ssl_cert_file = Path(env["SSL_CERT_FILE"]) if env.get("SSL_CERT_FILE", "").strip() else None
    if ssl_cert_file is not None and not ssl_cert_file.is_file():
        raise SettingsError(
            f"SSL_CERT_FILE: no such file (got {str(ssl_cert_file)!r}): point it at a PEM bundle or unset it"
        )

    db_backend = str(raw["db_backend"]).lower()
    if db_backend not in DB_BACKENDS:
        raise _fail(o["db_backend"], raw["db_backend"], f"expected one of {', '.join(DB_BACKENDS)}")
    if db_backend == "url" and cron_url is None and database_url and is_keyword_dsn(database_url):
        raise SettingsError(
            "--db-backend / DB_BACKEND is 'url': the local stack creates its database on that "
            "server, which needs a URL-form DSN (postgresql://user:pw@host:port/db), not keywords"
        )
    if db_backend == "url" and database_url is None:
        raise SettingsError(
            "--db-backend / DB_BACKEND is 'url' but no database URL was given: "
            "set DATABASE_URL or pass --database-url"
        )
    if cron_url is not None and db_backend in ("testcontainers", "embedded"):
        raise SettingsError(
            f"--db-backend / DB_BACKEND is {db_backend!r}, which provisions a local database, "
            "but --cron-url / CRON_URL points at a remote cron: give its DATABASE_URL instead"
        )

    cron_method = str(raw["cron_method"]).upper()
    if cron_method not in CRON_METHODS:
        raise _fail(o["cron_method"], raw["cron_method"], "expected POST or GET")

    cron_timeout = _as_float(o["cron_timeout"], raw["cron_timeout"])
    if not 0 < cron_timeout <= 3600:
        raise _fail(o["cron_timeout"], raw["cron_timeout"], "expected seconds in (0, 3600]")

    threshold = _as_float(o["parity_threshold"], raw["parity_threshold"])
    if not 0 < threshold < 1:
        raise _fail(
            o["parity_threshold"],
            raw["parity_threshold"],
            "expected a fraction strictly between 0 and 1 (0.02 means 2 %)",
        )

    dry_run_start = None
    if raw["dry_run_start"]:
        try:
            dry_run_start = parse_utc(str(raw["dry_run_start"]))
        except ValueError:
            raise _fail(
                o["dry_run_start"],
                raw["dry_run_start"],
                "expected an ISO time like 2025-10-07T02:00:00Z",
            ) from None

    fault = str(raw["fault"])
    if fault not in FAULTS:
        raise _fail(o["fault"], fault, f"unknown fault; known faults: {', '.join(FAULTS)}")
    if fault != "none" and cron_url is not None:
        raise SettingsError(
            f"--fault {fault} injects a fault into the local stand-in only, but --cron-url / CRON_URL "
            "points at a remote cron: drop --fault, or unset CRON_URL to use the local stack"
        )

    standin_compress = str(raw["standin_compress"]).lower()
    if standin_compress not in STANDIN_COMPRESSIONS:
        raise _fail(
            o["standin_compress"],
            raw["standin_compress"],
            f"expected one of {', '.join(STANDIN_COMPRESSIONS)}",
        )
    standin_protection = _as_bool(o["standin_protection"], raw["standin_protection"])
    if cron_url is not None and (standin_compress != "none" or standin_protection):
        raise SettingsError(
            "--standin-compress / --standin-protection change the local stand-in only, but "
            "--cron-url / CRON_URL points at a remote cron: drop them, or unset CRON_URL"
        )

    allowed = tuple(c.upper() for c in _split_multi(o["allow_issue_code"], raw["allow_issue_code"]))
    unknown = [c for c in allowed if c not in KNOWN_ISSUE_CODES]
    if unknown:
        raise _fail(
            o["allow_issue_code"],
            ",".join(unknown),
            f"unknown issue code; the app emits {', '.join(KNOWN_ISSUE_CODES)}",
        )

    openai_usage = str(raw["openai_usage"]).strip().lower()
    if openai_usage not in OPENAI_USAGE_SOURCES:
        raise _fail(o["openai_usage"], raw["openai_usage"], "expected export or api")
    openai_base_url = raw["openai_base_url"] or None
    if openai_base_url is not None:
        openai_base_url = normalise_base_url(str(openai_base_url))
        problem = base_url_problem(openai_base_url, is_loopback_url(openai_base_url))
        if problem:
            raise SettingsError(f"{o['openai_base_url'].where()}: {problem}")
    target_env = env.get(TARGET_ENV, "").strip().lower()
    if target_env and target_env not in TARGET_VALUES:
        raise SettingsError(
            f"{TARGET_ENV}: expected staging (refuse the local stack) or auto "
            f"(got {env[TARGET_ENV]!r})"
        )
    require_staging = (
        _as_bool(o["require_staging"], raw["require_staging"]) or target_env == "staging"
    )

    run_label = str(raw["run_label"]).strip()
    if not run_label or "\n" in run_label:
        raise _fail(o["run_label"], raw["run_label"], "expected a one-line, non-empty label")

    return Settings(
        cron_url=cron_url,
        cron_secret=env.get("CRON_SECRET") or None,
        extra_secrets=secrets_from_environment(env),
        database_url=database_url,
        db_backend=db_backend,
        postgres_image=str(raw["postgres_image"]),
        cron_method=cron_method,
        cron_timeout=cron_timeout,
        openai_export=tuple(
            Path(p) for p in _split_multi(o["openai_export"], raw["openai_export"])
        ),
        openai_usage=openai_usage,
        openai_base_url=openai_base_url,
        openai_admin_keys=admin_keys_from_env(env),
        parity_threshold=threshold,
        dry_run_start=dry_run_start,
        audit_dir=Path(str(raw["audit_dir"])),
        run_label=run_label,
        allow_issue_code=allowed,
        promotion_gate=_as_bool(o["promotion_gate"], raw["promotion_gate"]),
        allow_destructive=_as_bool(o["allow_destructive"], raw["allow_destructive"]),
        fault=fault,
        ca_bundle=ca_bundle,
        ssl_cert_file=ssl_cert_file,
        db_connect_timeout=db_connect_timeout,
        allow_insecure_db=allow_insecure_db,
        standin_compress=standin_compress,
        standin_protection=standin_protection,
        vercel_bypass_secret=env.get("VERCEL_AUTOMATION_BYPASS_SECRET") or None,
        github_actions=env.get("GITHUB_ACTIONS", "").strip().lower() == "true",
        github_step_summary=Path(env["GITHUB_STEP_SUMMARY"])
        if env.get("GITHUB_STEP_SUMMARY", "").strip()
        else None,
        require_staging=require_staging,
    )
