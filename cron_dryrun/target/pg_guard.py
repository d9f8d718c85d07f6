"""A PostgreSQL server that exits with the process that started it.

The embedded servers are daemons (pg_ctl) or children that outlive a killed
parent. ``guard`` starts this module as a small watcher whose stdin is a pipe
from the parent: when the parent exits for any reason (``kill -9`` included),
the pipe closes, and the watcher stops the server (fast shutdown, then SIGKILL
after a bound) and removes its files. A normal stop closes the pipe too, after
the server is already down, and the watcher only tidies up.

Run as ``python -m cron_dryrun.target.pg_guard DATA_DIR [REMOVE_DIR]``.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
from pathlib import Path

STOP_TIMEOUT_S = 20.0


def postmaster_pid(data_dir: Path) -> int | None:
    """The server's pid from ``postmaster.pid``; None when no server runs from ``data_dir``."""
    try:
        first = (data_dir / "postmaster.pid").read_text().splitlines()[0]
        return int(first.strip())
    except (OSError, IndexError, ValueError):
        return None


def exited_within(pid: int, timeout_s: float) -> bool:
    """True once ``pid`` has exited (pidfd: woken by the exit itself, no polling)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([fd], [], [], timeout_s)
        return bool(ready)
    finally:
        os.close(fd)


def stop_server(data_dir: Path, timeout_s: float = STOP_TIMEOUT_S) -> None:
    pid = postmaster_pid(data_dir)
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGINT)  # fast shutdown: roll back open transactions, exit
    except ProcessLookupError:
        return
    if not exited_within(pid, timeout_s):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        exited_within(pid, 5.0)


def main(argv: list[str]) -> int:
    data_dir = Path(argv[0])
    remove = Path(argv[1]) if len(argv) > 1 else None
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the terminal is the parent's
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while sys.stdin.buffer.read(4096):
        pass  # the parent never writes; EOF means it is gone or done
    stop_server(data_dir)
    if remove is not None:
        shutil.rmtree(remove, ignore_errors=True)
    return 0


def guard(data_dir: Path, remove: Path | None = None) -> subprocess.Popen[bytes]:
    """Start the watcher for the server in ``data_dir``; close its stdin (``release``) to end it."""
    command = [sys.executable, "-m", "cron_dryrun.target.pg_guard", str(data_dir)]
    if remove is not None:
        command.append(str(remove))
    return subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C to the terminal's group must not kill it first
    )


def release(watcher: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S + 10) -> None:
    """After a normal stop: let the watcher tidy up and exit."""
    if watcher.stdin is not None:
        watcher.stdin.close()
    try:
        watcher.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        watcher.kill()
        watcher.wait(timeout=5)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
