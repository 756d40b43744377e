"""spec.model.artifacts in the operator (ModelStore: background fetch, retry with backoff), in the segment pods it
builds (env and volumes of the shared fetch policy) and in the segment runtime (split.load), against a real
HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import time

import onnx
import pytest
from elasticdf_operator import builders
from elasticdf_operator.api import ElasticInferenceSpec, ModelSource
from elasticdf_operator.builders import Owner, PodFetch
from elasticdf_operator.decide import Decision, resolve_graph
from elasticdf_operator.modelfetch import ModelPending, ModelStore
from elasticdf_partitioner.artifacts import FetchPolicy, ModelError
from elasticdf_partitioner.catalog import load_catalog
from elasticdf_segment import split
from modelserver import ModelServer, Route
from test_finn_io import NEW, small_net
from test_operator_builders import two_segment_instance

GOOD = small_net(NEW).SerializeToString()
DIGEST = hashlib.sha256(GOOD).hexdigest()


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def source(uri: str, digest: str | None = DIGEST) -> ModelSource:
    return ModelSource.model_validate({"artifacts": {"onnx": uri, **({"sha256": digest} if digest else {})}})


def settle(store: ModelStore, src: ModelSource, timeout: float = 10.0):
    """store.graph(src) once it is no longer pending (the reconcile's resync does the same)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return store.graph(src)
        except ModelPending:
            assert time.monotonic() < deadline, "still fetching"
            time.sleep(0.02)


def test_a_slow_download_never_blocks_the_reconcile(tmp_path):
    store = ModelStore(FetchPolicy(cache_dir=tmp_path))
    with ModelServer({"/m.onnx": Route(GOOD, stall_seconds=1.0)}) as server:
        src = source(server.url("/m.onnx"))
        started = time.monotonic()
        decision = Decision()
        assert resolve_graph(store.graph, src, decision) is None
        assert time.monotonic() - started < 0.5
        assert decision.conditions["PartitionSolved"][:2] == ("Unknown", "ModelFetching")
        graph = settle(store, src)
        assert graph.name == "m" and len(graph.layers) == 12
        assert store.graph(src) is graph and server.routes["/m.onnx"].hits == 1


def test_a_failed_fetch_is_retried_after_a_backoff(tmp_path):
    clock = Clock()
    store = ModelStore(FetchPolicy(cache_dir=tmp_path, retries=0), clock=clock)
    with ModelServer({"/m.onnx": Route(GOOD, status=404)}) as server:
        src = source(server.url("/m.onnx"))
        with pytest.raises(ModelError) as first:
            settle(store, src)
        assert first.value.reason == "ModelFetchFailed" and "HTTP 404" in str(first.value)
        clock.now = 4.9
        for _ in range(3):  # within the backoff: the same error, no new request
            with pytest.raises(ModelError):
                store.graph(src)
        assert server.routes["/m.onnx"].hits == 1
        server.routes["/m.onnx"].status = 200  # the server is fixed
        clock.now = 5.0
        with pytest.raises(ModelError):  # the retry starts; its outcome is not known yet: still the last error
            store.graph(src)
        assert len(settle_until_graph(store, src).layers) == 12
        assert server.routes["/m.onnx"].hits == 2


def settle_until_graph(store: ModelStore, src: ModelSource, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return store.graph(src)
        except (ModelPending, ModelError):
            assert time.monotonic() < deadline, "no graph"
            time.sleep(0.02)


def test_an_invalid_model_is_final(tmp_path):
    clock = Clock()
    store = ModelStore(FetchPolicy(cache_dir=tmp_path), clock=clock)
    html = b"<html></html>"
    with ModelServer({"/m.onnx": Route(html)}) as server:
        src = source(server.url("/m.onnx"), hashlib.sha256(html).hexdigest())
        with pytest.raises(ModelError) as err:
            settle(store, src)
        assert err.value.reason == "ModelInvalid"
        clock.now = 1000.0
        with pytest.raises(ModelError):
            store.graph(src)
        time.sleep(0.1)
        assert server.routes["/m.onnx"].hits == 1


def test_zoo_names_and_unknown_names(tmp_path):
    store = ModelStore(FetchPolicy(cache_dir=tmp_path))
    assert store.graph(ModelSource(name="cnv")) is store.graph(ModelSource(name="cnv"))
    decision = Decision()
    assert resolve_graph(store.graph, ModelSource(name="nope"), decision) is None
    assert decision.conditions["PartitionSolved"][:2] == ("False", "InvalidModel")


OWNER = Owner("net", "team", "uid-1")


PLACES = [builders.CardPlace("a", 0, "u280", 0, "sha256:x"), builders.CardPlace("b", 0, "u250", 1, "sha256:y")]


def card_pods(spec: ElasticInferenceSpec, fetch: PodFetch) -> tuple[list, list[dict]]:
    cards = builders.group_wiring(OWNER, spec, 0, "emulation", PLACES, [(0, two_segment_instance())],
                                  {("a", 0): 0, ("b", 0): 1})
    return cards, [builders.card_pod(OWNER, spec, 0, p, c, load_catalog(), fetch=fetch) for p, c in enumerate(cards)]


def pod_for(uri: str, fetch: PodFetch) -> dict:
    spec = ElasticInferenceSpec.model_validate({"model": {"artifacts": {"onnx": uri, "sha256": DIGEST}}})
    cards, pods = card_pods(spec, fetch)
    artifacts = cards[0].segments[0].artifacts
    assert artifacts.onnx == uri and artifacts.onnx_sha256 == DIGEST
    return pods[0]


def test_segment_pods_get_the_operators_fetch_policy(tmp_path):
    policy = FetchPolicy(cache_dir=tmp_path, max_bytes=1000, file_root=tmp_path, plain_http_registries=("r:5000",))
    fetch = PodFetch.of(policy, "regcred")
    pod = pod_for("oci://r:5000/models/net:v1", fetch)
    (c,) = pod["spec"]["containers"]
    env = {e["name"]: e["value"] for e in c["env"]}
    in_pod = FetchPolicy.from_env(env)
    assert (in_pod.max_bytes, in_pod.file_root, in_pod.plain_http_registries) == (1000, tmp_path, ("r:5000",))
    assert str(in_pod.cache_dir) == builders.MODEL_CACHE_DIR
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["model-pull-secret"]["secret"]["secretName"] == "regcred"
    assert volumes["model-pull-secret"]["secret"]["optional"] is True
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert str(in_pod.docker_config).startswith(mounts["model-pull-secret"])
    assert volumes["model-cache"]["emptyDir"]["sizeLimit"] == "1000"

    pvc = pod_for("pvc://models/net.onnx", fetch)
    volumes = {v["name"]: v for v in pvc["spec"]["volumes"]}
    assert volumes["model-pvc"]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    mounts = {m["name"]: m for m in pvc["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["model-pvc"]["mountPath"] == f"{builders.PVC_ROOT}/models" and mounts["model-pvc"]["readOnly"]
    assert "model-pull-secret" not in volumes


def test_zoo_pods_mount_nothing_for_models():
    spec = ElasticInferenceSpec.model_validate({"model": {"name": "cnv"}})
    _, pods = card_pods(spec, PodFetch(max_bytes=10, pull_secret="x"))
    assert [v["name"] for v in pods[0]["spec"]["volumes"]] == ["wiring"]


def test_the_segment_runtime_fetches_with_the_same_policy(tmp_path, monkeypatch):
    monkeypatch.setenv("ELASTICDF_MODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ELASTICDF_MODEL_FILE_ROOT", raising=False)
    with ModelServer({"/m.onnx": Route(GOOD)}) as server:
        model = split.load(server.url("/m.onnx"), f"sha256:{DIGEST}")
    assert isinstance(model, onnx.ModelProto) and len(model.graph.node) == 12
    with pytest.raises(ValueError, match="file:// artifacts are disabled"):
        split.load(f"file://{tmp_path}/m.onnx")
    with pytest.raises(ValueError, match=r"spec.model.artifacts.sha256: required"):
        split.load("https://127.0.0.1:9/m.onnx")


def test_an_unpinned_file_fixed_in_place_is_picked_up(tmp_path):
    clock = Clock()
    store = ModelStore(FetchPolicy(cache_dir=tmp_path / "cache", file_root=tmp_path), clock=clock)
    (tmp_path / "m.onnx").write_bytes(b"not yet")
    src = source(f"file://{tmp_path}/m.onnx", None)
    with pytest.raises(ModelError) as err:
        settle(store, src)
    assert err.value.reason == "ModelInvalid"
    (tmp_path / "m.onnx").write_bytes(GOOD)
    clock.now = 5.0
    assert len(settle_until_graph(store, src).layers) == 12
