"""A user's model by URI (spec.model.artifacts), against the real local control plane and a real HTTP server on
127.0.0.1: a FINN dataflow ONNX plans (PartitionSolved=True) and reaches the segment pods' wiring with its
digest; every bad artifact ends PartitionSolved=False with its reason and a message naming the field."""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

import pytest
from cardpods import GROUP, PLURAL, VERSION, card_pods, condition, groups
from elasticdf_operator.local import local_operator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from modelserver import ModelServer, Route  # noqa: E402
from test_finn_io import NEW, V06, small_net  # noqa: E402

pytestmark = pytest.mark.e2e
MAX_BYTES = 200_000
GOOD = small_net(NEW).SerializeToString()
# the truncated download must not be a model the cache already holds under the same digest (it would be used)
CUT = small_net(V06).SerializeToString()


def unsupported() -> bytes:
    model = small_net(NEW)
    model.graph.node[3].op_type = "FancyNewOp_hls"
    return model.SerializeToString()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    (root / "good.onnx").write_bytes(GOOD)
    (root.parent / "outside.onnx").write_bytes(GOOD)
    big = b"\0" * (MAX_BYTES + 1)
    routes = {"/good.onnx": Route(GOOD), "/truncated.onnx": Route(CUT, truncate_at=100),
              "/html.onnx": Route(b"<html>a login page</html>"), "/fancy.onnx": Route(unsupported()),
              "/big.onnx": Route(big)}
    with ModelServer(routes) as server:
        yield server, root, sha(big)


@pytest.fixture(scope="module")
def operator(kubeconfig, crds, models, tmp_path_factory):
    _, root, _ = models
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    env = {"ELASTICDF_MODEL_FILE_ROOT": str(root), "ELASTICDF_MODEL_MAX_BYTES": str(MAX_BYTES),
           "ELASTICDF_MODEL_CACHE": str(tmp_path_factory.mktemp("model-cache"))}
    with local_operator(kubeconfig, "--metrics-port", "0", "--resync-seconds", "1", log=log, env=env):
        yield log
    print(log.read_text()[-4000:])


def artifact_ei(name: str, onnx_uri: str, digest: str | None, placement: dict) -> dict:
    artifacts = {"onnx": onnx_uri, **({"sha256": digest} if digest else {})}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ElasticInference", "metadata": {"name": name},
            "spec": {"model": {"artifacts": artifacts}, "replicas": 1, "placement": placement,
                     "runtime": {"mode": "emulation"}}}


def settled(custom, ns, name):
    """PartitionSolved once it is no longer Unknown (fetching)."""
    c = condition(custom, ns, name, "PartitionSolved")
    return c if c and c["status"] != "Unknown" else None


def test_a_finn_dataflow_onnx_by_http_and_file_plans(operator, models, custom, core_v1, namespace, pool, wait_for):
    server, root, _ = models
    placement = pool(["u280"], ["u280"])
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                           artifact_ei("web", server.url("/good.onnx"), sha(GOOD), placement))
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                           artifact_ei("disk", f"file://{root}/good.onnx", None, placement))
    for name in ("web", "disk"):
        c = wait_for(lambda name=name: settled(custom, namespace, name), 60, f"{name}: PartitionSolved")
        assert (c["status"], c["reason"]) == ("True", "Solved"), c
    pod = wait_for(lambda: card_pods(core_v1, namespace, "web") or None, 30, "web: card pod")[0]
    wirings = [w for group in groups(core_v1, namespace, "web") for card in group.cards for w in card.segments]
    assert wirings and all(w.artifacts.onnx_sha256 == sha(GOOD) for w in wirings)
    env = {e.name: e.value for e in pod.spec.containers[0].env}
    assert env["ELASTICDF_MODEL_MAX_BYTES"] == str(MAX_BYTES)
    assert {v.name for v in pod.spec.volumes} >= {"wiring", "model-cache"}
    assert server.routes["/good.onnx"].hits == 1  # fetched once, then planned from the graph


BAD = {  # name -> (path or URI, digest, reason, words the message must contain)
    "wrong-digest": ("/good.onnx", "sha256:" + "ab" * 32, "ModelFetchFailed",
                     ["spec.model.artifacts.sha256", "digest mismatch: expected sha256:abab"]),
    "truncated": ("/truncated.onnx", sha(CUT), "ModelFetchFailed",
                  ["spec.model.artifacts.onnx", "connection broke after 100 of"]),
    "not-onnx": ("/html.onnx", sha(b"<html>a login page</html>"), "ModelInvalid",
                 ["spec.model.artifacts.onnx", "not an ONNX model"]),
    "unsupported-op": ("/fancy.onnx", sha(unsupported()), "ModelInvalid",
                       ["spec.model.artifacts.onnx", "MVAU_0", "FancyNewOp_hls"]),
    "too-large": ("/big.onnx", None, "ModelFetchFailed", ["spec.model.artifacts.onnx", "too large", str(MAX_BYTES)]),
    "ftp": ("ftp://127.0.0.1/m.onnx", sha(GOOD), "InvalidSpec",
            ["spec.model.artifacts.onnx", "scheme 'ftp' not supported", "https, http, oci, file, pvc"]),
    "outside-root": ("file://ROOT/../outside.onnx", None, "InvalidSpec",
                     ["spec.model.artifacts.onnx", "outside the allowed root"]),
}


def test_bad_artifacts_give_their_condition(operator, models, custom, namespace, pool, wait_for):
    server, root, big_digest = models
    placement = pool(["u280"])
    for name, (where, digest, _, _) in BAD.items():
        uri = server.url(where) if where.startswith("/") else where.replace("ROOT", str(root))
        digest = digest or (big_digest if name == "too-large" else None)
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                               artifact_ei(name, uri, digest, placement))
    for name, (_, _, reason, words) in BAD.items():
        c = wait_for(lambda name=name: settled(custom, namespace, name), 60, f"{name}: PartitionSolved")
        assert (c["status"], c["reason"]) == ("False", reason), (name, c)
        assert all(w in c["message"] for w in words), (name, c["message"])
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        assert obj["status"]["phase"] == "Failed" and obj["status"]["replicas"] == 0
    # bad models are conditions, never tracebacks (other handlers' tracebacks, e.g. on a terminating namespace
    # at the end of the previous test, are not this test's business)
    frames = re.findall(r'File ".*/(artifacts|modelio|modelfetch|finn_io)\.py"', operator.read_text())
    assert not frames, f"traceback through the model fetch/import: {frames}"


def test_http_without_digest_is_refused_by_the_api(operator, custom, namespace):
    from kubernetes.client.rest import ApiException

    with pytest.raises(ApiException) as err:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                               artifact_ei("nodigest", "https://example.org/m.onnx", None, {}))
    assert err.value.status == 422 and "sha256 is required" in err.value.body

