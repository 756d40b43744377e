"""Card pods run from a pulled card build (issue 15): the CNCF registry runs in a pod namespace of the fabric, each
card's artifact (build.json, report.json, segment-<a>-<b>.onnx cut from the model) is pushed to it, the
operator's init container command (builders.build_pull) runs in each card pod's namespace against the
registry's DNS name, and the segments serve from the pulled files with the model itself gone: answers are
bit-identical to the unsplit model. An artifact changed on the registry's disk is refused by the same command."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import PYTHON, ROOT, Fabric, _die_with_parent, build_pipeline, infer
from elasticdf_contract.builds import BuildRecord, BuildReport, segment_file
from elasticdf_partitioner.artifacts import FetchPolicy
from elasticdf_partitioner.oci_builds import build_reference, plain_http, push_build
from elasticdf_segment import split, testmodels
from test_pipeline import reference

REGISTRY = Path(os.environ.get("ELASTICDF_CACHE", ROOT / ".cache")) / "bin" / "registry"
REGISTRY_NAME, REGISTRY_PORT = "registry.elasticdf-system.svc", 5000
ELASTICDF = str(Path(PYTHON).parent / "elasticdf")  # the console script, as in the segment image


@contextlib.contextmanager
def registry_pod(fabric: Fabric, state: Path) -> Iterator[str]:
    """The registry (no auth, filesystem storage under `state`) in its own pod namespace; yields its IP."""
    if not REGISTRY.exists():
        pytest.skip(f"{REGISTRY} is not built (hack/build-tools.sh registry)")
    ip = fabric.add_pod("registry", [REGISTRY_NAME])
    state.mkdir()
    (state / "config.yml").write_text(json.dumps({
        "version": 0.1, "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(state / "data")}},
        "http": {"addr": f"0.0.0.0:{REGISTRY_PORT}"}}))
    proc = subprocess.Popen(["ip", "netns", "exec", fabric.namespaces["registry"], str(REGISTRY), "serve",
                             str(state / "config.yml")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=_die_with_parent)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://{ip}:{REGISTRY_PORT}/v2/", timeout=1).close()
                break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the registry did not start in its namespace") from None
                time.sleep(0.1)
        yield ip
    finally:
        proc.kill()
        proc.wait()


def write_artifact(out: Path, model: onnx.ModelProto, card) -> BuildRecord:
    """What the emulation builder makes of a card build: its record, report and one cut graph per segment."""
    uri = "onnx:" + card.segments[0].artifacts.onnx
    segments = [{"layers": w.layer_range, "slrs": w.slrs, "floorplan": {}} for w in card.segments]
    record = BuildRecord(digest=BuildRecord.content_digest(uri, card.card_type, 200.0, segments, {}), model=uri,
                         card_type=card.card_type, fclk_mhz=200.0, segments=segments)
    out.mkdir()
    files = []
    for w in card.segments:
        files.append(segment_file(*w.layer_range))
        onnx.save(split.cut(model, *w.layer_range), str(out / files[-1]))
    (out / "build.json").write_text(record.model_dump_json(by_alias=True))
    report = BuildReport(digest=record.digest, mode="emulation", clock_mhz=200.0, clock_source="modelled",
                         files=files, builder="tests/dataplane (split.cut)", seconds=0.0)
    (out / "report.json").write_text(report.model_dump_json(by_alias=True))
    return record


def init_command(card, target: Path) -> list[str]:
    """The card pod's init container command (the operator's), pulling into `target` instead of BUILD_DIR."""
    from elasticdf_operator import builders

    [init], _, _ = builders.build_pull(card, "segment-image", builders.BuildPull(insecure=True))
    command = init["command"]
    command[command.index("-o") + 1] = str(target)
    return [ELASTICDF, *command[1:]]


def run_in_pod(fabric: Fabric, pod: str, command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", fabric.namespaces[pod], *command], capture_output=True, text=True,
                          timeout=120)


def test_segments_serve_from_the_pulled_build_and_a_tampered_build_is_refused(fabric, tmp_path):
    model = testmodels.plain_cnn(seed=3)
    ranges = [[0, 1], [2, 3], [4, 5]]
    with registry_pod(fabric, tmp_path / "registry") as registry_ip:
        policy = plain_http(FetchPolicy(cache_dir=tmp_path / "cache"), f"{registry_ip}:{REGISTRY_PORT}")

        def rewire(cards):
            built = []
            for i, card in enumerate(cards):
                record = write_artifact(tmp_path / f"out-{i}", model, card)
                manifest = push_build(tmp_path / f"out-{i}", f"{registry_ip}:{REGISTRY_PORT}", policy)
                card = card.model_copy(update={"build": record.digest}, deep=True)
                for w in card.segments:
                    w.artifacts.build = build_reference(f"{REGISTRY_NAME}:{REGISTRY_PORT}", manifest)
                built.append(card)
            return built

        pipeline = build_pipeline(fabric, tmp_path, model, ranges, rewire=rewire)
        for i, card in enumerate(pipeline.cards):
            pulled = run_in_pod(fabric, f"s{i}", init_command(card, tmp_path / f"build-{i}"))
            assert pulled.returncode == 0, pulled.stderr
            assert (tmp_path / f"build-{i}" / segment_file(*ranges[i])).is_file()
        pipeline.model_path.unlink()  # the segments cannot cut the model themselves: they must use the build
        try:
            pipeline.start_gateway()
            for i in range(len(ranges)):
                pipeline.start_segment(i, {"ELASTICDF_BUILD_DIR": str(tmp_path / f"build-{i}")})
            pipeline.wait_ready()
            frames = testmodels.random_frames(24, seed=7)
            with ThreadPoolExecutor(4) as pool:
                replies = list(pool.map(lambda f: infer(pipeline.url, f), frames))
            for (status, body), want in zip(replies, reference(model, frames)):
                assert status == 200, body
                out = body["outputs"][0]
                assert np.array_equal(np.asarray(out["data"], dtype=np.float32).reshape(out["shape"]), want)
        finally:
            pipeline.stop()

        # the middle card's segment graph changed on the registry's disk: its init container refuses it
        segment = (tmp_path / "out-1" / segment_file(*ranges[1])).read_bytes()
        hexdigest = hashlib.sha256(segment).hexdigest()
        blob = tmp_path / "registry/data/docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"
        blob.write_bytes(segment[:-1] + bytes([segment[-1] ^ 1]))
        refused = run_in_pod(fabric, "s1", init_command(pipeline.cards[1], tmp_path / "build-again"))
        assert refused.returncode == 2
        assert "refused" in refused.stderr and f"{segment_file(*ranges[1])}: digest mismatch" in refused.stderr
        assert list((tmp_path / "build-again").iterdir()) == []
