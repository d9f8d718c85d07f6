"""Every Python process of a test run starts at one chosen instant: the suite at another date.

Put this folder on ``PYTHONPATH`` and set ``FREEZE_TESTS_AT`` (not a ``CRON_`` name, which
``suite_runs.clean_env`` strips from child runs) to an ISO time
(``2028-02-29T00:00:20Z``): each Python that starts (pytest, the child suite runs, the
stand-ins) runs freezegun from that instant, ticking, so a run crosses midnight as a real one
would. It is ``usercustomize``, not ``sitecustomize``, so the network guard
(tests/netguard/sitecustomize.py) still loads beside it. PostgreSQL keeps the real clock:
nothing here compares the database's ``now()`` with Python's. OpenSSL keeps it too, so TLS
tests that make certificates dated from Python's clock fail at a far date: an artefact.

Used by hand (README, "Tests at other dates") to find tests whose outcome depends on the day.
"""

from __future__ import annotations

import os

_NOW = os.environ.get("FREEZE_TESTS_AT")
if _NOW:
    import warnings

    import freezegun

    # freezegun's FakeDate/FakeDatetime make compiled modules warn about datetime's size when
    # they are imported; tests that compare a child's whole output would count those lines
    warnings.filterwarnings("ignore", r"datetime\.\w+ size changed", RuntimeWarning)

    import time
    from datetime import datetime, timedelta

    # One clock for the whole run: the first process notes the real time it froze at, and every
    # child (which inherits the note) starts as far past FREEZE_TESTS_AT as real time has moved
    # since, so a child never runs "before" the parent that seeded its data.
    anchor = float(os.environ.setdefault("FREEZE_TESTS_ANCHOR", repr(time.time())))
    start = datetime.fromisoformat(_NOW.replace("Z", "+00:00"))
    start += timedelta(seconds=time.time() - anchor)
    # real_asyncio: the stand-ins' event loops keep the real monotonic clock for their timers
    freezegun.freeze_time(start, tick=True, real_asyncio=True).start()
