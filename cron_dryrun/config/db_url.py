"""The app database URL as Neon needs it: TLS to anything that is not this machine.

Pure. A non-loopback ``DATABASE_URL`` without ``sslmode`` gets ``sslmode=require``
(Neon requires TLS; libpq's default, ``prefer``, would silently fall back to clear
text); a loopback one is left alone. ``sslmode=disable`` to a non-loopback host is
refused unless the operator says ``--allow-insecure-db``.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from cron_dryrun.errors import CronDryrunError

CONNECT_TIMEOUT_S = 10  # libpq's connect_timeout on every read-only connection
# the longest wait for a suspended database (--db-connect-timeout / DB_CONNECT_TIMEOUT)
MAX_DB_CONNECT_TIMEOUT_S = 600.0


def check_connect_timeout(seconds: float) -> float:
    """``seconds`` when it is a wait the suite accepts, (0, MAX_DB_CONNECT_TIMEOUT_S]; else
    ValueError saying the range. The one rule for the settings and every command."""
    if not 0 < seconds <= MAX_DB_CONNECT_TIMEOUT_S:  # NaN fails this too
        raise ValueError(f"expected seconds in (0, {MAX_DB_CONNECT_TIMEOUT_S:g}]")
    return seconds


class InsecureDatabaseUrl(CronDryrunError, ValueError):
    """sslmode=disable towards another machine; the message names the way out."""


def _loopback(host: str) -> bool:
    if not host or host.startswith("/") or host == "localhost":  # no host / a socket directory
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def database_hosts(url: str) -> list[str]:
    """Every host the URL names: the netloc's (a,b,c for multi-host) and ``?host=`` ones."""
    parts = urlsplit(url)
    hostport = parts.netloc.rsplit("@", 1)[-1]
    hosts = []
    for item in hostport.split(","):
        host = item.rsplit(":", 1)[0] if not item.startswith("[") else item.split("]")[0] + "]"
        if host:
            hosts.append(host.lower())
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "host":
            hosts.extend(h for h in value.split(",") if h)
    return hosts


def is_loopback_database(url: str) -> bool:
    return all(_loopback(h) for h in database_hosts(url))


def secure_database_url(url: str, allow_insecure: bool = False) -> str:
    """``url`` with ``sslmode=require`` added for a remote host; raises on an insecure one."""
    if is_loopback_database(url):
        return url
    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    modes = [v for k, v in params if k == "sslmode"]
    if not modes:
        query = urlencode([*params, ("sslmode", "require")])
        return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
    if modes[-1] == "disable" and not allow_insecure:
        hosts = ", ".join(h for h in database_hosts(url) if not _loopback(h))
        raise InsecureDatabaseUrl(
            f"sslmode=disable sends the database password and every row in clear text to "
            f"{hosts}, which is not this machine: drop sslmode=disable (Neon requires TLS; "
            "sslmode=require is added when none is given), or pass --allow-insecure-db if this "
            "network is trusted"
        )
    return url


# a libpq keyword DSN (``host=... dbname=...``) rather than a URL
_KEYWORD_DSN = re.compile(r"^\s*[A-Za-z_]+\s*=")


def is_keyword_dsn(value: str) -> bool:
    return bool(_KEYWORD_DSN.match(value))


def secure_dsn(dsn: str, allow_insecure: bool = False) -> str:
    """``secure_database_url`` for either DSN form, URL or libpq keywords: ``sslmode=require``
    added for a remote host, ``sslmode=disable`` to one refused unless allowed."""
    if not is_keyword_dsn(dsn):
        return secure_database_url(dsn, allow_insecure)
    # the keyword form's hosts and sslmode, judged through the URL rule
    hosts = re.findall(r"(?:^|\s)(?:host|hostaddr)\s*=\s*'?([^'\s]+)", dsn)
    probe = "postgresql:///?" + "&".join(f"host={h}" for h in hosts) if hosts else "postgresql:///"
    modes = re.findall(r"(?:^|\s)sslmode\s*=\s*'?([^'\s]+)", dsn)
    if not modes:
        return dsn if secure_database_url(probe) == probe else f"{dsn} sslmode=require"
    if modes[-1] == "disable":
        secure_database_url(f"{probe}{'&' if hosts else '?'}sslmode=disable", allow_insecure)
    return dsn


def with_connect_timeout(dsn: str, seconds: int) -> str:
    """``dsn`` (URL or keywords) with libpq's ``connect_timeout`` set to ``seconds``.

    What ``psycopg.conninfo.make_conninfo(dsn, connect_timeout=seconds)`` gives, without
    importing the driver (~0.13 s) on the ADBC path, which never needs it: libpq keeps the
    last value of a repeated keyword or URL parameter, so appending one overrides any
    earlier value and leaves every other part exactly as written.
    """
    setting = f"connect_timeout={int(seconds)}"
    if not is_keyword_dsn(dsn) and dsn.strip():
        url = dsn.strip()
        if "?" not in url:
            return f"{url}?{setting}"
        return f"{url}{'' if url.endswith(('?', '&')) else '&'}{setting}"
    return f"{dsn.strip()} {setting}".strip()
