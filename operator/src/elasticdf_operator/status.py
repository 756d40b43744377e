"""status: the ElasticInference status as the pydantic models of api.py, from the snapshot after `act`.

Conditions are a typed set (KServe style): PartitionSolved, Scheduled, SegmentsReady and LinksUp are set from
what was observed and decided; Ready is derived from them (the first one not True gives its reason). PlanCurrent
says whether a roll to a new plan is under way; it does not count for Ready (the old plan serves meanwhile), and
the card builds a roll waits for are reported there instead of holding Scheduled.
`lastTransitionTime` changes only when a condition's status flips.
"""

from __future__ import annotations

import datetime as dt

from elasticdf_contract.wiring import check_chain

from . import builders
from .api import (
    CONDITION_TYPES,
    BuildSegment,
    BuildStatus,
    CardClock,
    Condition,
    ConditionType,
    ElasticInferenceStatus,
    GroupCard,
    GroupSummary,
    InstanceSummary,
    PlanSummary,
    SegmentSummary,
)
from .buildjobs import NO_BUILDS, BuildSettings, BuildsSeen, age_seconds, build_state
from .decide import Decision, GroupRecord

COMPONENTS: tuple[ConditionType, ...] = ("PartitionSolved", "Scheduled", "SegmentsReady", "LinksUp")


class ConditionSet:
    def __init__(self, previous: list[dict], generation: int | None, now: str):
        self.before = {c["type"]: Condition.model_validate(c) for c in previous}
        self.now, self.generation = now, generation
        self.current: dict[str, Condition] = {}

    def mark(self, type_: ConditionType, status: str, reason: str, message: str) -> None:
        old = self.before.get(type_)
        since = old.last_transition_time if old and old.status == status else self.now
        self.current[type_] = Condition(type=type_, status=status, reason=reason, message=message[:900],
                                        last_transition_time=since, observed_generation=self.generation)

    def derive_ready(self, ready_message: str) -> None:
        bad = [self.current[t] for t in COMPONENTS if t in self.current and self.current[t].status != "True"]
        if bad:
            self.mark("Ready", "False", bad[0].reason, bad[0].message)
        else:
            self.mark("Ready", "True", "Ready", ready_message)

    def get(self, type_: str) -> Condition | None:
        return self.current.get(type_) or self.before.get(type_)

    def ordered(self) -> list[Condition]:
        return [c for t in CONDITION_TYPES if (c := self.get(t)) is not None]


