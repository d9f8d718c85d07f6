"""Network guard for child test processes: no packet may leave loopback.

Put this folder first on ``PYTHONPATH`` (``suite_runs.guarded_env`` does) and set
``CRON_DRYRUN_NETGUARD_LOG`` to a file: every ``socket.connect``,
``socket.getaddrinfo`` or ``socket.sendto`` aimed at a host that is not loopback is
refused (an ``OSError`` raised by the audit hook, before the call reaches the kernel)
and recorded as one JSON line in that file. Tests assert the file stays empty.

Only Python's socket layer is audited: C libraries that open their own sockets
(libpq inside psycopg) are not, so tests give databases loopback addresses. psycopg
resolves host names through ``socket.getaddrinfo`` first, which is audited.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import sys

_LOG = os.environ.get("CRON_DRYRUN_NETGUARD_LOG")
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def _is_loopback(host: object) -> bool:
    if host is None or host in ("", b""):
        return True  # no host: a local bind or a service lookup, nothing leaves
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    name = host.strip("[]").split("%", 1)[0].lower().rstrip(".")
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _record(event: str, host: object, port: object) -> None:
    line = json.dumps({"event": event, "host": repr(host), "port": repr(port), "pid": os.getpid()})
    if _LOG:
        with open(_LOG, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")


def _guard(event: str, args: tuple) -> None:
    if event == "socket.getaddrinfo":
        host, port = args[0], args[1]
    elif event in ("socket.connect", "socket.sendto"):
        address = args[1]
        if not isinstance(address, tuple) or not address:
            return  # AF_UNIX paths and the like stay on this machine
        host, port = address[0], address[1] if len(address) > 1 else None
    else:
        return
    if _is_loopback(host):
        return
    _record(event, host, port)
    raise OSError(
        errno.ENETUNREACH, f"netguard: {event} to {host!r} refused (tests stay on loopback)"
    )


if _LOG:
    sys.addaudithook(_guard)
