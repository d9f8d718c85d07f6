"""How the plugin's options read in ``pytest --help``: a metavar that reads as a value (URL,
SECONDS, PATH), not as an environment variable, and each option's choices.

The choices are said in the help text, not given to argparse: argparse would refuse a value
the row's parser accepts (``--db-backend=URL``, read case-insensitively) with its own message,
and would show ``{a,b,c}`` in place of the metavar."""

from __future__ import annotations

from cron_dryrun.config.options import OptionSpec

METAVARS: dict[str, str] = {
    "cron_url": "URL",
    "database_url": "DSN",
    "db_backend": "BACKEND",
    "postgres_image": "IMAGE",
    "cron_method": "METHOD",
    "cron_timeout": "SECONDS",
    "openai_export": "PATH",
    "openai_usage": "SOURCE",
    "openai_base_url": "URL",
    "parity_threshold": "FRACTION",
    "dry_run_start": "TIME",
    "audit_dir": "PATH",
    "run_label": "LABEL",
    "allow_issue_code": "CODE",
    "ca_bundle": "PATH",
    "db_connect_timeout": "SECONDS",
    "fault": "FAULT",
    "standin_compress": "CODING",
}


def metavar(spec: OptionSpec) -> str | None:
    """The placeholder ``--help`` shows for the option's value; None for a flag."""
    return None if spec.is_flag else METAVARS.get(spec.name, "VALUE")


def help_text(spec: OptionSpec) -> str:
    """The help line: what it does, its values when they are a fixed set, its variable."""
    text = spec.help
    if spec.choices:
        text = f"{text}: {'each ' if spec.multiple else ''}one of {', '.join(spec.choices)}"
    return f"{text} [{spec.env}]" if spec.env else text
