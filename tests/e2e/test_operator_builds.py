"""Card builds on the real control plane (kwok nodes) with the CNCF registry on loopback (issue 15): the operator
makes one builder Job per build digest for two resources in two namespaces, holds their groups with BuildPending,
reports status.builds, and once the artifact is in the registry wires it into the card pods; a builder that
pushes nothing is re-created once, then reported as BuildFailed.

kwok runs no containers: builder pods stay Pending (the Jobs' nodeSelector matches no node) until a test labels
a node for them, and then kwok "completes" them without pushing. So the test pushes the artifact itself, as the
builder's `push` step would; the real tier (tests/real) runs the builder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from cardpods import GROUP, PLURAL, VERSION, condition, ei, groups, serving, status
from elasticdf_contract.builds import (
    BUILD_REPOSITORY,
    RECORD_FILE,
    REPORT_FILE,
    XCLBIN_FILE,
    BuildRecord,
    BuildReport,
    build_tag,
)
from elasticdf_contract.names import LABEL_BUILD
from elasticdf_operator.local import local_operator
from elasticdf_partitioner.artifacts import FetchPolicy
from elasticdf_partitioner.oci_builds import plain_http, push_build
from kube_helpers import fresh_namespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_artifacts import REGISTRY, push, running_registry  # noqa: E402

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not REGISTRY.exists(), reason="no registry binary (hack/build-tools.sh registry)")]
BUILDER_LABEL = "e2e.elasticdf.io/builder"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    with running_registry(tmp_path_factory.mktemp("registry"), {}) as reg:
        yield reg


@pytest.fixture(scope="module")
def builds_ns(core_v1):
    yield from fresh_namespace(core_v1, "builds")


@pytest.fixture(scope="module")
def operator(kubeconfig, crds, simulated_nodes, registry, builds_ns, tmp_path_factory):
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    env = {"ELASTICDF_BUILD_REGISTRY": registry, "ELASTICDF_BUILD_INSECURE": "1", "POD_NAMESPACE": builds_ns,
           "ELASTICDF_BUILD_NODE_SELECTOR": json.dumps({BUILDER_LABEL: "yes"}), "ELASTICDF_BUILD_RECREATIONS": "1",
           "ELASTICDF_BUILD_BUILDER_IMAGE": "elasticdf/segment:e2e"}
    with local_operator(kubeconfig, "--metrics-port", "0", "--resync-seconds", "1", log=log, env=env) as proc:
        yield proc
    print(log.read_text()[-4000:])


@pytest.fixture
def second_namespace(core_v1):
    yield from fresh_namespace(core_v1, "e2e2")


def build_jobs(k8s_client, ns: str, digest: str) -> list:
    from kubernetes import client

    return client.BatchV1Api(k8s_client).list_namespaced_job(ns, label_selector=f"{LABEL_BUILD}={build_tag(digest)}"
                                                             ).items


def pending_build(custom, ns: str, name: str) -> str | None:
    """The one build of `name` while its group is held for it (Scheduled=False/BuildPending naming it)."""
    builds = status(custom, ns, name).get("builds") or []
    scheduled = condition(custom, ns, name, "Scheduled") or {}
    if len(builds) != 1 or not builds[0].get("job") or scheduled.get("reason") != "BuildPending":
        return None
    return builds[0]["digest"] if builds[0]["digest"] in scheduled["message"] else None


def test_one_job_per_build_across_namespaces_then_pods_pull_the_pushed_artifact(
        operator, registry, builds_ns, k8s_client, custom, core_v1, namespace, second_namespace, pool, wait_for):
    for ns in (namespace, second_namespace):  # same model, same card type: the same card build
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL,
                                               ei("mnv", "mobilenetv1", replicas=1, placement=pool(["u280"])))
    digest = wait_for(lambda: pending_build(custom, namespace, "mnv"), 60, "held with BuildPending")
    assert wait_for(lambda: pending_build(custom, second_namespace, "mnv"), 60, "second held") == digest
    (job,) = build_jobs(k8s_client, builds_ns, digest)
    assert core_v1.list_namespaced_pod(namespace, label_selector="elasticdf.io/role=card").items == []
    built = status(custom, namespace, "mnv")["builds"][0]
    assert built["phase"] == "Pending" and built["job"] == job.metadata.name and built["attempts"] == 1

    manifest = push(registry, BUILD_REPOSITORY, build_tag(digest), [(b"{}", "application/json", "build.json")],
                    authorization="")  # what the Job's push step does
    artifact = f"oci://{registry}/{BUILD_REPOSITORY}@sha256:{manifest}"
    for ns in (namespace, second_namespace):
        wait_for(lambda ns=ns: serving(core_v1, custom, ns, "mnv", 1), 60, f"serving in {ns}")
        (group,) = groups(core_v1, ns, "mnv")
        assert {w.artifacts.build for c in group.cards for w in c.segments} == {artifact}
        built = status(custom, ns, "mnv")["builds"][0]
        assert (built["phase"], built["artifact"]) == ("Ready", artifact)
    assert len(build_jobs(k8s_client, builds_ns, digest)) == 1, "one build for both namespaces"
    reasons = {ns: [e.reason for e in core_v1.list_namespaced_event(ns).items]
               for ns in (namespace, second_namespace)}
    assert sum(r.count("BuildStarted") for r in reasons.values()) == 1, "only the Job's creator says it started"
    assert all("BuildSucceeded" in r for r in reasons.values())


def test_a_builder_that_pushes_nothing_is_retried_once_then_build_failed(
        operator, builds_ns, k8s_client, custom, core_v1, namespace, pool, wait_for):
    placement = pool(["u250"])  # another card type: a build of its own
    node = core_v1.list_node(label_selector=",".join(f"{k}={v}" for k, v in placement["nodeSelector"].items()))
    core_v1.patch_node(node.items[0].metadata.name, {"metadata": {"labels": {BUILDER_LABEL: "yes"}}})
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                           ei("bad", "mobilenetv1", replicas=1, placement=placement))
    failed = wait_for(lambda: (c := condition(custom, namespace, "bad", "Scheduled")) and
                      c["reason"] == "BuildFailed" and c, 90, "BuildFailed")
    assert "succeeded but registry" in failed["message"]
    (built,) = status(custom, namespace, "bad")["builds"]
    assert built["phase"] == "Failed" and built["attempts"] == 2
    assert len(build_jobs(k8s_client, builds_ns, built["digest"])) == 2, "retries are bounded"
    assert core_v1.list_namespaced_pod(namespace, label_selector="elasticdf.io/role=card").items == []
    wait_for(lambda: "BuildFailed" in {e.reason for e in core_v1.list_namespaced_event(namespace).items}, 20,
             "a BuildFailed event")


def test_a_build_reporting_a_lower_clock_runs_its_cards_at_it_and_later_groups_reuse_it(
        operator, registry, builds_ns, k8s_client, custom, core_v1, namespace, pool, wait_for, tmp_path):
    """What a Vitis builder pushes when timing closes at 180 of the 200 MHz it targeted (kwok runs no builder, so
    the test pushes the artifact its push step would: build.json, report.json, card.xclbin). The status shows the
    cards at 180 MHz; scaling beyond the first card places a group planned at 180 MHz on the same build: no second
    Job, no roll. u55c only: no other test of this module uses it."""
    placement = pool(["u55c"], ["u55c"])
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                           ei("vitis", "mobilenetv1", replicas=1, placement=placement))
    digest = wait_for(lambda: pending_build(custom, namespace, "vitis"), 60, "held with BuildPending")
    (first,) = groups(core_v1, namespace, "vitis")
    record = BuildRecord.model_validate(first.builds[digest])
    report = BuildReport(digest=digest, mode="xrt", clockMhz=180.0, clockSource="measured",
                         resources=record.resources, builder="e2e (what a Vitis builder reports)", seconds=1.0)
    (tmp_path / RECORD_FILE).write_text(record.model_dump_json(by_alias=True))
    (tmp_path / REPORT_FILE).write_text(report.model_dump_json(by_alias=True))
    (tmp_path / XCLBIN_FILE).write_bytes(b"xclbin2\0" + bytes(64))
    push_build(tmp_path, registry, plain_http(FetchPolicy(cache_dir=tmp_path / "cache"), registry))
    planned = sum(i["fps"] for i in first.instances)

    def at_reported_clock():
        st = status(custom, namespace, "vitis")
        clock = ((st.get("plan") or {}).get("clocks") or {}).get("u55c") or {}
        return st.get("readyReplicas") == 1 and clock.get("mhz") == 180.0 and st
    st = wait_for(at_reported_clock, 60, "serving, at the reported clock")
    assert st["plan"]["clocks"]["u55c"]["buildMhz"] == 200.0 and digest[:19] in st["plan"]["clocks"]["u55c"]["source"]
    assert st["builds"][0]["reportedClockMhz"] == 180.0
    assert st["builds"][0]["reportedResources"] == record.resources and not st["plan"].get("resourceScale"), \
        "used as estimated: capacity unchanged"
    assert st["plan"]["groups"][0]["predictedFPS"] == pytest.approx(planned * 180 / 200, rel=1e-3)

    more = len(first.instances) + 1
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "vitis", {"spec": {"replicas": more}})
    wait_for(lambda: serving(core_v1, custom, namespace, "vitis", more), 60, "a second group serving")
    old, new = groups(core_v1, namespace, "vitis")
    assert set(new.builds) == {digest}, "the new group runs the build that exists"
    assert new.instances[0]["fps"] == pytest.approx(old.instances[0]["fps"] * 180 / 200, rel=1e-3)
    assert len(build_jobs(k8s_client, builds_ns, digest)) == 1, "no rebuild"
    assert (condition(custom, namespace, "vitis", "PlanCurrent") or {}).get("reason") == "Current"


def test_prefer_existing_serves_from_the_builds_that_exist_and_rolls_to_the_measured_clock(
        operator, registry, builds_ns, k8s_client, custom, core_v1, namespace, second_namespace, pool, wait_for):
    """A build made at the modelled clock exists (the first resource's); a Fabric then says the U200s reach
    260 MHz. A second resource of the same model serves at once from the existing build and starts the build of
    the 260 MHz plan (the roll to it is the real tier's: kwok runs no builder). u200 only: no other test uses it.
    CNV: its plan runs each U200 as a group of its own, so each plan has one card build (MobileNetV1's best plan
    on U200s spans pairs of cards)."""
    placement = pool(["u200"], ["u200"], ["u200"], ["u200"])
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                           ei("old", "cnv", replicas=1, placement=placement))
    made = wait_for(lambda: pending_build(custom, namespace, "old"), 60, "held with BuildPending")
    push(registry, BUILD_REPOSITORY, build_tag(made), [(b"{}", "application/json", "build.json")], authorization="")
    wait_for(lambda: serving(core_v1, custom, namespace, "old", 1), 60, "serving from the existing build")
    fabric = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Fabric", "metadata": {"name": "e2e-u200-clocks"},
              "spec": {"clocks": {"u200": 260.0}}}
    custom.create_cluster_custom_object(GROUP, VERSION, "fabrics", fabric)
    try:
        custom.create_namespaced_custom_object(GROUP, VERSION, second_namespace, PLURAL,
                                               ei("new", "cnv", replicas=1, placement=placement))
        wait_for(lambda: status(custom, second_namespace, "new").get("readyReplicas") == 1, 60, "serving at once")
        first = groups(core_v1, second_namespace, "new")[0]
        assert set(first.builds) == {made}, "placed on the build that exists"

        def rolling_builds():
            builds = {b["digest"]: b for b in status(custom, second_namespace, "new").get("builds") or []}
            current = condition(custom, second_namespace, "new", "PlanCurrent") or {}
            return current.get("reason") == "BuildPending" and len(builds) == 2 and builds
        builds = wait_for(rolling_builds, 60, "the roll waiting for the 260 MHz build")
        (measured,) = set(builds) - {made}
        assert builds[measured]["fclkMhz"] == 260.0 and builds[made]["fclkMhz"] == 200.0
        assert len(build_jobs(k8s_client, builds_ns, measured)) == 1, "its build is started"
        assert (condition(custom, second_namespace, "new", "Ready") or {}).get("status") == "True", \
            "the roll's pending build does not make the resource unready"
        reasons = [e.reason for e in core_v1.list_namespaced_event(second_namespace).items]
        assert "PlacedOnExistingBuilds" in reasons
    finally:
        custom.delete_cluster_custom_object(GROUP, VERSION, "fabrics", "e2e-u200-clocks")
