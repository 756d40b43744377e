"""Level-triggered, idempotent reconcile of one ElasticInference (plain functions; kopf only calls them).

A reconcile gets a snapshot of the cluster (`state.Observed`: from the kopf indexes, or by listing), decides
and writes. Card reservations live in the API server (instance ConfigMaps, segment pods), so it is correct
after restarts; the `state.Ledger` serialises read-decide-write across resources and overlays this
process's own writes the watches have not delivered yet, so two reconciles never book the same card.

Per pass: drop surplus instances (scale down), re-plan instances whose node went away, turned NotReady or
lost the card (faults; the others are not touched), replace failed or missing segment pods, then solve
once over the free cards for all missing instances and create them (an instance is placed whole or not).
`reconcile_gateway` then applies the inference gateway of the resource (its Deployment, Service and the
ConfigMap with every instance's wiring); it needs no cards, so it runs outside the ledger's lock.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from elasticdf_partitioner.artifacts import ModelError
from elasticdf_partitioner.catalog import Catalog, load_catalog
from elasticdf_partitioner.errors import ElasticDFError, InfeasibleError
from elasticdf_partitioner.solver import solve
from elasticdf_partitioner.solver.pack import PackSettings
from elasticdf_partitioner.wiring import check_chain
from pydantic import ValidationError

from . import builders, metrics, modelfetch
from .api import ElasticInferenceSpec, ModelSource
from .builders import LABEL_INSTANCE, LABEL_NAME, Owner
from .inventory import Slot, broken_cards, build_cluster, fabric_view, free_slots, held_slots
from .modelfetch import ModelPending, ModelStore
from .state import LEDGER, Ledger, Observed


@dataclass
class Result:
    """What one reconcile decided: condition updates and events (type, reason, message)."""

    conditions: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    short: int = 0


def resolve_graph(models: ModelStore, source: ModelSource, result: Result):
    """The graph of spec.model, or None with PartitionSolved saying why (fetching, fetch failed, invalid).
    Never blocks on a download: the store fetches in the background."""
    try:
        return models.graph(source)
    except ModelPending as pending:
        result.conditions["PartitionSolved"] = ("Unknown", "ModelFetching", str(pending))
    except ModelError as err:
        result.conditions["PartitionSolved"] = ("False", err.reason, str(err))
    except ElasticDFError as err:
        result.conditions["PartitionSolved"] = ("False", "InvalidModel", str(err))
    return None


def owned(items: list[dict], namespace: str, name: str) -> list[dict]:
    return [i for i in items if i["metadata"]["namespace"] == namespace
            and (i["metadata"].get("labels") or {}).get(LABEL_NAME) == name]


def by_instance(items: list[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for item in items:
        out.setdefault(int(item["metadata"]["labels"][LABEL_INSTANCE]), []).append(item)
    return out


def desired_replicas(spec: ElasticInferenceSpec) -> int:
    if spec.autoscaling is None:
        return spec.replicas
    return max(spec.autoscaling.min_replicas, min(spec.autoscaling.max_replicas, spec.replicas))


def remove_instance(kube, ledger: Ledger, owner: Owner, index: int, cm: dict, pods: list[dict]) -> None:
    kube.delete_instance(owner.namespace, owner.name, index)
    ledger.deleted("ConfigMap", cm["metadata"].get("uid"))
    for pod in pods:
        ledger.deleted("Pod", pod["metadata"].get("uid"))


def scale_down(kube, ledger: Ledger, owner: Owner, records: dict[int, dict], pods: dict[int, list[dict]],
               want: int, result: Result) -> dict[int, dict]:
    """Keep the `want` lowest instance indices; delete whole instances, highest index first."""
    order = sorted(records)
    for index in reversed(order[want:]):
        remove_instance(kube, ledger, owner, index, records[index], pods.get(index, []))
        result.events.append(("Normal", "InstanceRemoved", f"removed instance {index} (replicas={want})"))
    return {i: records[i] for i in order[:want]}


def drop_broken(kube, ledger: Ledger, owner: Owner, records: dict[int, dict], pods: dict[int, list[dict]],
                nodes: list[dict], catalog: Catalog, result: Result) -> dict[int, dict]:
    """Remove instances that hold a card on a deleted or NotReady node, or a card the node lost; they are
    placed again (same index) on free cards by this pass. Instances on healthy cards are not touched."""
    kept = {}
    for index, cm in records.items():
        lost = broken_cards(builders.cards_of(cm), nodes, catalog)
        if not lost:
            kept[index] = cm
            continue
        remove_instance(kube, ledger, owner, index, cm, pods.get(index, []))
        result.events.append(("Warning", "InstanceReplanned", f"instance {index}: {'; '.join(lost)}; re-planning"))
    return kept


def repair(kube, ledger: Ledger, owner: Owner, spec, records: dict[int, dict], pods: dict[int, list[dict]],
           catalog, result: Result, pod_fetch: builders.PodFetch) -> None:
    """Replace failed segment pods and recreate missing ones of kept instances (same name, same card)."""
    for index, cm in records.items():
        present = {p["metadata"]["name"]: p for p in pods.get(index, [])}
        for w in builders.wirings_of(cm):
            name = builders.pod_name(owner.name, index, w.segment)
            pod = present.get(name)
            if pod is not None and pod.get("status", {}).get("phase") == "Failed":
                if kube.delete_pod(owner.namespace, name, pod["metadata"].get("uid")):
                    ledger.deleted("Pod", pod["metadata"].get("uid"))
                    result.events.append(("Warning", "SegmentFailed", f"segment pod {name} failed; replacing it"))
                pod = None
            if pod is None:
                created = kube.create(builders.segment_pod(owner, spec, w, catalog, pod_fetch))
                if created:
                    ledger.created(created)
                    result.events.append(("Normal", "SegmentCreated", f"instance {index} segment {w.segment} "
                                          f"on {w.node}/{w.card}"))


def _settings(spec: ElasticInferenceSpec, instances: int) -> PackSettings:
    cards = spec.placement.max_segments_per_instance if spec.placement else None
    # a card is flashed with one bitstream and runs one segment pod: plan for that, not for shared cards
    return PackSettings(max_instances=instances, exclusive_cards=True, min_instance_fps=spec.min_instance_fps or 0.0,
                        **({"max_cards_per_instance": cards} if cards else {}))


def instance_target(spec: ElasticInferenceSpec) -> float | None:
    """The fps one instance should reach: the autoscaler's per-replica target, else targetFPS / replicas."""
    if spec.autoscaling is not None:
        return spec.autoscaling.target_fps
    return spec.target_fps / max(spec.replicas, 1) if spec.target_fps else None


