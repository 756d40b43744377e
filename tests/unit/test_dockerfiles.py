"""Image rules read from the Dockerfiles: pinned public base, multi-stage, non-root (hack/images.sh builds them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

IMAGES = Path(__file__).resolve().parents[2] / "images"
NAMES = ["operator", "segment", "gateway", "discovery"]


def instructions(name: str) -> list[tuple[str, str]]:
    text = (IMAGES / name / "Dockerfile").read_text().replace("\\\n", " ")
    return [(m.group(1).upper(), m.group(2).strip()) for line in text.splitlines()
            if (m := re.match(r"\s*([A-Za-z]+)\s+(.*)", line)) and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("name", NAMES)
def test_dockerfile_rules(name):
    steps = instructions(name)
    # `ARG BASE=...` before the first FROM: a real Docker build uses that default, hack/images.sh a local base
    defaults = dict(a.split("=", 1) for op, a in steps if op == "ARG" and "=" in a)
    froms = [re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m.group(1), m.group(0)), args).split()
             for op, args in steps if op == "FROM"]
    assert len(froms) >= 2, "multi-stage: a build stage and a runtime stage"
    stages = {f[2].lower() for f in froms if len(f) > 2 and f[1].upper() == "AS"}
    for base in (f[0] for f in froms if f[0].lower() not in stages):
        assert "@sha256:" in base or re.search(r":\d+(\.\d+){2}", base), f"{base}: pin an exact version or digest"
        assert not base.endswith(":latest"), base
    users = [args for op, args in steps if op == "USER"]
    assert users and users[-1] not in ("root", "0"), "the runtime stage must run as a non-root USER"
    assert any(op == "HEALTHCHECK" for op, _ in steps)
    assert steps[-1][0] in ("ENTRYPOINT", "CMD")
