"""Card builds in the operator (issue 15): decide (pure) starts one builder Job per missing build digest, holds the
group with BuildPending, bounds retries and reports a failed build with its log tail; the Job spec; the status;
and the registry lookup against the real CNCF registry on loopback."""

from __future__ import annotations

import dataclasses
import json

import pytest
from elasticdf_contract.builds import BUILD_REPOSITORY, RECORD_ENV, BuildRecord, build_tag
from elasticdf_contract.names import LABEL_BUILD, build_job_name
from elasticdf_operator import builders
from elasticdf_operator.api import ElasticInferenceSpec
from elasticdf_operator.buildjobs import (
    BuildIndex,
    BuildSettings,
    BuildsSeen,
    build_state,
    failed_step,
    lookup_policy,
)
from elasticdf_operator.decide import Create, CreateBuildJob, Decision, Emit, Settings, UpdateWiring, decide
from elasticdf_operator.state import Observed
from elasticdf_operator.status import build_status
from elasticdf_partitioner.artifacts import FetchPolicy
from elasticdf_partitioner.oci_builds import build_exists
from test_artifacts import REGISTRY, push, running_registry
from test_operator_decide import CATALOG, OWNER, node, run, zoo_graph
from test_operator_decide import spec as decide_spec
from test_operator_decide import step as decide_step

REG = "registry.builds.svc:5000"
BUILDS = BuildSettings(registry=REG, insecure=True, namespace="elasticdf-system", recreations=1)
WITH_REGISTRY = Settings(builds=BUILDS)
OTHER = builders.Owner("net", "other-ns", "u2")
MODEL = "cnv"  # its best group on the two U280s of these tests is one card: one build per group


def spec(**extra) -> ElasticInferenceSpec:
    return decide_spec(model=MODEL, **extra)


def placed(owner=OWNER, s=None) -> Observed:
    """A first pass: the group is placed; its builds were never looked up, so it is held without Jobs."""
    snap, actions = run(Observed([node("a", ["u280", "u280"])], [], []), s or spec(), owner=owner,
                        settings=WITH_REGISTRY)
    assert not [a for a in actions if isinstance(a, (CreateBuildJob,))]
    assert not snap.pods
    return snap


def digests(snap: Observed) -> set[str]:
    return {d for cm in snap.configmaps for d in builders.record_of(cm)["builds"]}


def seen(snap: Observed, manifests: dict, jobs=(), pods=(), logs=None) -> Observed:
    return dataclasses.replace(snap, builds=BuildsSeen(manifests=manifests, jobs=list(jobs), pods=list(pods),
                                                       logs=logs or {}))


def as_observed(job: dict, conditions=(), start="2026-01-01T00:00:00Z") -> dict:
    """A Job as the API server shows it (status filled by the Job controller)."""
    return {"metadata": job["metadata"], "status": {"active": 0, "succeeded": 0, "failed": 0, "startTime": start,
                                                    "completionTime": None, "conditions": list(conditions)}}


def pod_of(job: dict, steps: list[tuple[str, bool, int | None]]) -> dict:
    return {"metadata": {"name": job["metadata"]["name"] + "-x", "creationTimestamp": "2026-01-01T00:00:01Z",
                         "labels": {**job["metadata"]["labels"], "job-name": job["metadata"]["name"]}},
            "status": {"phase": "Running", "steps": [{"name": n, "running": r, "exitCode": c, "reason": None,
                                                      "message": None} for n, r, c in steps]}}


def decide_with(snap: Observed, owner=OWNER, s=None) -> Decision:
    return decide(owner, s or spec(), snap, 1000.0, CATALOG, zoo_graph, WITH_REGISTRY)


def test_one_job_per_missing_build_and_the_group_is_held_with_build_pending():
    snap = placed()
    wanted = digests(snap)
    d = decide_with(seen(snap, dict.fromkeys(wanted)))
    jobs = [a.obj for a in d.actions if isinstance(a, CreateBuildJob)]
    assert sorted(j["metadata"]["name"] for j in jobs) == sorted(build_job_name(x, 0) for x in wanted)
    assert all(j["metadata"]["namespace"] == "elasticdf-system" for j in jobs)
    assert not [a for a in d.actions if isinstance(a, Create) and a.obj["kind"] == "Pod"]
    assert d.pending_builds == wanted
    status = build_status({"metadata": {"name": "net", "generation": 1}}, OWNER, 1, snap.configmaps, [], d,
                          {"name": MODEL}, seen(snap, dict.fromkeys(wanted)).builds, BUILDS)
    scheduled = next(c for c in status.conditions if c.type == "Scheduled")
    assert scheduled.reason == "BuildPending" and all(x in scheduled.message for x in wanted)
    assert {b.phase for b in status.builds} == {"Pending"}