def solve_instances(graph, fc, spec: ElasticInferenceSpec, missing: int) -> list:
    """Instances for up to `missing` replicas from one solve over the free cards.

    objective cost: the cheapest card mix for one instance that meets the per-instance target (one at a
    time, the solve is cheap); throughput/latency: one solve that replicates over the offered cards."""
    objective, target = spec.objective, instance_target(spec)
    if objective == "cost" and not target:
        objective = "throughput"
    limits = spec.placement.limits if spec.placement else None
    started = time.perf_counter()
    try:
        if objective == "cost":
            plan = solve(graph, fc.cluster, "cost", target, limits, settings=_settings(spec, 1))
            return plan.instances[:1]
        plan = solve(graph, fc.cluster, objective, target, limits, settings=_settings(spec, missing))
        return disjoint(plan.instances, missing)
    finally:
        metrics.PLAN_SECONDS.observe(time.perf_counter() - started)


def disjoint(instances: list, limit: int) -> list:
    """Up to `limit` instances, fastest first, no two on the same card: a card is flashed with one
    bitstream, so it runs one segment pod (the solver may pack several small instances onto one card)."""
    out, used = [], set()
    for inst in sorted(instances, key=lambda i: -i.fps):
        cards = {(s.node, s.card) for s in inst.segments}
        if len(cards) == len(inst.segments) and not cards & used and len(out) < limit:
            out.append(inst)
            used |= cards
    return out


def candidates(slots: list[Slot], instances: int, cards_per_instance: int) -> list[Slot]:
    """The free cards worth offering the solver: whole nodes, fullest first, until every card type has
    enough for `instances` instances. Keeps a solve on a 1000-node cluster as small as on a rack."""
    cap = max(instances, 1) * max(cards_per_instance, 1)
    per_node: dict[str, list[Slot]] = {}
    for slot in slots:
        per_node.setdefault(slot.node, []).append(slot)
    counts: dict[str, int] = {}
    out = []
    for node in sorted(per_node, key=lambda n: (-len(per_node[n]), n)):
        own = per_node[node]
        if all(counts.get(s.type, 0) >= cap for s in own):
            continue
        for s in own:
            counts[s.type] = counts.get(s.type, 0) + 1
        out += own
    return out


