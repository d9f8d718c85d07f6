"""What the pytest command line asks for, read before collection: is it a dry run, would
pytest-xdist run it once per worker, did a path option cost the run its ini file."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from cron_dryrun.config.settings import OPTIONS, Settings

OPTIONS_BY_FLAG = {spec.flag: spec for spec in OPTIONS if spec.flag}

# Options whose value is a path: pytest picks the rootdir (and so its ini file) before plugin
# options are known, so `--audit-dir /existing/dir` is first read as a test path.
PATH_OPTIONS = ("--audit-dir", "--openai-export")


def path_value_read_as_test_path(args: list[str], ini_found: bool) -> str | None:
    """The message for a path option given as two words that cost the run its ini file."""
    if ini_found:
        return None
    for flag, value in itertools.pairwise(args):
        if flag in PATH_OPTIONS and Path(value).exists():
            env = OPTIONS_BY_FLAG[flag].env
            return (
                f"cron-dryrun: `{flag} {value}` was read by pytest as a test path before the plugin "
                f"was loaded, so no ini file (markers, addopts) was found; write `{flag}={value}` "
                f"or set {env}={value}"
            )
    return None


def wants_dryrun(config: pytest.Config) -> bool:
    """Whether this invocation aims at the acceptance suite (decided before collection): -m
    dryrun, or a path that is in, or holds, an ``acceptance`` folder once resolved (so
    ``cd acceptance && pytest .`` is one too)."""
    markexpr = config.getoption("markexpr", "") or ""
    if "dryrun" in markexpr and "not dryrun" not in markexpr:
        return True
    base = config.invocation_params.dir
    for arg in config.args:
        path = (base / str(arg).split("::", 1)[0]).resolve()
        if "acceptance" in path.parts or (path.is_dir() and (path / "acceptance").is_dir()):
            return True
    return False


def xdist_active(config: pytest.Config) -> bool:
    """pytest-xdist distributes this session, or this is one of its workers: read from the
    options and the plugin manager, however xdist was started (-n, --dist, --tx, -p xdist)."""
    if not config.pluginmanager.hasplugin("xdist"):
        return False
    return bool(
        config.getoption("numprocesses", None)
        or config.getoption("tx", None)
        or config.getoption("dist", "no") not in (None, "no")
        or config.pluginmanager.hasplugin("dsession")
        or hasattr(config, "workerinput")
        or os.environ.get("PYTEST_XDIST_WORKER")
    )


def xdist_problem(config: pytest.Config) -> str | None:
    """pytest-xdist would run the acceptance suite once per worker: each triggers the cron."""
    if not wants_dryrun(config) or not xdist_active(config):
        return None
    return (
        "cron-dryrun: the acceptance suite cannot run under pytest-xdist (-n / --dist / -p xdist): "
        "the cron must be triggered once per run and every check judges that one exchange, but "
        "each xdist worker would trigger it again and write its own verdict. Nothing was "
        "triggered. Drop -n (or pass -p no:xdist)."
    )


def ca_bundle_problem(settings: Settings) -> str | None:
    """The usage error when --ca-bundle or SSL_CERT_FILE names no usable CA bundle."""
    if not (settings.ca_bundle or settings.ssl_cert_file):
        return None
    from cron_dryrun.target.tls import CaBundleError, client_context  # ssl: a dry run's cost

    try:
        client_context(settings.ca_bundle, settings.ssl_cert_file)
    except CaBundleError as exc:
        return f"cron-dryrun: {exc}"
    return None
