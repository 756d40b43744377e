"""Container image builds with hack/images.sh: cold, warm, and after a one-line change to a segment source file;
the size of every image and archive, and which layers the images share.

The builds run on a copy of the repository's files (tracked and untracked, not ignored) in a temp folder under
.cache with its own ELASTICDF_CACHE, so neither the repository nor its .cache/images is touched and "cold" means
an empty image cache: the Debian base is bootstrapped again and every dependency is downloaded again (buildah
and debootstrap themselves are installed only when missing). Needs root, the Debian mirror and PyPI.
Wall-clock times depend on the load of the machine (reported as the load average at the start of each build).

Run: python3 benchmarks/images_bench.py [--out benchmarks/results/images.md]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHANGED_FILE = "images/segment/src/elasticdf_segment/__main__.py"
STEPS = ["base", "segment", "gateway", "operator", "discovery", "archives"]


def copy_repository(dest: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)


def step_seconds(output: str) -> dict[str, float]:
    """Seconds per step from hack/images.sh's own log lines: the base, each image's build, archive writes."""
    steps: dict[str, float] = {}
    for line in output.splitlines():
        if m := re.match(r"images: rootfs .* in ([\d.]+) s$", line):
            steps["base"] = float(m.group(1))
        elif m := re.match(r"images: built \S+/(\w+):\S+ .* in ([\d.]+) s$", line):
            steps[m.group(1)] = float(m.group(2))
        elif m := re.match(r"images: wrote .* in ([\d.]+) s$", line):
            steps["archives"] = steps.get("archives", 0.0) + float(m.group(1))
    return steps


def timed_build(repo: Path, cache: Path, log: Path) -> dict[str, object]:
    load = os.getloadavg()[0]
    start = log.stat().st_size
    t0 = time.monotonic()
    with log.open("a") as out:
        done = subprocess.run([str(repo / "hack" / "images.sh"), "build"], cwd=repo, stdout=out,
                              stderr=subprocess.STDOUT, env={**os.environ, "ELASTICDF_CACHE": str(cache)})
    if done.returncode != 0:
        raise SystemExit(f"images_bench: hack/images.sh build failed (exit {done.returncode}); output: {log}")
    seconds = time.monotonic() - t0
    with log.open() as out:
        out.seek(start)
        return {"seconds": seconds, "load": load, "steps": step_seconds(out.read())}


def load_images_module(repo: Path):
    spec = importlib.util.spec_from_file_location("images_under_test", repo / "hack" / "images.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def image_facts(images, cache: Path) -> list[dict[str, object]]:
    bh = images.Buildah(cache=cache / "images")
    layers = {}
    for name in images.NAMES:
        config = json.loads(bh("inspect", "--type", "image", images.image_tag(name), capture=True))
        layers[name] = config["OCIv1"]["rootfs"]["diff_ids"]
    facts = []
    for name in images.NAMES:
        others = {d for other, ids in layers.items() if other != name for d in ids}
        archive = images.archive_path(name, cache / "images")
        facts.append({"name": name, "tag": images.image_tag(name), "archive_mb": archive.stat().st_size / 1e6,
                      "layers": len(layers[name]), "shared": sum(d in others for d in layers[name])})
    return facts


def distinct_layers_mb(archives: list[Path]) -> float:
    """What a node imports for all images together: every distinct layer of the archives once."""
    sizes = {}
    for archive in archives:
        with tarfile.open(archive) as tar:
            sizes.update({m.name: m.size for m in tar.getmembers() if m.isfile() and m.name.endswith(".tar")})
    return sum(sizes.values()) / 1e6


def table(runs: dict[str, dict[str, object]], facts: list[dict[str, object]], distinct_mb: float) -> str:
    lines = ["# Container image builds (hack/images.sh, buildah on a local Debian base)", "",
             "Produced by `python3 benchmarks/images_bench.py` on this project's 2-core machine, shared with other",
             "work (load average at the start of each build in the table). Cold: empty image cache (Debian base",
             "bootstrapped, every dependency downloaded from PyPI); warm: nothing changed; change: one line added",
             f"to `{CHANGED_FILE}` (the segment and gateway images copy it).", "",
             "Steps in seconds (from the script's log; '-' = nothing to do); the rest of the wall-clock is the",
             "import of the base rootfs (cold), the `--help` check of every image and buildah's start-up.", "",
             "| build | wall-clock s | load average | " + " | ".join(STEPS) + " |",
             "| --- | ---: | ---: |" + " ---: |" * len(STEPS)]
    for name, run in runs.items():
        steps = " | ".join(f"{run['steps'][s]:.1f}" if s in run["steps"] else "-" for s in STEPS)
        lines.append(f"| {name} | {run['seconds']:.1f} | {run['load']:.1f} | {steps} |")
    lines += ["", "| image | tag | archive MB | layers | layers shared with another image |",
              "| --- | --- | ---: | ---: | ---: |"]
    lines += [f"| {f['name']} | `{f['tag']}` | {f['archive_mb']:.0f} | {f['layers']} | {f['shared']} |" for f in facts]
    lines += ["", f"All archives together: {sum(f['archive_mb'] for f in facts):.0f} MB; their distinct layers "
              f"(what a node stores for all four images): {distinct_mb:.0f} MB."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "images.md")
    args = parser.parse_args()
    (ROOT / ".cache").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="images-bench-", dir=ROOT / ".cache"))
    try:
        repo, cache = work / "repo", work / "cache"
        log = ROOT / ".cache" / "images-bench.log"  # kept: the build output of the last run, also on failure
        log.write_text("")
        copy_repository(repo)
        runs = {"cold": timed_build(repo, cache, log), "warm": timed_build(repo, cache, log)}
        with (repo / CHANGED_FILE).open("a") as source:
            source.write("# benchmarks/images_bench.py: a one-line change\n")
        runs["change"] = timed_build(repo, cache, log)
        images = load_images_module(repo)
        facts = image_facts(images, cache)
        archives = [images.archive_path(name, cache / "images") for name in images.NAMES]
        text = table(runs, facts, distinct_layers_mb(archives))
        args.out.write_text(text)
        print(text)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
