"""The gateway follows its wiring: a mounted ConfigMap the kubelet updates in place (`..data` symlink swap)
is re-read when its content changes; instances come and go without a restart."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from elasticdf_contract.wiring import Endpoint, SegmentWiring
from elasticdf_gateway.__main__ import WiringWatcher, load_wirings, reload
from elasticdf_gateway.pipeline import Pipeline, RequestFailed
from elasticdf_gateway.service import UNKNOWN_INPUT, Model, Service
from elasticdf_gateway.tensors import from_bytes, from_list


def wirings(instance: int, segments: int = 2, host: str = "p") -> list[SegmentWiring]:
    gw = Endpoint(kind="gateway", host="gw", port=8000)
    pods = [Endpoint(kind="pod", host=f"{host}{instance}-{s}", port=7000) for s in range(segments)]
    return [SegmentWiring(instance_id=f"ns/m-{instance}", instance=instance, segment=s, segments=segments,
                          mode="emulation", model="m", node="n", card=s, card_type="u280", slrs=[0],
                          layer_range=[s, s], layers=["a", "a"], listen=pods[s],
                          upstream=pods[s - 1] if s else gw, downstream=pods[s + 1] if s + 1 < segments else gw)
            for s in range(segments)]


def publish(root: Path, files: dict[str, str], generation: int) -> None:
    """What the kubelet's atomic writer does for a ConfigMap volume: a new timestamped directory, an atomic
    swap of the `..data` symlink, one top-level symlink per key (stale ones removed)."""
    stamp = root / f"..2024_01_01_00_00_0{generation}.000"
    stamp.mkdir()
    for key, text in files.items():
        (stamp / key).write_text(text)
    tmp = root / "..data_tmp"
    tmp.symlink_to(stamp.name)
    os.replace(tmp, root / "..data")
    for entry in root.iterdir():
        if not entry.name.startswith("..") and entry.name not in files:
            entry.unlink()
    for key in files:
        if not (root / key).is_symlink():
            (root / key).symlink_to(f"..data/{key}")


def configmap(*instances: list[SegmentWiring]) -> dict[str, str]:
    """The operator's gateway ConfigMap data (builders.gateway_configmap)."""
    return {f"instance-{w.instance}-segment-{w.segment}.json": w.model_dump_json() for ws in instances for w in ws}


def test_a_mounted_configmap_loads_each_segment_once(tmp_path):
    publish(tmp_path, configmap(wirings(0), wirings(1)), 1)
    loaded = load_wirings([str(tmp_path)])
    assert sorted((w.instance, w.segment) for w in loaded) == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_chart_layout_of_a_directory_per_instance_still_loads(tmp_path):
    for w in wirings(0) + wirings(1):
        (tmp_path / f"instance-{w.instance}").mkdir(exist_ok=True)
        (tmp_path / f"instance-{w.instance}" / f"segment-{w.segment}.json").write_text(w.model_dump_json())
    assert len(load_wirings([str(tmp_path)])) == 4


def test_scale_up_adds_an_instance_and_keeps_the_running_one(tmp_path):
    publish(tmp_path, configmap(wirings(0)), 1)
    pipeline = Pipeline(load_wirings([str(tmp_path)]))
    first = pipeline.instances[0]
    first.up = True
    service = Service(Model("m", [UNKNOWN_INPUT]), pipeline)
    watcher = WiringWatcher([str(tmp_path)], lambda ws: reload(service, ws), interval=0.01)
    assert watcher.poll() is False  # nothing changed

    publish(tmp_path, configmap(wirings(0), wirings(1)), 2)
    assert watcher.poll() is True
    assert [i.id for i in pipeline.instances] == ["ns/m-0", "ns/m-1"]
    assert pipeline.instances[0] is first and first.up, "the unchanged instance stays in rotation"
    assert not pipeline.instances[1].up, "a new instance waits for its health check"
    assert watcher.poll() is False


def test_a_replanned_instance_is_replaced(tmp_path):
    pipeline = Pipeline(wirings(0))
    pipeline.instances[0].up = True
    added, removed = pipeline.update(wirings(0, host="q"))  # same id, segments moved to other pods
    assert added == removed == ["ns/m-0"]
    assert not pipeline.instances[0].up and pipeline.instances[0].wirings[0].listen.host == "q0-0"


def test_unparsable_change_keeps_the_old_wiring_and_is_retried(tmp_path):
    good = wirings(0)[0]
    path = tmp_path / "segment-0.json"
    path.write_text(good.model_dump_json())
    seen: list = []
    watcher = WiringWatcher([str(tmp_path)], seen.append)
    path.write_text('{"instance_id": ')
    assert watcher.poll() is False and not seen
    path.write_text(json.dumps({**json.loads(good.model_dump_json()), "card": 5}))
    assert watcher.poll() is True and seen[0][0].card == 5


def test_a_gateway_that_cannot_read_the_model_takes_any_frame_shape():
    """The operator's gateway Deployment does not fetch file:// or oci:// models: the segments check shapes."""
    assert from_bytes("x", "UINT8", [2, 3, 4, 4], bytes(96), UNKNOWN_INPUT, 8).shape == (2, 3, 4, 4)
    assert from_list("x", "FP32", [1, 3], [1.0, 2.0, 3.0], UNKNOWN_INPUT, 8).shape == (1, 3)
    with pytest.raises(RequestFailed, match="holds 9 frames; this gateway takes 1 to 8"):
        from_bytes("x", "UINT8", [9, 1], bytes(9), UNKNOWN_INPUT, 8)
    with pytest.raises(RequestFailed, match="holds 0 frames"):
        from_list("x", "FP32", [], [1.0], UNKNOWN_INPUT, 8)
