"""The database DSN read as libpq reads it, before libpq sees it; libpq's messages in our words.

Pure. Both forms are parsed completely: libpq keywords (``host=... password='a b'``, with
libpq's quoting rules) and URLs (``postgresql://user:password@host:port/db?k=v``, with
libpq's own reading of the userinfo: up to the *first* '@', where ``urlsplit`` takes the
last). Anything the two readers would take differently is refused: libpq would otherwise
answer with a parse error that quotes part of the password (``missing "=" after "..."``),
or connect to a host made of the password's tail. Every message names the rule and the fix
and quotes no part of the value.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from cron_dryrun.errors import CronDryrunError

# libpq's connection keywords (PostgreSQL 17, libpq-connect "Parameter Key Words")
LIBPQ_KEYWORDS = frozenset(
    {
        "host",
        "hostaddr",
        "port",
        "dbname",
        "user",
        "password",
        "passfile",
        "require_auth",
        "channel_binding",
        "connect_timeout",
        "client_encoding",
        "options",
        "application_name",
        "fallback_application_name",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "tcp_user_timeout",
        "replication",
        "gssencmode",
        "sslmode",
        "sslnegotiation",
        "sslcompression",
        "sslcert",
        "sslkey",
        "sslpassword",
        "sslcertmode",
        "sslrootcert",
        "sslcrl",
        "sslcrldir",
        "sslsni",
        "requirepeer",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "krbsrvname",
        "gsslib",
        "gssdelegation",
        "service",
        "target_session_attrs",
        "load_balance_hosts",
    }
)
URL_ONLY_PARAMETERS = frozenset({"ssl"})  # libpq maps ?ssl=true to sslmode=require
SECRET_KEYWORDS = frozenset({"password", "sslpassword"})
PERCENT_ENCODE = "percent-encode the password ('@' as %40, ':' as %3A, '/' as %2F, '?' as %3F, '#' as %23, a space as %20, '%' as %25)"
QUOTE_IT = "quote it: password='...' (a quote inside as \\', a backslash as \\\\)"
_HOST_CHARS = re.compile(r"^[A-Za-z0-9._\-\[\]:%]*$")
_SOCKET_DIR = re.compile(r"^/[^\s'\"]*$")
_SCHEME = re.compile(r"^(postgresql|postgres)://", re.IGNORECASE)


class DsnProblem(CronDryrunError, ValueError):
    """A DSN libpq would read differently from the suite, or not at all; quotes nothing."""


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# -- the keyword form ----------------------------------------------------------------------------


def parse_keyword_dsn(text: str) -> list[tuple[str, str]]:
    """``key=value`` pairs as libpq's conninfo_parse reads them; DsnProblem when it would
    refuse them or read a value differently from what an operator meant (an unquoted space)."""
    pairs: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            return pairs
        start = i
        while i < n and text[i] != "=" and not text[i].isspace():
            i += 1
        key = text[start:i]
        while i < n and text[i].isspace():
            i += 1
        if i >= n or text[i] != "=":
            raise DsnProblem(_stray_word(pairs))
        i += 1
        while i < n and text[i].isspace():
            i += 1
        value: list[str] = []
        if i < n and text[i] == "'":
            i += 1
            while True:
                if i >= n:
                    where = key if key in LIBPQ_KEYWORDS else "keyword's"
                    raise DsnProblem(
                        f"the quoted {where} value is not closed: end it with ' "
                        "(a quote inside as \\', a backslash as \\\\)"
                    )
                ch = text[i]
                if ch == "\\" and i + 1 < n:
                    value.append(text[i + 1])
                    i += 2
                    continue
                if ch == "'":
                    i += 1
                    break
                value.append(ch)
                i += 1
        else:
            while i < n and not text[i].isspace():
                if text[i] == "\\" and i + 1 < n:
                    value.append(text[i + 1])
                    i += 2
                    continue
                value.append(text[i])
                i += 1
        pairs.append((key, "".join(value)))


def _stray_word(pairs: list[tuple[str, str]]) -> str:
    if not pairs:
        return "not a libpq keyword DSN: it starts with a word without '=' (write host=... dbname=... user=... password=...)"
    previous = pairs[-1][0]
    if previous.lower() in SECRET_KEYWORDS:
        return f"a space in the {previous} value (a word without '=' follows it): {QUOTE_IT}"
    return (
        f"a word without '=' after the {previous} value: a value with a space must be "
        f"quoted; {QUOTE_IT}"
    )


def keyword_dsn_problem(text: str) -> str | None:
    try:
        pairs = parse_keyword_dsn(text)
    except DsnProblem as exc:
        return str(exc)
    for position, (key, _value) in enumerate(pairs):
        if key.lower() in LIBPQ_KEYWORDS:
            continue
        previous = pairs[position - 1][0].lower() if position else ""
        if previous in SECRET_KEYWORDS:
            # "password=abc def=ghi": the unknown keyword is part of the password
            return (
                f"an unknown keyword right after the {previous} value: a space in the "
                f"password? {QUOTE_IT}"
            )
        return f"not a libpq keyword DSN: unknown keyword(s) {key}"
    for key, value in pairs:
        if key.lower() in ("host", "hostaddr") and not _hosts_read_alike(value):
            return (
                f"the {key} value holds a character no host name has (a space, a quote, '@' or '/' "
                "outside a socket directory): libpq would read another host; check the "
                f"value, and {QUOTE_IT}"
            )
    return None


def _hosts_read_alike(value: str) -> bool:
    for host in value.split(","):
        if _SOCKET_DIR.match(host):
            continue
        if not _HOST_CHARS.match(host):
            return False
    return True


# -- the URL form --------------------------------------------------------------------------------


def url_dsn_problem(text: str) -> str | None:
    """The rules an operator's ``postgresql://`` URL must meet for libpq and this suite to
    read the same user, password, host, port and database; None when it does."""
    m = _SCHEME.match(text)
    if m is None:
        return None  # not ours to judge: settings names the schemes it takes
    rest = text[m.end() :]
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in rest):
        return f"the URL holds a space or a control character: {PERCENT_ENCODE}"
    ats = rest.count("@")
    if ats > 1:
        return f"more than one '@' in the URL: an '@' in the password must be encoded; {PERCENT_ENCODE}"
    for escape in re.finditer(r"%(.{0,2})", rest):
        if not re.fullmatch(r"[0-9A-Fa-f]{2}", escape.group(1)):
            return f"a '%' that is not a percent-escape (%XX): {PERCENT_ENCODE}"
        if escape.group(1) == "00":
            return "a %00 (NUL) in the URL: libpq refuses it; remove it from the password"
    authority_end = min(
        (i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest)
    )
    if ats == 1:
        at = rest.index("@")
        if at > authority_end:
            return (
                "an '@' after a '/', '?' or '#': libpq and this suite would read the user, "
                f"password and host differently; {PERCENT_ENCODE}"
            )
        _user, sep, password = rest[:at].partition(":")
        if sep and ":" in password:
            return f"a ':' in the password: {PERCENT_ENCODE}"
        hostspec = rest[at + 1 : authority_end]
    else:
        hostspec = rest[:authority_end]
    if "#" in rest:
        return f"a '#' in the URL (libpq has no fragments): {PERCENT_ENCODE}"
    for item in hostspec.split(",") if hostspec else []:
        host, port = _split_host_port(item)
        if not _HOST_CHARS.match(host):
            return f"a host libpq would read differently (a character no host name has): {PERCENT_ENCODE}"
        if port is not None and not port.isdigit():
            return (
                f"a port that is not a number: if the password holds a ':' or '@', {PERCENT_ENCODE}"
            )
    query = rest[authority_end:].partition("?")[2]
    previous = ""
    for position, item in enumerate(q for q in query.split("&") if q):
        key, eq, _value = item.partition("=")
        if not eq:
            return f"the {_ordinal(position + 1)} query parameter has no '=': write key=value, and {PERCENT_ENCODE}"
        if key.lower() not in LIBPQ_KEYWORDS | URL_ONLY_PARAMETERS:
            if previous in SECRET_KEYWORDS:
                return f"an unknown query parameter right after the password: an '&' in it? {PERCENT_ENCODE}"
            return f"the {_ordinal(position + 1)} query parameter is not a libpq keyword (libpq-connect lists them)"
        if key.lower() == "host" and not _hosts_read_alike(unquote(_value)):
            return f"a ?host= libpq would read differently (a character no host name has): {PERCENT_ENCODE}"
        previous = key.lower()
    return None


def _split_host_port(item: str) -> tuple[str, str | None]:
    if item.startswith("["):
        host, _, tail = item.partition("]")
        host += "]"
        return host, (tail[1:] if tail.startswith(":") else None)
    host, sep, port = item.partition(":")
    return host, (port if sep else None)


def dsn_problem(text: str, keyword_form: bool) -> str | None:
    """Why libpq would read ``text`` differently from this suite, or refuse it quoting it;
    None when both read it alike. The message quotes no part of the value."""
    return keyword_dsn_problem(text) if keyword_form else url_dsn_problem(text.strip())


# -- libpq's messages ----------------------------------------------------------------------------

# libpq messages that quote the DSN they could not read (part of a password, its tail as
# a host name): never shown; our sentence instead
_ECHOING = (
    (re.compile(r'missing "=" after'), "a word without '=' (an unquoted space in a value?)"),
    (re.compile(r"unterminated quoted string"), "a quoted value that is not closed"),
    (re.compile(r"invalid connection option"), "an unknown keyword"),
    (re.compile(r"invalid integer value"), "a value that should be a number (a port?)"),
    (re.compile(r"unexpected spaces found"), "a space in a number"),
    (re.compile(r"invalid port number"), "a port that is not a number"),
    (re.compile(r"invalid percent-encoded token|forbidden value %00"), "a bad percent-escape"),
    (
        re.compile(r"invalid URI|unexpected character|end of string reached when looking"),
        "a URL libpq cannot read",
    ),
    (re.compile(r"extra key/value separator"), "a query parameter with two '='"),
    (re.compile(r"invalid \w+ value"), "a keyword value libpq does not accept"),
    (
        re.compile(r"could not translate host name|could not parse network address"),
        "a host name that does not resolve",
    ),
)


def libpq_message(text: str, sqlstate: str | None = None) -> str:
    """A libpq/driver message fit to show: the ones that can echo the DSN (parse errors, an
    unresolvable host) become our own sentence; the first line of any other (a server's
    FATAL quoting the user or database name, a refused port) is kept. The SQLSTATE, when
    there is one, is named."""
    for pattern, what in _ECHOING:
        if pattern.search(text):
            return (
                f"libpq could not use DATABASE_URL: {what}; check it against the README's DSN "
                "rules (libpq's message is not shown: it quotes the value)"
                + (f" [SQLSTATE {sqlstate}]" if sqlstate else "")
            )
    lines = text.strip().splitlines()
    first = lines[0].strip() if lines else ""
    return first + (f" [SQLSTATE {sqlstate}]" if sqlstate else "")
