"""Redaction: what a run must never print or write, and the pure functions that remove it.

One layer for every byte that leaves the process: the evidence writer (audit files),
pytest's reports (terminal, JUnit, HTML) and the terminal writer all call ``Redactor``.
No I/O, no pytest, httpx or psycopg here.

Known secrets: the cron secret and the near-miss variants the suite derives from it,
the database password from any DSN form (URL, unencoded URL, ``?password=``, libpq
keywords) and ``PGPASSWORD``, the password in ``CRON_URL``'s userinfo, and every
variable in ``SECRET_VARIABLES``. Each is matched case-insensitively in its plain,
stripped, URL-encoded, base64, hex, JSON-, HTML- and repr-escaped forms. Patterns
catch what no list can: URL userinfo, ``Authorization``/``Cookie`` values, ``Bearer``
tokens, ``sk-`` keys, ``password=`` pairs.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import html
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

REDACTED = "[REDACTED]"

# Environment variables whose whole value is a secret. To teach the redactor another
# one, add its name here (values may list several secrets, comma- or space-separated).
SECRET_VARIABLES: tuple[str, ...] = ("CRON_SECRET", "PGPASSWORD", "CRON_DRYRUN_EVIDENCE_KEY")

# Encoded forms of very short values would match ordinary text.
MIN_ENCODED_LEN = 4
# Near-miss variants shorter than this are not redacted on their own (a 2-character
# half of a short secret is every second word); short secrets get a warning instead.
MIN_VARIANT_LEN = 6
# Whole JSON string values that are the suite's own vocabulary (verdicts, statuses):
# kept, so a secret that is a common word ("GO") cannot make gate.json or the ledger lie.
VOCABULARY = frozenset(
    {
        "GO",
        "NO-GO",
        "passed",
        "failed",
        "skipped",
        "error",
        "xfailed",
        "xpassed",
        "not-run",
        "true",
        "false",
        "POST",
        "GET",
    }
)

_URL_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.\-]*://)([^\s/?#<>\"'`]+)@")
_SECRET_KEYS = (
    r"(?:proxy-)?authorization|x-api-key|api[_-]?key|password|passwd|cron_secret|secret|cookie"
    r"|x-vercel-protection-bypass|vercel_automation_bypass_secret"
)
_SECRET_KEY_NAME = re.compile(rf"^(?:{_SECRET_KEYS})$", re.IGNORECASE)
_AUTH_QUOTED = re.compile(
    r"""(?P<head>(?P<q>["'])(?:"""
    + _SECRET_KEYS
    + r""")(?P=q)\s*[:,]\s*)(?P<vq>["'])(?P<value>(?:\\.|(?!(?P=vq)).)*)(?P=vq)""",
    re.IGNORECASE,
)
# "Authorization: value" up to the end of the line; stops at a quote, backslash, '<' or '&'
# so that inside an HTML-escaped JSON blob it cannot swallow the rest of the document.
_AUTH_LINE = re.compile(
    r"(?P<head>\b(?:(?:proxy-)?authorization|x-api-key|(?:set-)?cookie|x-vercel-protection-bypass)"
    r"\s*[:=][ \t]*)(?P<value>[^\r\n\"\\<&]*)",
    re.IGNORECASE,
)
_AUTH_SCHEME = re.compile(
    r"^(?P<scheme>Bearer|Basic|Token|Digest)(?P<sp>\s+)(?P<rest>.*)$", re.I | re.S
)
_BEARER = re.compile(
    r"(?P<head>\bBearer[ \t]+)(?!\[REDACTED\])(?P<token>[A-Za-z0-9\-._~+/]{8,}=*)", re.IGNORECASE
)
_SK_KEY = re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}")
# the placeholder of a message's fix ("quote it: password='...'") is kept
_PASSWORD_KV = re.compile(
    r"(?P<head>\bpassword\s*=\s*)(?!'\.\.\.'(?:\W|$))(?P<value>'(?:\\.|[^'])*'|[^\s'\"&;]+)",
    re.I,
)
_URL_DSN = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://(?P<userinfo>.*)@(?P<rest>[^@]*)$", re.S)
_KEYWORD_PASSWORD = re.compile(r"(?:^|\s)password\s*=\s*('(?:\\.|[^'\\])*'|\S+)", re.I)


# -- which values are secret ----------------------------------------------------------------------


def dsn_passwords(dsn: str | None) -> set[str]:
    """The password of a DSN in any form, as written and decoded.

    URL (``postgresql://user:pw@host/db``, also unencoded: ``P@ss:w/rd%#Q1`` is split
    by urlsplit, so the userinfo runs to the last '@'), ``?password=`` in the query,
    libpq keywords (``host=... password='a b'``).
    """
    found: set[str] = set()
    if not dsn:
        return found
    text = dsn.strip()
    m = _URL_DSN.match(text)
    if m:
        _user, sep, password = m.group("userinfo").partition(":")
        if sep and password:
            found.add(password)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*://", text):
        try:
            parts = urlsplit(text)
            split_password = parts.password
            query = parts.query
        except ValueError:
            split_password, query = None, text.partition("?")[2]
        if split_password and not found:
            found.add(split_password)  # the last-'@' reading found none: trust urlsplit
        for key, value in parse_qsl(query, keep_blank_values=False):
            if key.lower() == "password" and value:
                found.add(value)
        return _with_decoded(found)
    for km in _KEYWORD_PASSWORD.finditer(dsn):
        value = km.group(1)
        if value.startswith("'") and value.endswith("'") and len(value) >= 2:
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        if value:
            found.add(value)
    return _with_decoded(found)


def _with_decoded(found: set[str]) -> set[str]:
    decoded = set()
    for value in found:
        with contextlib.suppress(UnicodeDecodeError):
            decoded.add(unquote(value, errors="strict"))
    return {v for v in found | decoded if v}


def url_password(url: str | None) -> set[str]:
    """The password in a URL's userinfo (``https://user:pw@host``), as written and decoded."""
    return dsn_passwords(url) if url and "@" in url else set()


def split_secret_values(value: str) -> list[str]:
    """A variable's value, and each of its comma/space-separated parts when it lists several."""
    parts = [p for p in re.split(r"[,\s]+", value) if p]
    return [value, *parts] if len(parts) > 1 else [value]


def secrets_from_environment(env: Mapping[str, str]) -> tuple[str, ...]:
    """Every value of ``SECRET_VARIABLES`` set in ``env``."""
    found: list[str] = []
    for name in SECRET_VARIABLES:
        value = env.get(name)
        if value:
            found.extend(split_secret_values(value))
    return tuple(found)


def _flip(ch: str) -> str:
    return "b" if ch == "a" else "a"


def derived_variants(secret: str) -> set[str]:
    """The near misses the auth smoke check derives from the secret (checks.auth_cases):
    a proxy that echoes them would otherwise leak most of the secret."""
    s = secret.strip()
    if not s:
        return set()
    variants = {
        s[:-1],
        s[:-1] + _flip(s[-1]),
        _flip(s[0]) + s[1:],
        s[: max(1, len(s) // 2)],
        s.swapcase(),
    }
    return {v for v in variants if len(v) >= MIN_VARIANT_LEN}


def encoded_forms(secret: str) -> set[str]:
    """The forms a value shows up in: plain, stripped, URL-encoded, base64, hex, escaped."""
    forms = {secret, secret.strip()}
    if len(secret) < MIN_ENCODED_LEN:
        return {f for f in forms if f}
    raw = secret.encode("utf-8")
    for b64 in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        text = b64.decode("ascii")
        forms |= {text, text.rstrip("=")}
    forms |= {
        quote(secret, safe=""),
        quote_plus(secret, safe=""),
        quote(secret),  # '/' kept, as in URL paths
        raw.hex(),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        html.escape(secret, quote=True),
        repr(secret)[1:-1],
        repr(raw)[2:-1],
    }
    try:
        decoded = unquote(secret, errors="strict")
    except UnicodeDecodeError:
        decoded = secret
    forms.add(decoded)
    return {f for f in forms if f}


def known_secrets(
    cron_secret: str | None,
    *,
    dsns: Iterable[str | None] = (),
    urls: Iterable[str | None] = (),
    extra: Iterable[str | None] = (),
) -> tuple[str, ...]:
    """Every secret value of a run, derived variants included, sorted (stable cache key)."""
    values: set[str] = set()
    if cron_secret:
        values.add(cron_secret)
        values |= derived_variants(cron_secret)
    for dsn in dsns:
        values |= dsn_passwords(dsn)
    for url in urls:
        values |= url_password(url)
    values |= {v for v in extra if v}
    return tuple(sorted(values))


def redact_dsn(dsn: str) -> str:
    """A DSN safe to show: URL userinfo (up to its last '@') as ``***``, every ``password=``
    value (query or keyword form) as ``***``."""
    m = _URL_DSN.match(dsn.strip())
    text = dsn
    if m:
        scheme = dsn.strip()[: dsn.strip().index("://") + 3]
        text = f"{scheme}***@{m.group('rest')}"
    return mask_password_pairs(text)


# a ``password=`` value in a URL query (up to & or ;) or a libpq keyword DSN (quoted or not)
_PASSWORD_PAIR = re.compile(r"(?i)(\bpassword\s*=\s*)('(?:\\.|[^'\\])*'|[^\s&;]+)")


def mask_password_pairs(text: str) -> str:
    """Every ``password=`` value in ``text`` shown as ``***`` (DSNs, driver messages)."""
    return _PASSWORD_PAIR.sub(lambda k: k.group(1) + "***", text)


def without_userinfo(text: str) -> str:
    """URLs in ``text`` with their userinfo (user and password) shown as ``***``."""
    return _URL_USERINFO.sub(r"\1***@", text)


# -- text -----------------------------------------------------------------------------------------


class Redactor:
    """Removes secrets from text: known values (every form, any case) and the patterns.

    Idempotent: the marker is matched first and kept, even when a secret is a substring of it.
    """

    def __init__(self, secrets: Iterable[str | None]) -> None:
        values: set[str] = set()
        for secret in secrets:
            if secret:
                values |= encoded_forms(secret)
        self._secrets = tuple(sorted(values, key=lambda v: (-len(v), v)))
        self._literal: re.Pattern[str] | None = None
        if self._secrets:
            alternatives = "|".join(re.escape(v) for v in self._secrets)
            self._literal = re.compile(
                f"(?P<marker>{re.escape(REDACTED)})|(?:{alternatives})", re.IGNORECASE
            )

    def redact(self, text: str) -> str:
        # userinfo first: a password inside it then goes with the rest of the userinfo
        text = _URL_USERINFO.sub(r"\1***@", text)
        if self._literal is not None:
            text = self._literal.sub(lambda m: m.group("marker") or REDACTED, text)
        text = _AUTH_QUOTED.sub(self._auth_quoted, text)
        text = _AUTH_LINE.sub(self._auth_line, text)
        text = _BEARER.sub(lambda m: m.group("head") + REDACTED, text)
        text = _SK_KEY.sub(REDACTED, text)
        text = _PASSWORD_KV.sub(lambda m: m.group("head") + REDACTED, text)
        return text

    def redact_bytes(self, data: bytes) -> bytes:
        # surrogateescape round-trips bytes that are not UTF-8 unchanged
        return self.redact(data.decode("utf-8", "surrogateescape")).encode(
            "utf-8", "surrogateescape"
        )

    @staticmethod
    def mask_auth_value(value: str) -> str:
        """Keep the scheme word (it tells a reader which auth negative this was), drop the rest."""
        if not value.strip() or value.strip() == REDACTED:
            return value
        scheme = _AUTH_SCHEME.match(value)
        if scheme is not None:
            if not scheme.group("rest").strip():
                return value  # "Bearer " with an empty token: nothing to hide
            return scheme.group("scheme") + scheme.group("sp") + REDACTED
        return REDACTED

    def _auth_quoted(self, m: re.Match[str]) -> str:
        masked = self.mask_auth_value(m.group("value"))
        return f"{m.group('head')}{m.group('vq')}{masked}{m.group('vq')}"

    def _auth_line(self, m: re.Match[str]) -> str:
        value = m.group("value")
        if value[:1] in ("'", '"'):
            return m.group(0)  # a quoted value: handled by _AUTH_QUOTED
        return m.group("head") + self.mask_auth_value(value)


# -- excerpts: redact, then cut ------------------------------------------------------------------


def redacted_excerpt(text: str, limit: int, redact: Callable[[str], str]) -> tuple[str, bool]:
    """The first ``limit`` characters of ``text`` *after* redacting all of it, and whether
    anything was cut.

    Cutting first would leave the head of a secret that straddles the cut (8 to 24
    characters of it, or of a near miss that shares them), which no redactor can recognise
    afterwards. A cut that falls inside a redaction marker moves before the marker.
    """
    clean = redact(text)
    if len(clean) <= limit:
        return clean, False
    cut = max(0, limit)
    start = clean.find(REDACTED, max(0, cut - len(REDACTED) + 1))
    if 0 <= start < cut:
        cut = start
    return clean[:cut], True


def whole_or_described(value: Any, limit: int) -> str:
    """A JSON value from an answer, shown whole when it fits in ``limit`` characters, else
    described by type and length: never cut, as a secret quoted across the cut could no
    longer be recognised, and so not redacted, downstream."""
    text = json.dumps(value)
    if len(text) <= limit:
        return text
    return f"a JSON {type(value).__name__} of {len(text)} characters (not shown: too long)"


MIN_HEADER_SECRET_LEN = 16  # settings.WEAK_SECRET_LENGTH: shorter ones are probes or warned of
_CREDENTIAL_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-vercel-protection-bypass", "cookie", "x-api-key"}
)


def request_secrets(
    headers: Iterable[tuple[str, str]], secrets: Iterable[str | None] = ()
) -> tuple[str, ...]:
    """What an HTTP exchange must not show of its own request: ``secrets`` (the cron secret
    with its near misses, the bypass secret ...) and every credential header value sent
    (the token without its scheme too: an echo may quote either). A header value shorter
    than ``MIN_HEADER_SECRET_LEN`` ("Bearer undefined") is a probe, not a secret: kept, so
    that the answer quoting it still reads."""
    values: set[str] = set()
    for secret in secrets:
        values |= set(known_secrets(secret))
    for name, value in headers:
        if name.lower() not in _CREDENTIAL_HEADERS or not value.strip():
            continue
        scheme = _AUTH_SCHEME.match(value.strip())
        token = scheme.group("rest").strip() if scheme else value.strip()
        for candidate in (value.strip(), token):
            if len(candidate) >= MIN_HEADER_SECRET_LEN:
                values.add(candidate)
    return tuple(sorted(values))


def first_wording_without(wordings: Iterable[str], secrets: Iterable[str | None]) -> str:
    """The first of ``wordings`` the redactor leaves whole for ``secrets`` (their near misses
    and encoded forms included): a message about a secret is written around it, so that no
    marker cut into it hints at the secret. The last wording when none is (it is redacted)."""
    redact = Redactor([v for s in secrets for v in known_secrets(s)]).redact
    last = ""
    for wording in wordings:
        if redact(wording) == wording:
            return wording
        last = wording
    return redact(last)


# -- structures: JSON values, pytest's report objects ---------------------------------------------


def redact_json_value(value: Any, redact: Callable[[str], str], key: str | None = None) -> Any:
    """A parsed JSON value with every string redacted; the structure never changes.

    A value under a credential-named key (``authorization``, ``password`` ...) is masked
    whole; a base64 ``data:`` URI is redacted in what it decodes to.
    """
    if isinstance(value, str):
        if value in VOCABULARY:
            return value
        if key is not None and _SECRET_KEY_NAME.match(key):
            return Redactor.mask_auth_value(redact(value))
        head, sep, data = value.partition(";base64,")
        if sep and head.startswith("data:"):
            try:
                text = base64.b64decode(data, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return value
            return head + sep + base64.b64encode(redact(text).encode()).decode("ascii")
        return redact(value)
    if isinstance(value, list):
        return [redact_json_value(v, redact) for v in value]
    if isinstance(value, dict):
        return {
            (k if k in VOCABULARY else redact(k)): redact_json_value(v, redact, k)
            for k, v in value.items()
        }
    return value


def _dump_like(original: str, value: Any) -> str:
    """Serialise ``value`` in the layout ``original`` used (indented or one line)."""
    indented = "\n" in original.strip()
    text = json.dumps(value, sort_keys=False, indent=2 if indented else None, ensure_ascii=False)
    return text + ("\n" if original.endswith("\n") else "")


def redact_json_document(text: str, redact: Callable[[str], str]) -> str | None:
    """A JSON document redacted after parsing; None when ``text`` is not JSON."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    cleaned = redact_json_value(value, redact)
    return text if cleaned == value else _dump_like(text, cleaned)


def redact_jsonl_document(text: str, redact: Callable[[str], str]) -> str | None:
    """JSON Lines redacted line by line after parsing; None when a line is not JSON."""
    out = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        if not body.strip():
            out.append(line)
            continue
        cleaned = redact_json_document(body, redact)
        if cleaned is None:
            return None
        out.append(cleaned + line[len(body) :])
    return "".join(out)


def redact_in_place(obj: Any, redact: Callable[[str], str], _depth: int = 0) -> Any:
    """Redact every string inside ``obj`` (dataclasses, lists, tuples, dicts), returning the
    cleaned object; mutable containers and dataclass instances are changed in place.

    Built for pytest's report objects (``longrepr`` chains, ``sections``), which are
    dataclasses of strings; anything else is returned unchanged.
    """
    if _depth > 50:
        return obj
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, list):
        obj[:] = [redact_in_place(v, redact, _depth + 1) for v in obj]
        return obj
    if isinstance(obj, tuple):
        cleaned = tuple(redact_in_place(v, redact, _depth + 1) for v in obj)
        return type(obj)(*cleaned) if hasattr(obj, "_fields") else cleaned
    if isinstance(obj, dict):
        for k in list(obj):
            obj[k] = redact_in_place(obj[k], redact, _depth + 1)
        return obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            current = getattr(obj, f.name, None)
            if current is None:
                continue
            cleaned = redact_in_place(current, redact, _depth + 1)
            if cleaned is not current:
                object.__setattr__(obj, f.name, cleaned)
        return obj
    return obj


# -- pytest-html's report -------------------------------------------------------------------------

_JSON_BLOB = re.compile(r'(data-jsonblob=")([^"]*)(")')


def redact_html_report(text: str, redact: Callable[[str], str]) -> str:
    """Redact pytest-html's report without breaking it: its results live in one HTML-escaped
    JSON attribute, redacted value by value (attachments decoded first) and re-encoded."""
    match = _JSON_BLOB.search(text)
    if match is None:
        return redact(text)
    raw = html.unescape(match.group(2))
    try:
        blob = json.dumps(redact_json_value(json.loads(raw), redact))
    except ValueError:
        blob = redact(raw)
    return (
        redact(text[: match.start()])
        + match.group(1)
        + html.escape(blob, quote=True)
        + match.group(3)
        + redact(text[match.end() :])
    )


# -- control characters ---------------------------------------------------------------------------

# C0 except tab and newline (a CR only when it does not end a CRLF), DEL and C1
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]|\r(?!\n)")
# what pytest's own terminal output may hold: colour (SGR) sequences, a leading/trailing CR
_SGR = re.compile(r"\x1b\[[0-9;]*m")


def escape_controls(text: str) -> str:
    """Control characters shown as ``\\xNN`` (ESC as ``\\x1b``): nothing a target sends can draw
    on the operator's screen, a CI log viewer, the HTML report or a Markdown file."""
    return _CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def escape_terminal(text: str) -> str:
    """``escape_controls`` for a line pytest is about to print: its own colour codes (SGR) and
    the CR that redraws a progress line are kept; everything else is escaped."""
    lead = "\r" if text.startswith("\r") else ""
    trail = "\r" if text.endswith("\r") and len(text) > len(lead) else ""
    body = text[len(lead) : len(text) - len(trail)]
    parts = _SGR.split(body)
    codes = _SGR.findall(body)
    out = [escape_controls(parts[0])]
    for code, part in zip(codes, parts[1:], strict=True):
        out += [code, escape_controls(part)]
    return lead + "".join(out) + trail