def place(kube, ledger: Ledger, owner: Owner, spec, observed: Observed, taken: set[int], missing: int,
          catalog: Catalog, result: Result, models: ModelStore, pod_fetch: builders.PodFetch) -> None:
    """Solve for the `missing` whole instances over the cards still free and create them."""
    placement = spec.placement
    held = held_slots(observed.configmaps, observed.pods)
    slots = free_slots(observed.nodes, held, catalog, placement.card_types if placement else None,
                       placement.node_selector if placement else None)
    fabric = fabric_view(observed.fabrics)
    labels = {n["metadata"]["name"]: n["metadata"].get("labels") or {} for n in observed.nodes}
    ordinals = {name: i for i, name in enumerate(sorted(labels))}
    pool = fabric.pool or builders.DEFAULT_POOL
    per_instance = _settings(spec, 1).max_cards_per_instance
    graph = resolve_graph(models, spec.model, result)
    if graph is None:
        return
    index = 0
    while missing > 0:
        try:
            fc = build_cluster(candidates(slots, missing, per_instance), observed.nodes, catalog, fabric)
        except ElasticDFError as err:  # e.g. a Fabric prices a card type the catalog does not know
            result.conditions["PartitionSolved"] = ("False", "InvalidFabric", f"Fabric: {err}")
            return
        if fc.cluster is None:
            _short(result, missing, fc.reason)
            return
        try:
            found = solve_instances(graph, fc, spec, missing)
        except InfeasibleError as err:
            _short(result, missing, str(err), infeasible=True)
            return
        except ElasticDFError as err:
            result.conditions["PartitionSolved"] = ("False", "InvalidSpec", str(err))
            return
        if not found:
            _short(result, missing, "the partitioner found no instance on the free cards", infeasible=True)
            return
        for inst in found:
            while index in taken:
                index += 1
            taken.add(index)
            physical = [fc.physical[(s.node, s.card)] for s in inst.segments]
            mode = builders.resolve_mode(spec, labels.get(inst.segments[0].node, {}))
            wirings = builders.wiring(owner, spec, index, inst, mode, ordinals, physical, pool)
            cost = sum(fc.cluster.cost_per_hour(s.card_type) for s in inst.segments)
            cm = kube.create(builders.instance_configmap(owner, index, wirings, inst.fps, cost))
            if cm is None:  # someone holds this name: leave it to the next pass
                result.short = missing
                return
            ledger.created(cm)
            for w in wirings:
                pod = kube.create(builders.segment_pod(owner, spec, w, catalog, pod_fetch))
                if pod:
                    ledger.created(pod)
            used = {(w.node, w.card) for w in wirings}
            slots = [s for s in slots if (s.node, s.index) not in used]
            cards = ", ".join(f"{w.node}/{w.card} ({w.card_type})" for w in wirings)
            result.events.append(("Normal", "InstancePlaced", f"instance {index}: {len(wirings)} segment(s) on "
                                  f"{cards}, {inst.fps:.0f} fps predicted"))
            result.conditions["PartitionSolved"] = ("True", "Solved", f"instance {index}: {inst.fps:.1f} fps")
            missing -= 1
            result.short = missing


def _short(result: Result, missing: int, message: str, infeasible: bool = False) -> None:
    result.short = missing
    if infeasible and "PartitionSolved" not in result.conditions:
        result.conditions["PartitionSolved"] = ("False", "PartitionInfeasible", message)
    result.events.append(("Warning", "PartitionInfeasible" if infeasible else "InsufficientCards",
                          f"{missing} instance(s) not placed: {message}"))


