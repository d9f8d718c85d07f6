"""Loads the cron-dryrun plugin, even when the package is not installed."""

pytest_plugins = ["cron_dryrun.plugin"]
