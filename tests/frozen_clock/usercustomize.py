"""Every Python process of a test run starts at one chosen instant: the suite at another date.

Put this folder on ``PYTHONPATH`` and set ``CRON_DRYRUN_FROZEN_NOW`` to an ISO time
(``2028-02-29T00:00:20Z``): each Python that starts (pytest, the child suite runs, the
stand-ins) runs freezegun from that instant, ticking, so a run crosses midnight as a real one
would. It is ``usercustomize``, not ``sitecustomize``, so the network guard
(tests/netguard/sitecustomize.py) still loads beside it. PostgreSQL keeps the real clock:
nothing here compares the database's ``now()`` with Python's.

Used by hand (README, "Tests at other dates") to find tests whose outcome depends on the day.
"""

from __future__ import annotations

import os

_NOW = os.environ.get("CRON_DRYRUN_FROZEN_NOW")
if _NOW:
    import freezegun

    # real_asyncio: the stand-ins' event loops keep the real monotonic clock for their timers
    freezegun.freeze_time(_NOW, tick=True, real_asyncio=True).start()