def test_a_second_namespace_waits_on_the_same_job():
    snap = placed()
    wanted = digests(snap)
    first = decide_with(seen(snap, dict.fromkeys(wanted)))
    jobs = [as_observed(a.obj) for a in first.actions if isinstance(a, CreateBuildJob)]
    other = placed(OTHER)
    assert digests(other) == wanted  # the digest says nothing about the resource: same build
    d = decide_with(seen(other, dict.fromkeys(wanted), jobs), owner=OTHER)
    assert not [a for a in d.actions if isinstance(a, CreateBuildJob)]
    assert d.pending_builds == wanted


def test_not_looked_up_or_registry_down_means_hold_without_a_job():
    snap = placed()
    d = decide_with(dataclasses.replace(snap, builds=BuildsSeen(error="registry x did not answer")))
    assert not [a for a in d.actions if isinstance(a, CreateBuildJob)] and d.pending_builds == digests(snap)


def test_progress_follows_the_builder_pods_steps():
    snap = placed()
    (digest,) = digests(snap)
    job = builders.build_job(BuildRecord.model_validate({"model": f"zoo:{MODEL}", **builders.record_of(
        snap.configmaps[0])["builds"][digest]}), spec(), "emulation", 0, BUILDS)
    for steps, phase, step in [([], "Pending", None),
                               ([("bundle", False, None), ("build", False, None), ("push", False, None)], "Pending",
                                None),  # the pod waits for a node
                               ([("bundle", True, None), ("build", False, None), ("push", False, None)], "Building",
                                "bundle"),
                               ([("bundle", False, 0), ("build", True, None), ("push", False, None)], "Building",
                                "build"),
                               ([("bundle", False, 0), ("build", False, 0), ("push", True, None)], "Building",
                                "push")]:
        pods = [pod_of(job, steps)] if steps else []
        state = build_state(digest, BuildsSeen({digest: None}, [as_observed(job)], pods), BUILDS)
        assert (state.phase, state.progress) == (phase, step)


def failed(job: dict, reason="BackoffLimitExceeded") -> dict:
    return as_observed(job, [{"type": "Failed", "status": "True", "reason": reason, "message": "Job has failed"}])


def test_failed_job_is_recreated_once_then_build_failed_with_the_log_tail():
    snap = placed()
    (digest,) = digests(snap)
    d = decide_with(seen(snap, {digest: None}))
    (first,) = [a.obj for a in d.actions if isinstance(a, CreateBuildJob)]
    logs = {first["metadata"]["name"]: "step build: error: layer 3 does not fit"}
    d = decide_with(seen(snap, {digest: None}, [failed(first)], logs=logs))
    (second,) = [a.obj for a in d.actions if isinstance(a, CreateBuildJob)]
    assert second["metadata"]["name"] == build_job_name(digest, 1) and not d.failed_builds
    logs[second["metadata"]["name"]] = "step build: error: layer 3 does not fit"
    d = decide_with(seen(snap, {digest: None}, [failed(first), failed(second, "DeadlineExceeded")], logs=logs))
    assert not [a for a in d.actions if isinstance(a, CreateBuildJob)]  # retries are bounded
    assert "layer 3 does not fit" in d.failed_builds[digest] and "DeadlineExceeded" in d.failed_builds[digest]
    status = build_status({"metadata": {"name": "net"}}, OWNER, 1, snap.configmaps, [], d, {"name": MODEL},
                          seen(snap, {digest: None}, [failed(first), failed(second)], logs=logs).builds, BUILDS)
    scheduled = next(c for c in status.conditions if c.type == "Scheduled")
    assert scheduled.reason == "BuildFailed" and "layer 3 does not fit" in scheduled.message
    assert status.builds[0].phase == "Failed" and status.builds[0].attempts == 2


def test_build_in_registry_goes_into_the_wiring_before_the_card_pods():
    snap = placed()
    (digest,) = digests(snap)
    manifest = "sha256:" + "ab" * 32
    d = decide_with(seen(snap, {digest: manifest}))
    kinds = [type(a).__name__ + ("/" + a.obj["kind"] if isinstance(a, Create) else "") for a in d.actions]
    update = next(a for a in d.actions if isinstance(a, UpdateWiring))
    assert kinds.index("UpdateWiring") < kinds.index("Create/Pod") and not d.pending_builds
    uri = f"oci://{REG}/{BUILD_REPOSITORY}@{manifest}"
    assert {w["artifacts"]["build"] for v in update.data.values() for w in json.loads(v)["segments"]} == {uri}
    pods = [a.obj for a in d.actions if isinstance(a, Create) and a.obj["kind"] == "Pod"]
    assert len(pods) == len(snap.configmaps[0]["data"]) - 1  # one per card (the ConfigMap also holds group.json)
    for pod in pods:  # the card pod pulls the artifact (verified) before its segments start
        (init,) = pod["spec"]["initContainers"]
        assert init["command"][:4] == ["elasticdf", "build", "pull", uri] and "--insecure" in init["command"]


