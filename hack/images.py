"""Build the container images from images/*/Dockerfile with buildah, on a locally bootstrapped Debian base.

No Docker engine and no public container registry are needed: a Debian bookworm minbase rootfs with python3
(debootstrap, from the Debian mirror this machine's apt uses) becomes a local base image that stands in for
the public python base (the Dockerfiles' `ARG BASE`), then `buildah bud` builds every image with its layer
cache and writes a docker-archive per image that `ctr -n k8s.io images import` accepts:

    .cache/images/<name>.tar    tagged exactly as the operator and the chart name the image (nothing else
                                in that folder ends in .tar: every such file can be imported)

Everything lives under .cache/images (buildah storage, the base rootfs keyed by a hash of its recipe, the
archives). A re-run with nothing changed rebuilds nothing and rewrites no archive; after a code change only
the last layers of the images that copy it are rebuilt.

Usage: hack/images.sh [build|check|plan] [NAME...]   (default: build, then check, every image)
Env:   ELASTICDF_CACHE  cache folder (default: <repo>/.cache); everything goes to $ELASTICDF_CACHE/images
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("ELASTICDF_CACHE", ROOT / ".cache")) / "images"
VERSION = "0.1.0"  # the chart's appVersion and the operator's default image tag
REGISTRY = "ghcr.io/elasticdf"
# Build order matters: the gateway reuses the segment's dependency layer, so the segment goes first.
NAMES = ["segment", "gateway", "operator", "discovery"]
# What proves an image imports cleanly: its entry point's --help.
SMOKE = {
    "segment": ["python", "-m", "elasticdf_segment", "--help"],
    "gateway": ["python", "-m", "elasticdf_gateway", "--help"],
    "operator": ["elasticdf-operator", "--help"],
    "discovery": ["python", "-m", "elasticdf_discovery", "--help"],
}
HOST_PACKAGES = {"buildah": "buildah", "debootstrap": "debootstrap"}  # command -> Debian package
# Bump when the way the base is made changes in a way the recipe below does not show.
BASE_RECIPE_VERSION = 1
BASE_SUITE = "bookworm"
# python3-minimal lacks much of the stdlib (http, email, ...); python3-venv brings ensurepip for /opt/venv.
BASE_PACKAGES = ["python3", "python3-venv", "ca-certificates", "netbase"]
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def log(msg: str) -> None:
    print(f"images: {msg}", flush=True)


def image_tag(name: str) -> str:
    return f"{REGISTRY}/{name}:{VERSION}"


def archive_path(name: str, cache: Path = CACHE) -> Path:
    return cache / f"{name}.tar"


# ---------------------------------------------------------------------------------------------- the base


def debian_mirror(apt_dir: Path = Path("/etc/apt"), suite: str = BASE_SUITE) -> str:
    """The URI this machine's apt fetches `suite` main from (deb822 .sources first, then one-line lists)."""
    for sources in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", sources.read_text()):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, flags=re.M))
            if ("deb" in fields.get("Types", "").split() and suite in fields.get("Suites", "").split()
                    and "main" in fields.get("Components", "").split() and fields.get("Enabled", "yes") != "no"):
                return fields["URIs"].split()[0]
    lists = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for listing in (p for p in lists if p.is_file()):
        for line in listing.read_text().splitlines():
            words = re.sub(r"\[[^]]*\]", " ", line.split("#")[0]).split()
            if len(words) >= 4 and words[0] == "deb" and words[2] == suite and "main" in words[3:]:
                return words[1]
    raise SystemExit(f"images: no Debian '{suite} main' source in {apt_dir}/sources.list*: cannot bootstrap a base")


def base_recipe(mirror: str) -> dict[str, object]:
    return {"version": BASE_RECIPE_VERSION, "suite": BASE_SUITE, "variant": "minbase",
            "packages": BASE_PACKAGES, "mirror": mirror, "env": BASE_ENV}


def base_tag(recipe: dict[str, object]) -> str:
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    return f"localhost/elasticdf/base:{digest}"


# ---------------------------------------------------------------------------------------------- host tools


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, **kwargs)


