"""Does requirements/ci.txt (the workflow's hash-pinned lock) satisfy pyproject.toml?

Every dependency of [project.dependencies] that applies on the runner (CPython 3.12, Linux),
and every build requirement, must be pinned in the lock (==) at a version its specifier
allows, and every pin must carry at least one --hash. Exit 1 naming what differs, with the
fix (bash scripts/lock.sh). Standard library only, plus packaging (pip vendors it), so it runs
before anything is installed.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version
except ImportError:  # a bare interpreter: pip's own copy
    from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]
    from pip._vendor.packaging.utils import canonicalize_name  # type: ignore[no-redef]
    from pip._vendor.packaging.version import Version  # type: ignore[no-redef]

RUNNER = {"python_version": "3.12", "python_full_version": "3.12.0", "sys_platform": "linux",
          "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
          "implementation_name": "cpython", "platform_python_implementation": "CPython",
          "extra": ""}  # fmt: skip
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def lock_pins(text: str) -> tuple[dict[str, str], list[str]]:
    """name -> version, and the pins without a hash."""
    pins: dict[str, str] = {}
    unhashed: list[str] = []
    current: str | None = None
    hashed = False
    for line in text.splitlines():
        match = PIN.match(line)
        if match:
            if current is not None and not hashed:
                unhashed.append(current)
            current, hashed = canonicalize_name(match.group(1)), False
            pins[current] = match.group(2)
        elif "--hash=sha256:" in line:
            hashed = True
    if current is not None and not hashed:
        unhashed.append(current)
    return pins, unhashed


def problems(root: Path) -> list[str]:
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    wanted = [*pyproject["project"]["dependencies"], *pyproject["build-system"]["requires"]]
    build_in = root / "requirements" / "build.in"
    if build_in.is_file():
        wanted += [
            line.strip()
            for line in build_in.read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
    pins, unhashed = lock_pins((root / "requirements" / "ci.txt").read_text())
    found = [f"{name} is pinned without a --hash" for name in unhashed]
    for text in wanted:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate(RUNNER):
            continue
        name = canonicalize_name(requirement.name)
        pinned = pins.get(name)
        if pinned is None:
            found.append(f"{text!r} is not in the lock")
        elif not requirement.specifier.contains(Version(pinned), prereleases=True):
            found.append(f"{text!r}: the lock pins {name}=={pinned}")
    return found


def main() -> int:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
    found = problems(root)
    if found:
        print("requirements/ci.txt does not match pyproject.toml:", file=sys.stderr)
        for problem in found:
            print(f"  - {problem}", file=sys.stderr)
        print("Fix: bash scripts/lock.sh (uv pip compile --generate-hashes), commit the lock.",
              file=sys.stderr)  # fmt: skip
        return 1
    print("requirements/ci.txt matches pyproject.toml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
