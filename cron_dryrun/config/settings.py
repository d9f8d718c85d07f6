"""One frozen Settings object, resolved once: CLI > environment > ini > default.

Pure: takes plain mappings, so each layer is tested without pytest. The
plugin feeds it ``config.getoption`` / ``os.environ`` / ``config.getini``
values once, at configure time; nothing reads those sources afterwards.
``resolve_settings`` is the table (config/options.py) applied, each row by its parser
(config/parsers.py), then the rules that tie one setting to another (``_cross_field_rules``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cron_dryrun.config.db_url import is_keyword_dsn
from cron_dryrun.config.options import (
    DEFAULT_ALLOWED_ISSUE_CODES,
    DEFAULT_POSTGRES_IMAGE,
    FAULTS,
    NOT_SETTINGS,
    OPTIONS,
    OPTIONS_BY_NAME,
    TABLE,
    OptionSpec,
    environment_variables,
    pick,
)
from cron_dryrun.config.parsers import (
    DEFAULT_OPENAI_BASE_URL,
    AdminKey,
    base_url_problem,
    is_loopback_url,
    normalise_base_url,
    parse_utc,
    secured_dsn,
)
from cron_dryrun.errors import SettingsError
from cron_dryrun.redaction import first_wording_without, secrets_from_environment, without_userinfo

# the names this module gave before the table moved to config/options.py and config/parsers.py
__all__ = [
    "DEFAULT_OPENAI_BASE_URL",
    "DEFAULT_POSTGRES_IMAGE",
    "FAULTS",
    "OPTIONS",
    "OPTIONS_BY_NAME",
    "AdminKey",
    "OptionSpec",
    "Settings",
    "SettingsError",
    "admin_keys_from_env",
    "base_url_problem",
    "environment_variables",
    "is_loopback_url",
    "normalise_base_url",
    "parse_utc",
    "resolve_settings",
    "secret_problem",
    "weak_secret_warning",
]


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


def admin_keys_from_env(env: Mapping[str, str]) -> tuple[str, ...]:
    """``OPENAI_ADMIN_KEYS`` (comma-separated, one per organisation) when set, else
    ``OPENAI_ADMIN_KEY``; blanks dropped, order kept (it numbers the organisations)."""
    many = OPTIONS_BY_NAME["openai_admin_keys"]
    if (keys := many.read(pick(many, {}, env, {}))) is not None:
        return tuple(keys)
    one = OPTIONS_BY_NAME["openai_admin_key"]
    return tuple(one.read(pick(one, {}, env, {})))


def resolve_settings(
    cli: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    ini: Mapping[str, Any] | None = None,
) -> Settings:
    """Build and validate Settings from the three layers; raise SettingsError on a bad value."""
    cli, env, ini = cli or {}, env or {}, ini or {}
    values = {spec.name: spec.read(pick(spec, cli, env, ini)) for spec in TABLE}
    return Settings(**_cross_field_rules(values), extra_secrets=secrets_from_environment(env))


def _cross_field_rules(values: dict[str, Any]) -> dict[str, Any]:
    """The rules that tie settings together, each naming both sides and the way out; returns
    the Settings fields (the environment-only rows that are not fields folded in or dropped)."""
    cron_url, database_url, db_backend = (
        values["cron_url"],
        values["database_url"],
        values["db_backend"],
    )
    if database_url is not None:
        where = OPTIONS_BY_NAME["database_url"].where()
        database_url = secured_dsn(where, database_url, values["allow_insecure_db"])
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
    fault = values["fault"]
    if fault != "none" and cron_url is not None:
        raise SettingsError(
            f"--fault {fault} injects a fault into the local stand-in only, but --cron-url / CRON_URL "
            "points at a remote cron: drop --fault, or unset CRON_URL to use the local stack"
        )
    if cron_url is not None and (
        values["standin_compress"] != "none" or values["standin_protection"]
    ):
        raise SettingsError(
            "--standin-compress / --standin-protection change the local stand-in only, but "
            "--cron-url / CRON_URL points at a remote cron: drop them, or unset CRON_URL"
        )
    many, one = values["openai_admin_keys"], values["openai_admin_key"]
    fields = {name: value for name, value in values.items() if name not in NOT_SETTINGS}
    fields.update(
        database_url=database_url,
        openai_admin_keys=many if many is not None else one,
        require_staging=values["require_staging"] or values["target"] == "staging",
    )
    return fields
