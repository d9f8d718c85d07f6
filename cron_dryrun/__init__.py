"""cron-dryrun: the daily usage cron runbook as a pytest acceptance gate.

The public surface is small on purpose: the settings object and the
exchange record. Everything else is plumbing behind the pytest plugin
(``cron_dryrun.plugin``) and the ``cron-dryrun`` command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cron_dryrun.config.settings import Settings, SettingsError

__all__ = ["Settings", "SettingsError"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # imported when asked for: `cron-dryrun diff` never reads the settings (~0.02 s)
    if name in __all__:
        from cron_dryrun.config import settings

        return getattr(settings, name)
    raise AttributeError(f"module 'cron_dryrun' has no attribute {name!r}")