def reconcile(kube, ei: dict, observe: Callable[[], Observed] | None = None, ledger: Ledger = LEDGER,
              catalog: Catalog | None = None, models: ModelStore | None = None) -> dict:
    """Bring the pods of `ei` in line with its spec; write and return its status.

    `observe` returns the cluster snapshot (the kopf handlers pass their indexes; default: list via `kube`);
    `models` resolves spec.model (default: the process's store, configured by the chart's modelFetch values)."""
    catalog = catalog or load_catalog()
    models = models or modelfetch.store()
    pod_fetch = builders.PodFetch.of(models.policy, modelfetch.pull_secret())
    observe = observe or kube.observe
    meta = ei["metadata"]
    owner = Owner(meta["name"], meta["namespace"], meta["uid"])
    result = Result()
    try:
        spec = ElasticInferenceSpec.model_validate(ei.get("spec") or {})
    except ValidationError as err:
        result.conditions["PartitionSolved"] = ("False", "InvalidSpec", str(err).replace("\n", " ")[:900])
        with ledger.lock:
            snap = ledger.view(observe())
        return finish(kube, ei, owner, 0, snap, result)
    want = desired_replicas(spec)
    with ledger.lock:
        raw = observe()
        snap = ledger.view(raw)
        cms, own_pods = snap.owned(*_key(owner))
        records = {i: c[0] for i, c in by_instance(cms).items()}
        pods = by_instance(own_pods)
        kept = scale_down(kube, ledger, owner, records, pods, want, result)
        kept = drop_broken(kube, ledger, owner, kept, pods, snap.nodes, catalog, result)
        if not records or want > len(kept):
            kube.create(builders.segments_headless_service(owner))
        repair(kube, ledger, owner, spec, kept, pods, catalog, result, pod_fetch)
        if want > len(kept):
            snap = ledger.view(raw)
            place(kube, ledger, owner, spec, snap, set(kept), want - len(kept), catalog, result, models, pod_fetch)
        snap = ledger.view(raw)
    return finish(kube, ei, owner, want, snap, result)


def reconcile_gateway(kube, ei: dict, observe: Callable[[], Observed] | None = None,
                      ledger: Ledger = LEDGER) -> int:
    """Bring the gateway of `ei` in line with its instances (after `reconcile`); returns objects applied."""
    meta = ei["metadata"]
    owner = Owner(meta["name"], meta["namespace"], meta["uid"])
    try:
        spec = ElasticInferenceSpec.model_validate(ei.get("spec") or {})
    except ValidationError:
        return 0  # reconcile reports it; the gateway keeps its last good configuration
    observe = observe or kube.observe
    with ledger.lock:
        snap = ledger.view(observe())
    return ensure_gateway(kube, ledger, owner, spec, snap.owned(*_key(owner))[0])


def ensure_gateway(kube, ledger: Ledger, owner: Owner, spec: ElasticInferenceSpec, cms: list[dict]) -> int:
    """Server-side apply the gateway's objects that changed (or were last applied a while ago); returns how
    many were applied. With no instances the gateway stays, unready, until instances come back."""
    applied = 0
    for obj in builders.gateway_objects(owner, spec, cms):
        digest = hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
        if ledger.needs_apply(obj, digest):
            kube.apply(obj)
            ledger.mark_applied(obj, digest)
            applied += 1
    return applied


def _key(owner: Owner) -> tuple[str, str]:
    return owner.namespace, owner.name


def finish(kube, ei: dict, owner: Owner, want: int, snap: Observed, result: Result) -> dict:
    observed_cms, observed_pods = snap.owned(*_key(owner))
    status = compute_status(ei, owner, want, observed_cms, observed_pods, result)
    known = {c.get("reason") for c in (ei.get("status") or {}).get("conditions") or []}
    for type_, reason, message in result.events:
        if type_ == "Warning" and reason in known:
            continue  # already reported; the condition still carries it
        kube.event(ei, type_, reason, message)
    for type_, reason, message in _transition_events(ei, status):
        kube.event(ei, type_, reason, message)
    kube.patch_status(owner.namespace, owner.name, status)
    metrics.publish(owner.namespace, owner.name, status)
    return status


def _transition_events(ei: dict, status: dict) -> list[tuple[str, str, str]]:
    before = {c["type"]: c for c in (ei.get("status") or {}).get("conditions") or []}
    out = []
    for c in status["conditions"]:
        old = before.get(c["type"])
        if c["type"] == "Ready" and c["status"] == "True" and (old is None or old["status"] != "True"):
            out.append(("Normal", "Ready", c["message"]))
    return out


def pod_ready(pod: dict) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def pod_scheduled(pod: dict) -> bool:
    return bool(pod.get("spec", {}).get("nodeName"))


