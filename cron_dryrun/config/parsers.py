"""How each setting's value is read: one parser per kind of value, named by the table's rows.

A parser is ``parse(where, value)``: ``where`` names where the value came from (``--flag /
VARIABLE``, or ``""`` when argparse names the flag itself), ``value`` is the raw text (or the
typed default); it returns the typed value or raises ``SettingsError`` naming ``where``, the
form wanted and, unless it may hold a password, the value. Pure, except that a file option
checks that its file exists.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Sequence
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
from cron_dryrun.errors import SettingsError

Parser = Callable[[str, Any], Any]
DEFAULT_OPENAI_BASE_URL = "https://api.openai.com"
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


def fail(where: str, value: object, why: str) -> SettingsError:
    """The one wording of a bad value: ``where: why (got value)``."""
    return SettingsError(f"{where}: {why} (got {value!r})" if where else f"{why} (got {value!r})")


def _said(where: str, text: str) -> SettingsError:
    return SettingsError(f"{where}: {text}" if where else text)


# -- plain values ---------------------------------------------------------------------------------


def text(where: str, value: object) -> str:
    return str(value)


def path(where: str, value: object) -> Path:
    return Path(str(value))


def as_float(where: str, value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise fail(where, value, "expected a number") from None


def as_bool(where: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise fail(where, value, "expected true or false")


def number_in(low: float, high: float, why: str, *, high_open: bool = False) -> Parser:
    """A number in (low, high] (or (low, high) with ``high_open``)."""

    def parse(where: str, value: object) -> float:
        number = as_float(where, value)
        if not (low < number < high if high_open else low < number <= high):
            raise fail(where, value, why)
        return number

    return parse


def connect_timeout(where: str, value: object) -> float:
    """Seconds by ``db_url.check_connect_timeout``; a value that is not a number is refused
    like one out of range (NaN fails the range too)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = float("nan")
    try:
        return check_connect_timeout(number)
    except ValueError as exc:
        raise fail(where, value, str(exc)) from None


def one_of(choices: Sequence[str], why: str, normalise: Callable[[str], str] = str) -> Parser:
    """One of ``choices`` after ``normalise`` (case, blanks); ``why`` says the values."""

    def parse(where: str, value: object) -> str:
        chosen = normalise(str(value))
        if chosen not in choices:
            raise fail(where, value, why)
        return chosen

    return parse


def parse_utc(value: str) -> datetime:
    """ISO 8601 to an aware UTC datetime; a naive value is taken as UTC."""
    parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def utc_time(where: str, value: object) -> datetime | None:
    if not value:
        return None
    try:
        return parse_utc(str(value))
    except ValueError:
        raise fail(where, value, "expected an ISO time like 2025-10-07T02:00:00Z") from None


def one_line(where: str, value: object) -> str:
    label = str(value).strip()
    if not label or "\n" in label:
        raise fail(where, value, "expected a one-line, non-empty label")
    return label


def ca_bundle(where: str, value: object) -> Path | None:
    if not value:
        return None
    file = Path(str(value))
    if not file.is_file():
        raise fail(where, str(file), "no such file: give the CA bundle's PEM file")
    return file


def _split(value: object, sep: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(sep) if v.strip())
    return tuple(str(v) for v in cast("Iterable[object]", value))


def paths(where: str, value: object) -> tuple[Path, ...]:
    """Repeated flag values, or one variable separated by ``os.pathsep``."""
    return tuple(Path(p) for p in _split(value, os.pathsep))


def codes_among(known: Sequence[str]) -> Parser:
    """Repeated flag values, or one comma-separated variable, upper-cased, each in ``known``."""

    def parse(where: str, value: object) -> tuple[str, ...]:
        codes = tuple(c.upper() for c in _split(value, ","))
        unknown = [c for c in codes if c not in known]
        if unknown:
            why = f"unknown issue code; the app emits {', '.join(known)}"
            raise fail(where, ",".join(unknown), why)
        return codes

    return parse


# -- URLs and DSNs --------------------------------------------------------------------------------


def _is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_url(url: str) -> bool:
    return _is_loopback_host(urlsplit(url).hostname or "")