def test_without_a_registry_emulation_runs_at_once_as_before():
    snap, _ = run(Observed([node("a", ["u280", "u280"])], [], []), spec())
    assert snap.pods and not snap.builds.jobs


def test_failed_step_says_how_a_step_without_log_ended():
    job = {"metadata": {"name": "j", "labels": {}}}
    pod = pod_of(job, [("bundle", False, 128), ("build", False, None), ("push", False, None)])
    pod["status"]["steps"][0] |= {"reason": "StartError", "message": 'exec: "elasticdf": not found'}
    assert failed_step("j", [pod]) == ("j-x", "bundle", 'exit code 128 (StartError: exec: "elasticdf": not found)')
    running = pod_of(job, [("bundle", False, 0), ("build", True, None), ("push", False, None)])
    assert failed_step("j", [running]) == ("j-x", "build", "")  # stopped by the deadline while building


def test_job_spec_emulation_and_xrt():
    record = BuildRecord(digest="sha256:" + "1" * 32, model=f"zoo:{MODEL}", card_type="u280", fclk_mhz=200.0,
                         segments=[{"layers": [0, 3], "slrs": [0]}])
    job = builders.build_job(record, spec(), "emulation", 0, BUILDS)
    pod = job["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["bundle", "build"] and pod["containers"][0]["name"] == "push"
    bundle = pod["initContainers"][0]
    env = {e["name"]: e["value"] for e in bundle["env"]}
    assert BuildRecord.model_validate_json(env[RECORD_ENV]) == record
    assert bundle["command"] == ["elasticdf", "build", "bundle", "-o", "/bundle"]  # the record names the zoo model
    assert pod["initContainers"][1]["command"] == ["elasticdf", "build", "run", "/bundle", "-o", "/out"]
    assert pod["containers"][0]["command"] == ["elasticdf", "build", "push", "/out", "--registry", REG, "--insecure"]
    assert job["metadata"]["labels"][LABEL_BUILD] == build_tag(record.digest)
    assert job["spec"]["activeDeadlineSeconds"] == BUILDS.timeout_seconds and job["spec"]["backoffLimit"] == 0
    xrt = dataclasses.replace(BUILDS, xrt_image="finn:v0.10", xrt_command=("finn-build",), license_secret="xilinx",
                              node_selector=(("vivado", "yes"),), resources=json.dumps({"limits": {"cpu": "8"}}))
    pod = builders.build_job(record, spec(), "xrt", 2, xrt)["spec"]["template"]["spec"]
    build = pod["initContainers"][1]
    assert (build["image"], build["command"], build["resources"]) == ("finn:v0.10", ["finn-build"],
                                                                      {"limits": {"cpu": "8"}})
    assert pod["nodeSelector"] == {"vivado": "yes"}
    assert any(m["name"] == "license" for m in build["volumeMounts"])
    assert any(v.get("secret", {}).get("secretName") == "xilinx" for v in pod["volumes"])


def test_job_of_a_users_model_fetches_it_like_card_pods():
    record = BuildRecord(digest="sha256:" + "2" * 32, model="onnx:oci://models.example:5000/net:v1",
                         card_type="u280", fclk_mhz=200.0, segments=[{"layers": [0, 3], "slrs": [0]}])
    s = ElasticInferenceSpec.model_validate(
        {"model": {"artifacts": {"onnx": "oci://models.example:5000/net:v1", "sha256": "a" * 64}}})
    fetch = builders.PodFetch(env=(("ELASTICDF_MODEL_MAX_BYTES", "100"),), pull_secret="models-auth")
    pod = builders.build_job(record, s, "emulation", 0, dataclasses.replace(BUILDS, pull_secret="reg-auth"),
                             fetch)["spec"]["template"]["spec"]
    bundle, build = pod["initContainers"]
    assert bundle["command"][3:7] == ["--model", "oci://models.example:5000/net:v1", "--sha256", "a" * 64]
    for step in (bundle, build):  # the build step reads the model from the cache the bundle step filled
        assert {"ELASTICDF_MODEL_MAX_BYTES", "ELASTICDF_MODEL_DOCKER_CONFIG"} <= {e["name"] for e in step["env"]}
        assert "model-cache" in {m["name"] for m in step["volumeMounts"]}
    assert pod["containers"][0]["command"][-2:] == ["--docker-config", f"{builders.PULL_SECRET_DIR}/config.json"]


def test_xrt_without_a_builder_image_is_a_failed_build_not_a_job():
    s = spec(runtime={"mode": "xrt"})
    snap = placed(s=s)
    d = decide_with(seen(snap, dict.fromkeys(digests(snap))), s=s)
    assert not [a for a in d.actions if isinstance(a, CreateBuildJob)]
    assert all("builds.xrtImage" in why for why in d.failed_builds.values())


def test_settings_from_the_charts_env():
    s = BuildSettings.from_env({"ELASTICDF_BUILD_REGISTRY": "r:5000", "ELASTICDF_BUILD_INSECURE": "1",
                                "POD_NAMESPACE": "ops", "ELASTICDF_BUILD_XRT_COMMAND": '["a", "b"]',
                                "ELASTICDF_BUILD_NODE_SELECTOR": '{"k": "v"}', "ELASTICDF_BUILD_RECREATIONS": "3"})
    assert (s.registry, s.insecure, s.namespace, s.xrt_command, s.node_selector, s.recreations) == (
        "r:5000", True, "ops", ("a", "b"), (("k", "v"),), 3)


# ---- the registry lookup (observe step) against the real registry ---------------------------------------------


class NoJobs:
    """The observe step's reads of builder Jobs, for a cluster with none (the registry part is real)."""

    def build_jobs(self, namespace):
        return []

    def build_pods(self, namespace):
        return []


@pytest.mark.skipif(not REGISTRY.exists(), reason="the registry binary is not built (hack/build-tools.sh registry)")
def test_lookup_finds_a_pushed_build_and_remembers_it(tmp_path):
    digest = "sha256:" + "c" * 32
    policy = FetchPolicy(cache_dir=tmp_path / "cache")
    index = BuildIndex()
    other = "sha256:" + "d" * 32
    with running_registry(tmp_path, {}) as reg:
        settings = dataclasses.replace(BUILDS, registry=reg)
        assert build_exists(reg, digest, lookup_policy(policy, settings)) is None
        pushed = push(reg, BUILD_REPOSITORY, build_tag(digest), [(b"{}", "application/json", "build.json")],
                      authorization="")  # no auth configured: the header is ignored
        got = index.observe(NoJobs(), settings, {digest, other}, policy)
        assert got.manifests == {digest: f"sha256:{pushed}", other: None} and got.error is None
        # what card pods are wired with: the manifest digest, in the registry the operator was given
        assert settings.artifact(got.manifests[digest]) == f"oci://{reg}/{BUILD_REPOSITORY}@sha256:{pushed}"
    down = index.observe(NoJobs(), settings, {digest, other}, policy)  # the registry is gone: found stays found
    assert down.manifests == {digest: f"sha256:{pushed}"} and "did not answer" in down.error


# ---- prefer-existing under measured clocks ---------------------------------------------------------------------


def test_prefer_existing_places_the_plan_whose_builds_exist_then_rolls_to_the_measured_clock():
    """Builds made at the modelled 200 MHz exist; then a Fabric says the U280s run at 250 MHz. A new resource
    asks the registry about both plans' builds, places the 200 MHz plan (its builds exist: pods at once) and
    rolls: the 250 MHz plan's group goes on the other card and its build is started."""
    made_at_200 = digests(placed())
    fabric = {"metadata": {"name": "rack"}, "spec": {"clocks": {"u280": 250.0}}}
    snap = Observed([node("a", ["u280", "u280"])], [], [], [fabric])
    d = decide_with(snap)
    assert d.conditions["PartitionSolved"][:2] == ("Unknown", "LookingUpBuilds")
    assert made_at_200 <= d.lookups and len(d.lookups) == 2, "both plans' builds are looked up first"
    assert not [a for a in d.actions if isinstance(a, Create) and a.obj["kind"] in ("Pod", "ConfigMap")]

    answers = {digest: ("sha256:" + "a" * 64 if digest in made_at_200 else None) for digest in d.lookups}
    snap, actions = run(seen(snap, answers), spec(), settings=WITH_REGISTRY)
    (group,) = [builders.record_of(c) for c in snap.configmaps]
    assert set(group["builds"]) == made_at_200 and len(snap.pods) == 1, "the existing builds serve at once"
    assert any(isinstance(a, Emit) and a.reason == "PlacedOnExistingBuilds" for a in actions)

    snap, d = decide_step(seen(snap, answers), spec(), settings=WITH_REGISTRY)
    rolled = [builders.record_of(c) for c in snap.configmaps]
    (new_build,) = set().union(*(r["builds"] for r in rolled)) - made_at_200
    assert {b["fclkMhz"] for r in rolled for b in r["builds"].values()} == {200.0, 250.0}
    assert d.rolling and new_build in d.pending_builds, "the 250 MHz build is made while the 200 MHz one serves"
    assert [a for a in d.actions if isinstance(a, CreateBuildJob)]
