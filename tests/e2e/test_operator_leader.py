"""Two operator replicas with leader election (a Lease), and state that must outlive an operator process
(real control plane, kwok Alveo nodes): the leader SIGKILLed in the middle of a reconcile -> the follower takes
over and leaves no duplicate and no orphan; a stopped leader hands over at once; the autoscaler's windows
continue across a restart."""

from __future__ import annotations

import time

import pytest
from cardpods import (
    GROUP,
    PLURAL,
    VERSION,
    card_pods,
    check_card_pods,
    check_no_double_booking,
    ei,
    pool_nodes,
    serving,
)
from elasticdf_operator.local import local_operator

pytestmark = pytest.mark.e2e
LEASE = "elasticdf-operator"


def flags(namespace: str) -> tuple[str, ...]:
    return ("--metrics-port", "0", "--resync-seconds", "2", "--leader-elect", "--lease-namespace", namespace,
            "--lease-seconds", "4")


def holder(k8s_client, namespace: str) -> str | None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    try:
        return client.CoordinationV1Api(k8s_client).read_namespaced_lease(LEASE, namespace).spec.holder_identity
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def pid_of(identity: str | None) -> int | None:
    return int(identity.rsplit("_", 1)[1]) if identity else None


def test_leader_killed_mid_reconcile_the_follower_takes_over(kubeconfig, crds, k8s_client, custom, core_v1,
                                                             namespace, pool, wait_for, tmp_path):
    placement = pool(["u280", "u280"], ["u280", "u280"], ["u280", "u280"])
    with local_operator(kubeconfig, *flags(namespace), log=tmp_path / "a.log") as a, \
            local_operator(kubeconfig, *flags(namespace), log=tmp_path / "b.log") as b:
        procs = {a.pid: a, b.pid: b}
        leader = procs[wait_for(lambda: pid_of(holder(k8s_client, namespace)), 60, "a leader")]
        follower = next(p for p in procs.values() if p is not leader)
        # MobileNetV1, 4 instances per pair of U280s: 12 replicas are 3 groups, created one after the other
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                               ei("lead", "mobilenetv1", replicas=12, placement=placement))
        wait_for(lambda: card_pods(core_v1, namespace, "lead"), 120, "the leader's first card pod", interval=0.01)
        leader.kill()  # SIGKILL mid-reconcile: the Lease stays held until it expires
        leader.wait()
        killed_with = len(card_pods(core_v1, namespace, "lead"))
        wait_for(lambda: pid_of(holder(k8s_client, namespace)) == follower.pid, 30, "the follower holds the Lease")
        wait_for(lambda: serving(core_v1, custom, namespace, "lead", 12), 120, "12 instances after the takeover")
        time.sleep(3)  # a few resyncs more: nothing may be added
        recs = check_card_pods(core_v1, namespace, "lead")
        assert follower.poll() is None
    print(f"card pods when the leader was killed: {killed_with}")
    assert sum(len(g.instances) for g in recs) == 12, "no duplicate instances"
    check_no_double_booking(core_v1, namespace, dict.fromkeys(pool_nodes(placement, 3), 2))
    follower_log = (tmp_path / ("a.log" if follower is a else "b.log")).read_text()
    assert follower_log.index("waiting for Lease") < follower_log.index(" leads ("), follower_log[-3000:]


def test_a_stopped_leader_hands_over_at_once(kubeconfig, crds, k8s_client, namespace, wait_for, tmp_path):
    with local_operator(kubeconfig, *flags(namespace), log=tmp_path / "a.log") as a:
        wait_for(lambda: pid_of(holder(k8s_client, namespace)) == a.pid, 60, "the first replica leads")
        with local_operator(kubeconfig, *flags(namespace), log=tmp_path / "b.log") as b:
            time.sleep(2)
            assert pid_of(holder(k8s_client, namespace)) == a.pid, "the second replica only waits"
            a.terminate()  # a rolling update stops the old pod: it releases the Lease
            assert a.wait(30) == 0
            released = time.monotonic()
            wait_for(lambda: pid_of(holder(k8s_client, namespace)) == b.pid, 10, "the second replica leads")
            print(f"handover after the release: {time.monotonic() - released:.2f} s (lease: 4 s)")
    assert "released Lease" in (tmp_path / "a.log").read_text()


def test_autoscaler_windows_survive_an_operator_restart(kubeconfig, crds, custom, core_v1, namespace, pool,
                                                        wait_for, tmp_path):
    placement = pool(["u280"])
    down = 12
    body = ei("hist", replicas=3, placement=placement, autoscaling={
        "minReplicas": 1, "maxReplicas": 3, "targetFPS": 1000, "scaleDownStabilizationSeconds": down})
    body["metadata"]["annotations"] = {"elasticdf.io/observed-fps": "500"}  # 1 replica would do
    op_flags = ("--metrics-port", "0", "--resync-seconds", "2", "--autoscale-seconds", "0.5")
    with local_operator(kubeconfig, *op_flags, log=tmp_path / "first.log"):
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        started = time.monotonic()
        wait_for(lambda: core_v1.list_namespaced_config_map(
            namespace, label_selector="elasticdf.io/name=hist,elasticdf.io/role=autoscale").items, 30,
                 "the saved autoscaler history")
        time.sleep(6)
    restarted = time.monotonic()
    with local_operator(kubeconfig, *op_flags, log=tmp_path / "second.log"):
        def replicas():
            return custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "hist")["spec"]["replicas"]

        wait_for(lambda: replicas() == 1, 60, "scaled down to 1")
        scaled = time.monotonic()
    print(f"scaled down {scaled - started:.1f} s after the create, {scaled - restarted:.1f} s after the restart "
          f"(window {down} s)")
    assert scaled - started >= down - 1, "scaled down before the window passed"
    # the window started under the first process: a history started anew would wait `down` s after the restart
    assert scaled - restarted < down, "the restarted operator started the scale-down window over"