def check_url(where: str, value: str, schemes: Sequence[str]) -> str:
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
        raise _said(
            where,
            f"expected a URL like {schemes[0]}://host/..., with a scheme among "
            f"{', '.join(schemes)}, and any user or password percent-encoded ({shown})",
        )
    if parts.password is not None and "%" in parts.password:
        try:
            unquote(parts.password, errors="strict")
        except UnicodeDecodeError:
            raise _said(
                where, f"the password's percent-encoding is not valid UTF-8 ({_NOT_SHOWN})"
            ) from None
        if re.search(r"%(?![0-9A-Fa-f]{2})", parts.password):
            raise _said(
                where,
                f"the password has a '%' that is not a percent-escape; encode it as %25 ({_NOT_SHOWN})",
            )
    return value


def cron_url(where: str, value: object) -> str | None:
    return check_url(where, str(value), ("https", "http")) if value else None


def database_dsn(where: str, value: object) -> str | None:
    """A postgres:// URL, or a libpq keyword DSN (``host=... dbname=... password=...``),
    that libpq reads as this suite does (config.dsn_rules); refused quoting nothing."""
    if not value:
        return None
    dsn = str(value)
    problem = dsn_problem(dsn, keyword_form=is_keyword_dsn(dsn))
    if problem:
        raise _said(where, f"{problem} ({_NOT_SHOWN})")
    if not is_keyword_dsn(dsn):
        return check_url(where, dsn, ("postgresql", "postgres"))
    keys = [k.lower() for k in re.findall(r"(?:^|\s)([A-Za-z_]+)\s*=", dsn)]
    unknown = sorted({k for k in keys if k not in ACCEPTED_DSN_KEYWORDS})
    if unknown:
        raise _said(
            where,
            f"not a libpq keyword DSN: unknown keyword(s) {', '.join(unknown)} ({_NOT_SHOWN})",
        )
    if "host" not in keys and "hostaddr" not in keys and "service" not in keys:
        raise _said(where, f"a keyword DSN must name host= (or hostaddr=, service=) ({_NOT_SHOWN})")
    return dsn


def secured_dsn(where: str, dsn: str, allow_insecure: bool) -> str:
    """``secure_dsn``: ``sslmode=require`` added for a remote host; ``sslmode=disable`` to one
    refused, naming ``where``, unless allowed. The rule of every connection, run and commands."""
    try:
        return secure_dsn(dsn, allow_insecure)
    except InsecureDatabaseUrl as exc:
        raise _said(where, str(exc)) from None


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


def openai_base_url(where: str, value: object) -> str | None:
    if not value:
        return None
    url = normalise_base_url(str(value))
    problem = base_url_problem(url, is_loopback_url(url))
    if problem:
        raise _said(where, problem)
    return url


# -- environment-only values: read as given (a secret's stray blank is reported, not hidden) -----


def as_given(where: str, value: object) -> str | None:
    return str(value) if value else None


def true_text(where: str, value: object) -> bool:
    """``GITHUB_ACTIONS``: exactly ``true`` (any case, blanks ignored), as the runner sets it."""
    return str(value or "").strip().lower() == "true"


def optional_path(where: str, value: object) -> Path | None:
    return Path(str(value)) if str(value or "").strip() else None


def pem_file(where: str, value: object) -> Path | None:
    """``SSL_CERT_FILE``: read explicitly (httpx ignores the variable); must exist when set."""
    file = optional_path(where, value)
    if file is not None and not file.is_file():
        raise SettingsError(
            f"{where}: no such file (got {str(file)!r}): point it at a PEM bundle or unset it"
        )
    return file


class AdminKey(str):
    """An OpenAI admin key: the value itself, but a repr (tracebacks, ``-l``) that hides it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "AdminKey('[REDACTED]')"


def admin_keys(where: str, value: object) -> tuple[str, ...] | None:
    """``OPENAI_ADMIN_KEYS``: comma-separated, one per organisation, blanks dropped, order kept
    (it numbers the organisations); None when unset or blank."""
    many = str(value or "")
    if not many.strip():
        return None
    return tuple(AdminKey(k.strip()) for k in many.split(",") if k.strip())


def admin_key(where: str, value: object) -> tuple[str, ...]:
    """``OPENAI_ADMIN_KEY``: one key; () when unset or blank."""
    one = str(value or "").strip()
    return (AdminKey(one),) if one else ()
