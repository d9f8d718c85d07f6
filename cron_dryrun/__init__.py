"""cron-dryrun: the daily usage cron runbook as a pytest acceptance gate.

The public surface is small on purpose: the settings object and the
exchange record. Everything else is plumbing behind the pytest plugin
(``cron_dryrun.plugin``) and the ``cron-dryrun`` command.
"""

from cron_dryrun.config.settings import Settings, SettingsError

__all__ = ["Settings", "SettingsError"]
__version__ = "0.1.0"