def compute_status(ei: dict, owner: Owner, want: int, cms: list[dict], pods: list[dict], result: Result) -> dict:
    records = {i: c[0] for i, c in by_instance(cms).items()}
    pods_of = by_instance(pods)
    summaries, ready, fps, cost, problems = [], 0, 0.0, 0.0, []
    for index in sorted(records):
        cm = records[index]
        wirings = builders.wirings_of(cm)
        problems += check_chain(wirings)
        own = pods_of.get(index, [])
        is_ready = len(own) == len(wirings) and all(pod_ready(p) for p in own)
        ready += is_ready
        inst_fps = float(cm["metadata"]["annotations"].get(builders.ANNOTATION_FPS, 0))
        fps += inst_fps
        cost += float(cm["metadata"]["annotations"].get(builders.ANNOTATION_COST, 0))
        summaries.append({"index": index, "fps": round(inst_fps, 3), "ready": is_ready, "segments": [
            {"node": w.node, "card": w.card, "cardType": w.card_type, "layers": w.layer_range} for w in wirings]})
    placed = len(records)
    scheduled = sum(pod_scheduled(p) for p in pods)
    total_pods = sum(len(builders.wirings_of(c)) for c in records.values())
    computed = _conditions(result, want, placed, ready, scheduled, total_pods, problems)
    spec = ei.get("spec") or {}
    return {
        "phase": _phase(computed, placed, ready, want),
        "conditions": merge_conditions((ei.get("status") or {}).get("conditions") or [], computed,
                                       ei["metadata"].get("generation")),
        "plan": {"objective": spec.get("objective", "throughput"),
                 "model": (spec.get("model") or {}).get("name") or "artifacts",
                 "instances": summaries, "cardsUsed": total_pods},
        "replicas": placed, "readyReplicas": ready, "selector": builders.selector(owner.name),
        "predictedFPS": round(fps, 3), "costPerHour": round(cost, 4),
        "fpsPerDollarHour": round(fps / cost, 3) if cost else 0.0,
        "endpoint": builders.endpoint(owner, builders.served_model(owner.name, (spec.get("model") or {}).get("name"))),
        "observedGeneration": ei["metadata"].get("generation"),
    }


def _conditions(result: Result, want, placed, ready, scheduled, total_pods, problems) -> dict:
    c = dict(result.conditions)
    if "PartitionSolved" not in c:
        c["PartitionSolved"] = ("True", "Solved", f"{placed} instance(s) planned") if placed or not want else None
    if placed < want:
        c["Scheduled"] = ("False", "InsufficientCards", f"{placed} of {want} instance(s) placed")
    elif scheduled < total_pods:
        c["Scheduled"] = ("False", "PodsPending", f"{scheduled} of {total_pods} segment pod(s) bound to nodes")
    else:
        c["Scheduled"] = ("True", "AllPlaced", f"{placed} instance(s), {total_pods} segment pod(s)")
    c["SegmentsReady"] = (("True", "AllReady", f"{ready} of {want} instance(s) ready") if ready >= want else
                          ("False", "SegmentsNotReady", f"{ready} of {want} instance(s) ready"))
    c["LinksUp"] = (("True", "WiringConsistent", "every segment sends where the next one listens")
                    if not problems else ("False", "WiringInconsistent", "; ".join(problems)[:900]))
    parts = [c.get(t) for t in ("PartitionSolved", "Scheduled", "SegmentsReady", "LinksUp")]
    bad = [p for p in parts if p is not None and p[0] != "True"]
    c["Ready"] = ("True", "Ready", f"{ready} instance(s) ready") if not bad else ("False", bad[0][1], bad[0][2])
    return {k: v for k, v in c.items() if v is not None}


def _phase(conditions: dict, placed: int, ready: int, want: int) -> str:
    if conditions["Ready"][0] == "True":
        return "Running"
    if placed == 0 and conditions.get("PartitionSolved", ("True",))[0] == "False":
        return "Failed"
    if placed == 0:
        return "Pending"
    return "Degraded" if ready else "Scheduling"


def merge_conditions(previous: list[dict], computed: dict, generation: int | None) -> list[dict]:
    """Conditions in a fixed order; lastTransitionTime changes only when the status flips."""
    before = {c["type"]: c for c in previous}
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = []
    for type_ in ("PartitionSolved", "Scheduled", "SegmentsReady", "LinksUp", "Ready"):
        if type_ not in computed:
            if type_ in before:
                out.append(before[type_])
            continue
        status, reason, message = computed[type_]
        old = before.get(type_)
        since = old["lastTransitionTime"] if old and old.get("status") == status else now
        out.append({"type": type_, "status": status, "reason": reason, "message": message,
                    "lastTransitionTime": since, "observedGeneration": generation})
    return out

