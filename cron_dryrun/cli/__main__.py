"""``python -m cron_dryrun.cli``: the ``cron-dryrun`` command."""

from cron_dryrun.cli import main

raise SystemExit(main())
