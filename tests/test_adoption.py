"""Issue 26: the tool behaves as pytest, tox and GitHub Actions users expect."""

from __future__ import annotations

import configparser
from collections.abc import Iterator, Mapping
from pathlib import Path

from cron_dryrun.config.settings import environment_variables, resolve_settings

ROOT = Path(__file__).resolve().parents[1]


class RecordingEnv(Mapping[str, str]):
    """An environment that remembers every name asked for."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = dict(values)
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return self.values[key]

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("the settings must ask for names, not list the environment")

    def __len__(self) -> int:
        return len(self.values)


def _tox_list(section: Mapping[str, str], key: str) -> set[str]:
    lines = (line.split("#", 1)[0].strip() for line in section.get(key, "").splitlines())
    return {line for line in lines if line and not line.startswith("{")}


def test_the_table_names_every_variable_the_settings_read(tmp_path: Path) -> None:
    pem = tmp_path / "ca.pem"
    pem.write_text("not checked here\n")
    env = RecordingEnv({"SSL_CERT_FILE": str(pem), "GITHUB_STEP_SUMMARY": str(tmp_path / "s")})
    resolve_settings(env=env)
    assert {"VERCEL_AUTOMATION_BYPASS_SECRET", "DB_CONNECT_TIMEOUT", "SSL_CERT_FILE"} <= env.asked
    assert env.asked - set(environment_variables()) == set()


def test_tox_staging_passes_every_variable_of_the_settings_table() -> None:
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    staging = tox["testenv:staging"]
    passed = _tox_list(staging, "passenv") | _tox_list(tox["testenv"], "passenv")
    set_here = {line.split("=", 1)[0].strip() for line in _tox_list(staging, "setenv")}
    table = set(environment_variables())
    assert table - passed - set_here == set(), "tox -e staging drops these"
    # nothing passed that the table does not know, except the shell's and the reader's own
    assert passed - table == {"HOME", "PATH", "CRON_DRYRUN_DB_READER"}