def apt_get(*args: str, attempts: int = 20) -> None:
    """apt-get, retried while another process holds the apt/dpkg lock."""
    argv = ["apt-get", "-q", "-o", "DPkg::Lock::Timeout=60", *args]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for attempt in range(1, attempts + 1):
        done = subprocess.run(argv, capture_output=True, text=True, env=env)
        if done.returncode == 0:
            return
        if "lock" not in done.stderr.lower() or attempt == attempts:
            raise SystemExit(f"images: {' '.join(argv)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        log(f"apt is busy (another install holds its lock), retrying in 5 s ({attempt}/{attempts})")
        time.sleep(5)


def ensure_host_tools() -> None:
    missing = [pkg for cmd, pkg in HOST_PACKAGES.items() if shutil.which(cmd) is None]
    if missing:
        t0 = time.monotonic()
        apt_get("update")
        apt_get("install", "-y", "--no-install-recommends", *missing)
        log(f"installed {' '.join(missing)} from Debian packages in {time.monotonic() - t0:.1f} s")


@dataclass(frozen=True)
class Buildah:
    """buildah with its own storage under the cache folder: nothing of the host's container store is touched."""

    cache: Path = CACHE

    def argv(self, *args: str) -> list[str]:
        return ["buildah", "--root", str(self.cache / "storage"), "--runroot", str(self.cache / "runroot"),
                "--storage-driver", "overlay", *args]

    def env(self) -> dict[str, str]:
        # buildah keeps RUN --mount=type=cache folders under TMPDIR: keep them in the cache folder too.
        (self.cache / "tmp").mkdir(parents=True, exist_ok=True)
        return {**os.environ, "TMPDIR": str(self.cache / "tmp")}

    def __call__(self, *args: str, capture: bool = False) -> str:
        done = run(self.argv(*args), env=self.env(), text=True, stdout=subprocess.PIPE if capture else None)
        return (done.stdout or "").strip()

    def image_id(self, ref: str) -> str | None:
        done = subprocess.run(self.argv("inspect", "--type", "image", "--format", "{{.FromImageID}}", ref),
                              env=self.env(), capture_output=True, text=True)
        return (done.stdout.strip() or None) if done.returncode == 0 else None


def bootstrap_rootfs(recipe: dict[str, object], tarball: Path) -> None:
    """debootstrap the recipe into a temp folder and pack it (numeric owners, no device nodes) as `tarball`."""
    with tempfile.TemporaryDirectory(dir=tarball.parent, prefix="rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        run(["debootstrap", f"--variant={recipe['variant']}", f"--include={','.join(recipe['packages'])}",
             str(recipe["suite"]), str(rootfs), str(recipe["mirror"])], stdout=subprocess.DEVNULL)
        for junk in ("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*_*", "var/log/*.log", "dev/*"):
            for path in rootfs.glob(junk):
                path.unlink() if not path.is_dir() or path.is_symlink() else shutil.rmtree(path)
        partial = tarball.with_suffix(".partial")
        run(["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf", str(partial), "."])
        partial.rename(tarball)


def ensure_base(bh: Buildah, recipe: dict[str, object]) -> str:
    """The local base image for `recipe`, made (or imported from its cached rootfs) only when missing."""
    tag = base_tag(recipe)
    if bh.image_id(tag):
        return tag
    # a folder of its own: every .cache/images/*.tar is an image archive that gets imported into the nodes
    tarball = bh.cache / "base" / f"{tag.rsplit(':', 1)[1]}.rootfs.tar"
    if not tarball.exists():
        tarball.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        log(f"bootstrapping Debian {recipe['suite']} {recipe['variant']} + {' '.join(recipe['packages'])} "
            f"from {recipe['mirror']}")
        bootstrap_rootfs(recipe, tarball)
        log(f"rootfs {tarball.name}: {tarball.stat().st_size / 1e6:.0f} MB in {time.monotonic() - t0:.1f} s")
    container = bh("from", "scratch", capture=True)
    try:
        bh("add", container, str(tarball), "/")
        config = [f"--env={k}={v}" for k, v in BASE_ENV.items()]
        bh("config", *config, "--cmd", "python3", "--created-by", f"debootstrap {json.dumps(recipe)}", container)
        bh("commit", "--quiet", "--format", "docker", container, tag, capture=True)
    finally:
        bh("rm", container, capture=True)
    log(f"base image {tag}")
    return tag


