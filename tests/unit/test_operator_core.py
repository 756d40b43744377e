"""Unit tests of the operator's plain core: ledger overlay, broken cards, candidates, autoscaler (fake clock)."""

from __future__ import annotations

import json
import threading

import pytest
from elasticdf_contract import names
from elasticdf_operator import autoscale, inventory, state
from elasticdf_operator import decide as decide_
from elasticdf_operator.autoscale import History, Policy, decide
from elasticdf_operator.reconcile import reconcile
from elasticdf_partitioner.catalog import load_catalog
from test_operator_decide import node

CATALOG = load_catalog()




def ei(replicas=1, **spec):
    return {"metadata": {"name": "net", "namespace": "ns", "uid": "u1", "generation": 1},
            "spec": {"model": {"name": "cnv"}, "replicas": replicas, **spec}}


@pytest.mark.parametrize("change", ["notready", "capacity"])
def test_broken_cards(change):
    n = node("a", ["u280", "u280"])
    if change == "notready":
        n["status"]["conditions"][0]["status"] = "False"
        assert inventory.broken_cards([{"node": "a", "card": 0}], [n], CATALOG) == ["node a is NotReady"]
    else:
        n["status"]["allocatable"] = {CATALOG.card("u280").device_plugin_resource: "1"}
        assert inventory.broken_cards([{"node": "a", "card": 0}], [n], CATALOG) == []
        assert "no longer allocatable" in inventory.broken_cards([{"node": "a", "card": 1}], [n], CATALOG)[0]
    assert inventory.broken_cards([{"node": "b", "card": 0}], [n], CATALOG) == ["node b is gone"]


def test_candidates_keep_the_solve_small():
    slots = [inventory.Slot(f"n{i:04}", c, "u280") for i in range(1000) for c in range(2)]
    picked = decide_.candidates(slots, instances=2, cards_per_instance=4)
    assert 8 <= len(picked) <= 10 and len({s.node for s in picked}) == len(picked) // 2


def test_ledger_overlay_expires_once_indexed():
    clock = [0.0]
    ledger = state.Ledger(clock=lambda: clock[0])
    cm = {"kind": "ConfigMap", "metadata": {"name": "x", "namespace": "ns", "uid": "1", "labels": {}}}
    ledger.created(cm)
    assert ledger.view(state.Observed([], [], [])).configmaps == [cm]
    assert ledger.view(state.Observed([], [], [cm])).configmaps == [cm]  # indexed: overlay dropped
    assert ledger.configmaps.fresh == {}
    ledger.deleted("ConfigMap", "1")
    assert ledger.view(state.Observed([], [], [cm])).configmaps == []


POLICY = Policy(min_replicas=1, max_replicas=5, target_fps=100, scale_up_window=10, scale_down_window=60)


def test_decide_scales_up_only_after_the_up_window():
    history, replicas = History(), 1
    for t in range(0, 10):
        replicas = decide(replicas, 350, POLICY, history, float(t))
        assert replicas == 1, f"scaled up at t={t} within the window"
    assert decide(1, 350, POLICY, history, 10.5) == 4


def test_decide_scales_down_to_the_window_maximum():
    history = History()
    replicas = 4
    for t in range(0, 61, 5):
        load = 350 if t < 30 else 120
        replicas = decide(replicas, load, POLICY, history, float(t))
    assert replicas == 4  # 350 fps was seen within the last 60 s
    for t in range(65, 100, 5):
        replicas = decide(replicas, 120, POLICY, history, float(t))
    assert replicas == 2
    assert decide(2, 0, POLICY, History(), 0.0) == 2  # a fresh history waits a window before moving
    assert decide(9, 100, POLICY, History(), 0.0) == 5  # out of bounds: clamped at once


def test_decide_without_windows_is_immediate():
    policy = Policy(1, 5, 100, 0, 0)
    assert decide(1, 480, policy, History(), 0.0) == 5
    assert decide(5, 90, policy, History(), 0.0) == 1


def test_sources():
    ann = autoscale.AnnotationSource()
    body = {"metadata": {"annotations": {autoscale.ANNOTATION_OBSERVED_FPS: "250.5"}}}
    assert ann.observed_fps(body, []) == 250.5
    assert ann.observed_fps({"metadata": {"annotations": {autoscale.ANNOTATION_OBSERVED_FPS: "x"}}}, []) is None
    text = ('# TYPE elasticdf_segment_fps gauge\nelasticdf_segment_fps{instance="0",segment="0"} 40.0\n'
            '# TYPE elasticdf_gateway_fps gauge\nelasticdf_gateway_fps{model="cnv"} 99.0\n')
    urls = []
    scrape = autoscale.ScrapeSource(get=lambda url, timeout: urls.append(url) or text)
    pods = [{"metadata": {"labels": {"elasticdf.io/role": "card"}},
             "status": {"phase": "Running", "podIP": f"10.0.0.{i}"}} for i in range(2)]
    assert scrape.observed_fps({}, pods) == 80.0 and len(urls) == 2, "segment 0 samples of every card pod"
    pods.append({"metadata": {"labels": {"elasticdf.io/role": "gateway"}},
                 "status": {"phase": "Running", "podIP": "10.0.0.9"}})
    assert scrape.observed_fps({}, pods) == 99.0
    assert autoscale.FirstOf(ann, scrape).observed_fps(body, pods) == 250.5