def build_status(ei: dict, owner: builders.Owner, want: int, cms: list[dict], pods: list[dict],
                 decision: Decision, spec_model: dict, seen: BuildsSeen | None = None,
                 build_settings: BuildSettings = NO_BUILDS, serving: set[str] | None = None) -> ElasticInferenceStatus:
    """`serving`: the instances the gateways serve (act.gateways_serving); an instance is ready once its card pods
    are and, where that is known, the gateways serve it: Ready then means requests are answered."""
    groups = sorted((GroupRecord.parse(cm) for cm in cms), key=lambda g: g.index)
    by_name = {p["metadata"]["name"]: p for p in pods}
    active = decision.active
    instances, group_summaries, problems, cost = [], [], [], 0.0
    builds: dict[str, BuildStatus] = {}
    bitstreams = (spec_model.get("artifacts") or {}).get("bitstreams") or {}
    seen = seen or BuildsSeen()
    for g in groups:
        ready_cards = g.ready_cards(owner.name, by_name)
        for inst in g.instances:
            wirings = g.wirings(inst["index"])
            problems += check_chain(wirings)
            instances.append(InstanceSummary(
                index=inst["index"], group=g.index, fps=g.instance_fps(inst, seen.clocks),
                standby=inst["index"] not in active,
                ready=bool(wirings) and all((w.node, w.card) in ready_cards for w in wirings)
                and (serving is None or wirings[0].instance_id in serving),
                segments=[SegmentSummary(node=w.node, card=w.card, card_type=w.card_type, layers=w.layer_range)
                          for w in wirings]))
        group_summaries.append(GroupSummary(
            index=g.index, instances=[i["index"] for i in g.instances],
            predicted_fps=round(sum(g.instance_fps(i, seen.clocks) for i in g.instances), 3),
            cards=[GroupCard(node=c.node, card=c.card, card_type=c.card_type, build=c.build) for c in g.cards]))
        cost += float(g.configmap["metadata"]["annotations"].get(builders.ANNOTATION_COST, 0))
        for c in g.cards:
            b = g.builds.get(c.build)
            if b is None:
                continue
            entry = builds.setdefault(c.build, BuildStatus(
                digest=c.build, card_type=b["cardType"], fclk_mhz=b["fclkMhz"], cards=0, folding=b["folding"],
                segments=[BuildSegment(layers=s["layers"], slrs=s["slrs"], floorplan=s["floorplan"])
                          for s in b["segments"]], bitstream=bitstreams.get(c.build)))
            entry.cards += 1
    now = dt.datetime.now(dt.UTC)
    if build_settings.registry:
        for entry in builds.values():
            fill_build(entry, seen, build_settings, now)
    served = [i for i in instances if not i.standby]
    ready = sum(i.ready for i in served)
    fps = sum(i.fps for i in served)
    conditions = ConditionSet((ei.get("status") or {}).get("conditions") or [], ei["metadata"].get("generation"),
                              dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    mark_components(conditions, decision, want, len(served), ready, groups, pods, problems, builds)
    conditions.derive_ready(f"{ready} instance(s) ready")
    cards_used = sum(len(g.cards) for g in groups)
    return ElasticInferenceStatus(
        phase=phase(conditions, len(served), ready), conditions=conditions.ordered(),
        plan=PlanSummary(objective=(ei.get("spec") or {}).get("objective", "throughput"),
                         model=spec_model.get("name") or "artifacts", instances=instances, groups=group_summaries,
                         cards_used=cards_used, **planned_cards(decision, groups)),
        replicas=len(served), ready_replicas=ready, standby_replicas=len(instances) - len(served),
        builds=sorted(builds.values(), key=lambda b: b.digest), selector=builders.selector(owner.name),
        predicted_fps=round(fps, 3), cost_per_hour=round(cost, 4),
        fps_per_dollar_hour=round(fps / cost, 3) if cost else 0.0,
        endpoint=builders.endpoint(owner, builders.served_model(owner.name, spec_model.get("name"))),
        grpc_endpoint=builders.grpc_endpoint(owner),
        observed_fps=(ei.get("status") or {}).get("observedFPS"),
        observed_generation=ei["metadata"].get("generation"))


def planned_cards(decision: Decision, groups: list[GroupRecord]) -> dict[str, dict]:
    """The clocks and resource scales the plans use, for the card types the groups hold (PlanSummary fields)."""
    catalog = decision.catalog
    cards = [catalog.cards[t] for t in sorted({c.card_type for g in groups for c in g.cards})] if catalog else []
    return {"clocks": {c.name: CardClock(mhz=c.fclk_mhz, source=c.fclk_source, build_mhz=c.build_clock_mhz)
                       for c in cards},
            "resource_scale": {c.name: dict(c.resource_scale) for c in cards if c.resource_scale}}


def fill_build(entry: BuildStatus, seen: BuildsSeen, settings: BuildSettings, now: dt.datetime) -> None:
    """A build's phase, step, Job and artifact, as the observe step saw them."""
    state = build_state(entry.digest, seen, settings)
    entry.phase, entry.progress, entry.attempts, entry.job = state.phase, state.progress, state.attempts, state.job
    entry.start_time, entry.age_seconds = state.started, age_seconds(state.started, now)
    entry.artifact = settings.artifact(state.manifest) if state.manifest else None
    entry.reported_clock_mhz = seen.clocks.get(entry.digest)
    entry.reported_resources = seen.resources.get(entry.digest)
    entry.message = state.message[:900] or None


def pending_message(decision: Decision, builds: dict[str, BuildStatus]) -> str:
    def one(digest: str) -> str:
        b = builds.get(digest)
        if b is None or b.phase is None:
            return f"{digest} (no bitstream in spec.model.artifacts.bitstreams)"
        return f"{digest} ({b.phase.lower()}{', step ' + b.progress if b.progress else ''}: {b.message or ''})"
    return "waiting for card build(s) " + "; ".join(one(d) for d in sorted(decision.pending_builds))


def mark_components(conditions: ConditionSet, decision: Decision, want: int, served: int, ready: int,
                    groups: list[GroupRecord], pods: list[dict], problems: list[str],
                    builds: dict[str, BuildStatus] | None = None) -> None:
    for type_, (status, reason, message) in decision.conditions.items():
        conditions.mark(type_, status, reason, message)
    if "PartitionSolved" not in decision.conditions and (served or not want):
        conditions.mark("PartitionSolved", "True", "Solved", f"{len(groups)} group(s) planned")
    if decision.rolling:  # the new plan's groups may still wait for builds or nodes: only serving ones count
        groups = [g for g in groups if any(i["index"] in decision.active for i in g.instances)]
    indexes = {str(g.index) for g in groups}
    total = sum(len(g.cards) for g in groups)
    bound = sum(bool(p.get("spec", {}).get("nodeName")) for p in pods
                if p["metadata"]["labels"].get(builders.LABEL_GROUP) in indexes)
    if not mark_builds(conditions, decision, builds or {}):
        mark_scheduled(conditions, want, served, bound, total)
    conditions.mark("SegmentsReady", *(("True", "AllReady") if ready >= want else ("False", "SegmentsNotReady")),
                    f"{ready} of {want} instance(s) ready")
    conditions.mark("LinksUp", *(("True", "WiringConsistent", "every segment sends where the next one listens")
                                 if not problems else ("False", "WiringInconsistent", "; ".join(problems))))


def mark_builds(conditions: ConditionSet, decision: Decision, builds: dict[str, BuildStatus]) -> bool:
    """Failed or pending card builds: they hold Scheduled, except during a roll, where the old plan serves and
    they are the roll's (PlanCurrent). True when they decided Scheduled."""
    failed = "; ".join(f"card build {d}: {why}" for d, why in sorted(decision.failed_builds.items()))
    waiting = "PlanCurrent" if decision.rolling else "Scheduled"
    if failed:
        conditions.mark(waiting, "False", "BuildFailed", failed)
    elif decision.pending_builds:
        conditions.mark(waiting, "False", "BuildPending", pending_message(decision, builds))
    return waiting == "Scheduled" and bool(failed or decision.pending_builds)


def mark_scheduled(conditions: ConditionSet, want: int, served: int, bound: int, total: int) -> None:
    if served < want:
        conditions.mark("Scheduled", "False", "InsufficientCards", f"{served} of {want} instance(s) placed")
    elif bound < total:
        conditions.mark("Scheduled", "False", "PodsPending", f"{bound} of {total} card pod(s) bound to nodes")
    else:
        conditions.mark("Scheduled", "True", "AllPlaced", f"{served} instance(s) on {total} card pod(s)")


def phase(conditions: ConditionSet, served: int, ready: int) -> str:
    if conditions.get("Ready").status == "True":
        return "Running"
    solved = conditions.get("PartitionSolved")
    if served == 0 and solved is not None and solved.status == "False":
        return "Failed"
    if served == 0:
        return "Pending"
    return "Degraded" if ready else "Scheduling"