# ---------------------------------------------------------------------------------------------- the images


def pip_network_args() -> list[str]:
    """RUN steps reach PyPI from the host's network and trust the host's CA bundle (which may carry a
    TLS-inspecting egress proxy's CA) in place of the image's, without baking it into a layer."""
    args = ["--network", "host"]
    if HOST_CA_BUNDLE.is_file():
        args += ["--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
    return args


def build_image(bh: Buildah, name: str, base: str) -> str:
    t0 = time.monotonic()
    bh("bud", "--layers", "--pull=never", "--format", "docker", "--isolation", "chroot", *pip_network_args(),
       "--build-arg", f"BASE={base}", "-f", str(ROOT / "images" / name / "Dockerfile"), "-t", image_tag(name),
       str(ROOT))
    image = bh.image_id(image_tag(name))
    log(f"built {image_tag(name)} ({image[:12]}) in {time.monotonic() - t0:.1f} s")
    return image


def export_archive(bh: Buildah, name: str, image: str) -> Path:
    """docker-archive of the image, rewritten only when the image changed (its id is kept beside it)."""
    archive, stamp = archive_path(name, bh.cache), bh.cache / f"{name}.tar.id"
    if archive.exists() and stamp.exists() and stamp.read_text() == image:
        return archive
    t0 = time.monotonic()
    partial = archive.with_suffix(".tar.partial")
    partial.unlink(missing_ok=True)
    bh("push", "--quiet", image_tag(name), f"docker-archive:{partial}:{image_tag(name)}")
    partial.rename(archive)
    stamp.write_text(image)
    log(f"wrote {archive} ({archive.stat().st_size / 1e6:.0f} MB) in {time.monotonic() - t0:.1f} s")
    return archive


def check_image(bh: Buildah, name: str) -> None:
    """Run the image's entry point with --help inside it: every module it needs must import."""
    if not bh.image_id(image_tag(name)):
        raise SystemExit(f"images: {image_tag(name)} is not built: run hack/images.sh build {name}")
    container = bh("from", "--pull=never", image_tag(name), capture=True)
    try:
        done = subprocess.run(bh.argv("run", "--isolation", "chroot", container, "--", *SMOKE[name]),
                              env=bh.env(), capture_output=True, text=True)
    finally:
        bh("rm", container, capture=True)
    if done.returncode != 0 or "usage" not in done.stdout.lower():
        raise SystemExit(f"images: {image_tag(name)}: `{' '.join(SMOKE[name])}` failed "
                         f"(exit {done.returncode}):\n{done.stdout[-1500:]}{done.stderr[-3000:]}")
    log(f"{image_tag(name)}: `{' '.join(SMOKE[name])}` ok")


def plan(names: list[str], cache: Path = CACHE) -> dict[str, object]:
    recipe = base_recipe(debian_mirror())
    return {"base": {"tag": base_tag(recipe), "recipe": recipe},
            "images": [{"name": n, "tag": image_tag(n), "dockerfile": f"images/{n}/Dockerfile",
                        "archive": str(archive_path(n, cache))} for n in names]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hack/images.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", nargs="?", choices=["build", "check", "plan"], default="build",
                        help="build (and check) the images, only check built ones, or print what would be built")
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"images to build (default: all of {NAMES})")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(NAMES))
    if unknown:
        parser.error(f"unknown image {', '.join(unknown)}; known: {', '.join(NAMES)}")
    names = [n for n in NAMES if n in args.names] if args.names else NAMES
    if args.action == "plan":
        print(json.dumps(plan(names), indent=2))
        return 0
    t0 = time.monotonic()
    ensure_host_tools()
    bh = Buildah()
    try:
        if args.action == "build":
            base = ensure_base(bh, base_recipe(debian_mirror()))
            for name in names:
                export_archive(bh, name, build_image(bh, name, base))
        for name in names:
            check_image(bh, name)
    except subprocess.CalledProcessError as failed:  # the tool printed its own error above
        raise SystemExit(f"images: `{' '.join(failed.cmd)}` failed with exit code {failed.returncode}") from None
    log(f"{args.action} done in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
