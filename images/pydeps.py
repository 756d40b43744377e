"""Print the third-party requirements of the pyproject.toml files under a folder, one per line.

The Dockerfiles install dependencies in layers keyed by the pyproject files alone (copied before the
sources), so a code change rebuilds only the last layer. Requirements naming one of the local projects are
left out: those are installed from wheels built from the sources. A local requirement whose pyproject was
not copied is an error, so a Dockerfile cannot silently miss one.

Usage: python pydeps.py DIR   (reads DIR/*/pyproject.toml; Python >= 3.11 for tomllib)
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

LOCAL_PREFIX = "elasticdf-"


def canonical(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise ValueError(f"cannot read a project name from requirement {requirement!r}")
    return canonical(match.group(1))


def third_party_requirements(folder: Path) -> list[str]:
    projects = [tomllib.loads(p.read_text())["project"] for p in sorted(folder.glob("*/pyproject.toml"))]
    local = {canonical(p["name"]) for p in projects}
    wanted: list[str] = []
    for project in projects:
        for requirement in project.get("dependencies", []):
            name = requirement_name(requirement)
            if name in local:
                continue
            if name.startswith(LOCAL_PREFIX):
                raise SystemExit(f"pydeps: {project['name']} needs {name}: copy its pyproject.toml into {folder}")
            if requirement not in wanted:
                wanted.append(requirement)
    return wanted


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__.strip().splitlines()[-1])
    print("\n".join(third_party_requirements(Path(sys.argv[1]))))