class ScaleKube:
    """Records the autoscaler's three writes (the e2e tier runs them against the real API server)."""

    def __init__(self, saved: str | None = None):
        self.scaled, self.events, self.status, self.applied, self.saved = [], [], None, [], saved

    def autoscale_history(self, ns, name):
        return self.saved

    def apply(self, obj):
        self.applied.append(obj)

    def event(self, ei, *event):
        self.events.append(event)

    def patch_status(self, ns, name, status):
        self.status = status

    def scale(self, ns, name, replicas):
        self.scaled.append(replicas)


def test_autoscale_step_patches_scale_and_observed_fps():
    kube, histories = ScaleKube(), {}
    body = ei(1, autoscaling={"minReplicas": 1, "maxReplicas": 3, "targetFPS": 100})
    body["metadata"]["annotations"] = {autoscale.ANNOTATION_OBSERVED_FPS: "250"}
    src = autoscale.AnnotationSource()
    step = autoscale.autoscale(kube, body, [], src, histories, now=0.0)
    assert step.replicas == 3 and kube.scaled == [3] and kube.status == {"observedFPS": 250.0}
    assert autoscale.autoscale(kube, ei(1), [], src, histories) is None
    (saved,) = kube.applied
    assert saved["metadata"]["name"] == names.autoscale_configmap_name(body["metadata"]["name"])
    assert History.from_json(saved["data"][names.AUTOSCALE_HISTORY_KEY]).entries == [(0.0, 1), (0.0, 3)]


def test_autoscale_history_survives_a_restart():
    """A new process (empty in-memory histories) continues the saved windows instead of starting over."""
    policy = {"minReplicas": 1, "maxReplicas": 5, "targetFPS": 100, "scaleDownStabilizationSeconds": 60}
    body = ei(4, autoscaling=policy)
    body["metadata"]["annotations"] = {autoscale.ANNOTATION_OBSERVED_FPS: "120"}
    src = autoscale.AnnotationSource()
    first = ScaleKube()
    histories: dict = {}
    for t in (0.0, 30.0):
        autoscale.autoscale(first, body, [], src, histories, now=t)
    assert first.scaled == []  # 4 was the recommendation at t=0 (the window start): no scale-down yet
    saved = first.applied[-1]["data"][names.AUTOSCALE_HISTORY_KEY]
    restarted = ScaleKube(saved)
    step = autoscale.autoscale(restarted, body, [], src, {}, now=61.0)
    assert step.replicas == 2 and restarted.scaled == [2], "the window started at t=0, not at the restart"
    fresh = ScaleKube()
    assert autoscale.autoscale(fresh, body, [], src, {}, now=61.0).replicas == 4  # without it: a new window


def test_a_create_in_a_terminating_namespace_is_no_error():
    from elasticdf_operator.kube import namespace_terminating
    from kubernetes.client.exceptions import ApiException

    def forbidden(reason: str) -> ApiException:
        err = ApiException(status=403, reason="Forbidden")
        err.body = json.dumps({"kind": "Status", "reason": "Forbidden", "details": {"causes": [
            {"reason": reason, "message": "namespace e2e-1 is being terminated", "field": "metadata.namespace"}]}})
        return err
    assert namespace_terminating(forbidden("NamespaceTerminating"))
    assert not namespace_terminating(forbidden("FieldValueForbidden")), "RBAC and other refusals still raise"
    assert not namespace_terminating(ApiException(status=500, reason="boom"))


class StatusKube:
    """Records status writes; the write of generation `slow` waits (up to a timeout) for `later` to be set."""

    def __init__(self, slow: int):
        self.slow, self.later, self.written = slow, threading.Event(), []

    def patch_status(self, ns, name, status):
        if status["observedGeneration"] == self.slow:
            self.later.wait(timeout=0.5)
        self.written.append(status["observedGeneration"])

    def event(self, *_):
        pass


def test_a_pass_that_observed_first_writes_its_status_first():
    """kopf runs a resource's resync timer and its change handlers side by side. A pass that observed the
    cluster before another must not write its status after it: the older status would stand until the next
    pass (0 of 1 instances ready while the instance serves)."""
    kube, ledger = StatusKube(slow=1), state.Ledger()
    observed = threading.Event()

    def first_observe():
        observed.set()
        return state.Observed([], [], [])

    def run(generation: int, observe):
        body = ei(replicas="many")  # a spec the pass rejects: no plan, only a status
        body["metadata"]["generation"] = generation
        reconcile(kube, body, observe, ledger, CATALOG)

    first = threading.Thread(target=run, args=(1, first_observe))
    first.start()
    assert observed.wait(5)
    run(2, lambda: state.Observed([], [], []))
    kube.later.set()
    first.join(5)
    assert kube.written == [1, 2]
