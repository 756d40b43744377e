"""decide: (spec, observed snapshot, now) -> typed actions. Pure: no API calls, no clock, no globals.

Per pass, over the resource's card groups (each held by a group ConfigMap, read back as a `GroupRecord`):
1. a group with a card on a deleted node, on a node NotReady for longer than the grace period, or a card the
   node lost is released whole and re-planned (the other groups are not touched);
2. instances are ordered (group index, instance index); the first `replicas` are *active* (in the gateway's
   rotation), the rest *standby* (flashed, idle). Scaling inside placed groups is only this order: no pod
   moves. A group whose instances are all standby is marked idle and released after the scale-down window,
   and never before the gateways had the drain period to drop its instances (see `release_idle`);
3. failed or missing card pods of kept groups are replaced (same name, same card);
4. if more instances are wanted than the groups hold, one solve over the free cards gives new groups (the
   solver's plan on those cards, split into groups), placed whole until enough instances exist;
5. the gateway's wiring lists the active instances.
Rolls: every group records the key of the spec inputs it was planned from (`plan_key`: the model, objective,
targets, placement); a group of another key, or whose card builds are at another clock than their card type has
today (a Fabric's clocks), is *outdated*, and the resource rolls (`Roll`): new groups of the current
plan are placed on free cards while the outdated ones keep serving (spec.builds prefer-existing: the new groups
may wait for their card builds meanwhile); a new group takes over the rotation only once its card pods are
ready, which leaves outdated groups standby and released by step 2 (drained first). Without free cards, one
outdated group at a time is taken out of the rotation to make room, but only while another group serves.
spec.builds best takes every outdated group out at once.
Clocks: a Fabric's clocks are what card builds are made for and plans use; the clock a card build *reports*
(Vitis lowers it where timing does not close) is what its card runs at: the plans of the next passes use it for
that card type while their builds keep the clock they target (`with_reported_clocks`), so a report changes
predicted fps and later placements, never a build digest (no rebuild, no roll). The resources a build reports
against what the cost model estimated for it scale the capacity of later placements on that card type
(`with_reported_resources`); the groups already placed keep their proven builds.
Card builds (buildjobs.py): with a registry configured, a card whose build the registry lacks is held (no pod)
until it is there, and a missing build gets one builder Job (the first resource needing a digest makes it; the
others wait on it); a failed Job is re-created at most `builds.recreations` times, then reported BuildFailed.
`act.execute` applies the actions; `status.build_status` reports the result.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from elasticdf_contract.builds import BuildRecord
from elasticdf_contract.wiring import CardWiring, SegmentWiring
from elasticdf_partitioner.artifacts import ModelError
from elasticdf_partitioner.builds import resource_scales
from elasticdf_partitioner.catalog import Catalog, with_clocks, with_resource_scale
from elasticdf_partitioner.errors import ElasticDFError, InfeasibleError
from elasticdf_partitioner.solver import solve
from elasticdf_partitioner.solver.pack import PackSettings

from . import builders
from .api import ElasticInferenceSpec, ModelSource
from .builders import CardPlace, Owner
from .buildjobs import BuildSettings, build_state
from .groups import PlannedGroup, card_builds, model_identity, plan_groups
from .inventory import Slot, broken_cards, build_cluster, fabric_view, free_slots, held_slots
from .modelfetch import ModelPending
from .state import Observed

# ---- actions -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Create:
    """Create an object; AlreadyExists means another pass got there first."""

    obj: dict


@dataclass(frozen=True)
class DeletePod:
    name: str
    uid: str | None


@dataclass(frozen=True)
class DeleteGroup:
    """Release a group: its ConfigMap and card pods. With `unless_served`, only once no gateway pod still
    holds (serves or drains) one of these instance ids; the executor asks the gateways and otherwise skips
    the release (a later pass retries). Empty: release now (a lost card, or the gateways cannot be asked)."""

    index: int
    configmap_uid: str | None
    pod_uids: tuple[str, ...]
    unless_served: tuple[str, ...] = ()


@dataclass(frozen=True)
class MarkIdle:
    """Set (a unix time) or clear (None) the idle-since annotation of a group ConfigMap."""

    name: str
    since: float | None


@dataclass(frozen=True)
class Apply:
    """Server-side apply (the gateway's objects; skipped while unchanged)."""

    obj: dict


@dataclass(frozen=True)
class Emit:
    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class CreateBuildJob:
    """Start a card build; its event is posted only by the resource whose create made the Job."""

    obj: dict
    event: Emit


@dataclass(frozen=True)
class UpdateWiring:
    """Rewrite a group ConfigMap's card wiring (a build became available: its artifact goes into the wiring)."""

    name: str
    data: dict[str, str]


Action = Create | DeletePod | DeleteGroup | MarkIdle | Apply | Emit | CreateBuildJob | UpdateWiring


@dataclass
class Decision:
    actions: list[Action] = field(default_factory=list)
    conditions: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # type -> (status, reason, msg)
    pending_builds: set[str] = field(default_factory=set)
    failed_builds: dict[str, str] = field(default_factory=dict)  # digest -> why (with the Job's log tail)
    requested_builds: set[str] = field(default_factory=set)  # digests whose builds this pass looked after
    lookups: set[str] = field(default_factory=set)  # build digests the next observe asks the registry about
    solve_seconds: float | None = None
    active: set[int] = field(default_factory=set)  # instances in the gateway's rotation after this pass
    rolling: bool = False  # groups of an older plan still exist (their builds pending do not hold the service)
    # the catalog this pass planned with: clocks (Fabric, reported) and resource scales per card type
    catalog: Catalog | None = None

    def emit(self, type_: str, reason: str, message: str) -> None:
        self.actions.append(Emit(type_, reason, message))


@dataclass(frozen=True)
class Settings:
    not_ready_grace_seconds: float = 30.0
    # an idle group's cards stay flashed this long at least: the new wiring reaches the gateways (kubelet
    # refresh + their poll, about 2 s) and their in-flight requests to its instances finish
    gateway_drain_seconds: float = 5.0
    # then wait until the gateways report they hold none of its instances, at most this much longer
    # (False: the gateways cannot be asked, e.g. simulated pods; the drain period alone decides)
    ask_gateways: bool = True
    gateway_confirm_seconds: float = 60.0
    pod_fetch: builders.PodFetch = field(default_factory=builders.PodFetch)  # how card pods fetch the model
    builds: BuildSettings = field(default_factory=BuildSettings)


# ---- what is held ------------------------------------------------------------------------------------


@dataclass
class GroupRecord:
    index: int
    configmap: dict
    cards: list[CardWiring]  # by position in the group
    instances: list[dict]  # [{"index", "fps"}]
    builds: dict[str, dict]  # digest -> build record
    idle_since: float | None
    plan: str | None = None  # plan_key of the inputs it was planned from (None: before keys were recorded)

    @classmethod
    def parse(cls, cm: dict) -> GroupRecord:
        record = builders.record_of(cm)
        return cls(int(cm["metadata"]["labels"][builders.LABEL_GROUP]), cm, builders.card_wirings_of(cm),
                   record.get("instances", []), record.get("builds", {}), builders.idle_since(cm),
                   record.get("plan"))

    def current(self, key: str, clocks: dict[str, float]) -> bool:
        """Planned from this spec's inputs, and every card build made for today's clock of its card type."""
        return (self.plan is None or self.plan == key) and all(
            b["fclkMhz"] == clocks.get(b["cardType"], b["fclkMhz"]) for b in self.builds.values())

    @property
    def name(self) -> str:
        return self.configmap["metadata"]["name"]

    @property
    def held(self) -> list[dict]:
        return builders.cards_of(self.configmap)

    def instance_ids(self) -> tuple[str, ...]:
        """How the gateways name this group's instances (SegmentWiring.instance_id)."""
        return tuple(sorted({w.instance_id for c in self.cards for w in c.segments}))

    def ready_cards(self, owner: str, pods_by_name: dict[str, dict]) -> set[tuple[str, int]]:
        """(node, card) of the group's cards whose card pod is Ready."""
        return {(c.node, c.card) for p, c in enumerate(self.cards)
                if pod_ready(pods_by_name.get(builders.card_pod_name(owner, self.index, p), {}))}

    def wirings(self, instance: int) -> list[SegmentWiring]:
        return sorted((w for c in self.cards for w in c.segments if w.instance == instance), key=lambda w: w.segment)

    def instance_fps(self, instance: dict, reported: dict[str, float]) -> float:
        """The instance's fps at the clocks its card builds report (`reported`: build digest -> MHz): its planned
        fps x the lowest clock its cards run at / the clock it was planned at. Exact when its cards are of one
        type (the usual case), a lower bound otherwise."""
        planned_at = instance.get("fclkMhz")
        builds = {c.build for c in self.cards if any(w.instance == instance["index"] for w in c.segments)}
        if not planned_at or not builds & set(reported):
            return instance["fps"]
        return round(instance["fps"] * min(reported.get(b, planned_at) for b in builds) / planned_at, 3)


def desired_replicas(spec: ElasticInferenceSpec) -> int:
    if spec.autoscaling is None:
        return spec.replicas
    return max(spec.autoscaling.min_replicas, min(spec.autoscaling.max_replicas, spec.replicas))


def instance_order(groups: list[GroupRecord], roll: Roll | None = None) -> list[tuple[GroupRecord, dict]]:
    """Activation order: lower groups first, so the highest groups go idle first and can be released. During a
    roll: ready groups of the current plan, then the outdated ones, then current groups not ready yet; retiring
    groups never."""
    def rank(g: GroupRecord) -> tuple[int, int]:
        if roll is None or not roll.outdated:
            return 0, g.index
        if not roll.is_current(g):
            return 1, g.index
        return (0 if g.index in roll.ready else 2), g.index
    kept = [g for g in groups if roll is None or g.index not in roll.retiring]
    return [(g, i) for g in sorted(kept, key=rank) for i in sorted(g.instances, key=lambda i: i["index"])]


def active_instances(groups: list[GroupRecord], want: int, roll: Roll | None = None) -> set[int]:
    return {i["index"] for _, i in instance_order(groups, roll)[:want]}


def plan_key(spec: ElasticInferenceSpec) -> str:
    """What of the spec a plan is computed from: a group planned from other inputs is outdated (so is one whose
    card builds are at another clock than their card type's today, see GroupRecord.current). Scaling (replicas,
    autoscaling bounds) and the runtime are not inputs of the plan."""
    inputs = {"model": model_identity(spec.model), "objective": spec.objective, "targetFPS": spec.target_fps,
              "instanceTargetFPS": spec.autoscaling.target_fps if spec.autoscaling else None,
              "minInstanceFPS": spec.min_instance_fps,
              "placement": spec.placement.model_dump(mode="json", by_alias=True) if spec.placement else None}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def with_fabric_clocks(catalog: Catalog, snap: Observed, decision: Decision) -> Catalog:
    """The catalog with the Fabrics' measured clocks (a card type the catalog does not know is reported)."""
    clocked = catalog
    for card_type, mhz in sorted(fabric_view(snap.fabrics).clocks.items()):
        try:
            clocked = with_clocks(clocked, {card_type: mhz}, "measured (Fabric clocks)")
        except ElasticDFError as err:
            decision.emit("Warning", "InvalidFabric", f"Fabric clocks: {err}")
    return clocked


def with_reported_clocks(catalog: Catalog, groups: list[GroupRecord], key: str, reported: dict[str, float]
                         ) -> Catalog:
    """The catalog with the clocks the card builds of this resource's current groups report (`reported`: build
    digest -> MHz), the lowest per card type, where it differs from the catalog's: a build made for today's
    target of its type reached that clock. Plans run at it; new builds still target the same clock."""
    lowest: dict[str, tuple[float, str]] = {}
    for group in groups:
        for digest, build in group.builds.items() if group.plan in (None, key) else ():
            card = catalog.cards.get(build["cardType"])
            mhz = reported.get(digest)
            if card is None or mhz is None or build["fclkMhz"] != card.synth_clock_mhz or mhz == card.fclk_mhz:
                continue
            if mhz < lowest.get(card.name, (float("inf"),))[0]:
                lowest[card.name] = (mhz, digest)
    for name, (mhz, digest) in sorted(lowest.items()):
        target = catalog.cards[name].synth_clock_mhz
        catalog = with_clocks(catalog, {name: mhz}, f"reported by card build {digest[:19]} (made for {target:g} "
                              "MHz)", built_at=target)
    return catalog


def with_reported_resources(catalog: Catalog, groups: list[GroupRecord], reported: dict[str, dict[str, float]]
                            ) -> Catalog:
    """The catalog with what the card builds of this resource's groups report using against what the cost model
    estimated for them (`reported`: build digest -> REPORT_RESOURCES name -> used), as `elasticdf plan
    --build-reports` reads local reports."""
    pairs = [(BuildRecord.model_validate(build), reported[digest])
             for g in groups for digest, build in g.builds.items() if digest in reported]
    return with_resource_scale(catalog, resource_scales(pairs))


def pod_ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in pod.get("status", {}).get("conditions") or [])


@dataclass
class Roll:
    """Which groups are of the current plan, which are ready (every card pod Ready), which leave the rotation."""

    key: str
    clocks: dict[str, float]  # card type -> MHz card builds are made for today
    groups: list[GroupRecord]
    ready: set[int]
    retiring: set[int] = field(default_factory=set)

    @classmethod
    def of(cls, key: str, catalog: Catalog, groups: list[GroupRecord], owner: Owner,
           pods_by_name: dict[str, dict], serving: set[str] | None = None) -> Roll:
        """`serving`: the instances the gateways serve (None: not known). A group is ready once its card pods are
        and, where that is known, the gateways serve one of its instances (they reach its card pods): the old
        groups leave the rotation only then (a CI run lost requests when they left while the gateway still had
        the new instance down)."""
        ready = {g.index for g in groups if len(g.ready_cards(owner.name, pods_by_name)) == len(g.cards)
                 and (serving is None or serving & set(g.instance_ids()))}
        return cls(key, {name: card.synth_clock_mhz for name, card in catalog.cards.items()}, groups, ready)

    def is_current(self, group: GroupRecord) -> bool:
        return group.current(self.key, self.clocks)

    @property
    def outdated(self) -> list[GroupRecord]:
        return [g for g in self.groups if not self.is_current(g)]

    @property
    def current(self) -> list[GroupRecord]:
        return [g for g in self.groups if self.is_current(g)]

    def current_instances(self) -> int:
        return sum(len(g.instances) for g in self.current)

    def taking_over(self) -> set[int]:
        """The groups of the new plan while old ones serve: standby maybe, but never idle (they take over)."""
        return {g.index for g in self.current} if self.outdated else set()

    def taking_over_instances(self, want: int) -> set[int]:
        """The instances of the new plan that will be active once it is ready. They are in the gateway's wiring
        from the start (it checks them and routes to them once their segments answer), so when the old ones
        leave it, the gateways already serve from the new ones: make before break."""
        taking_over = self.taking_over()
        return active_instances([g for g in self.groups if g.index in taking_over], want)

    def make_room(self, policy: str, want: int, placed_now: bool) -> None:
        """Choose the outdated groups that leave the rotation now (they drain, then step 2 releases them).
        best: all. prefer-existing: none while new groups can still be placed or are not ready yet; else the
        highest outdated group, if another group keeps serving."""
        outdated = self.outdated
        if policy == "best":
            self.retiring = {g.index for g in outdated}
            return
        if not outdated or placed_now or self.current_instances() >= want or any(
                g.index not in self.ready for g in self.current):
            return
        last = max(outdated, key=lambda g: g.index)
        if any(g.instances for g in self.groups if g is not last and (g in outdated or g.index in self.ready)):
            self.retiring = {last.index}

    def condition(self, want: int, placed_now: bool) -> tuple[str, str, str]:
        outdated = self.outdated
        if not outdated:
            return "True", "Current", f"every group is on the current plan (inputs {self.key})"
        current = self.current
        state = (f"{len(outdated)} group(s) of an older plan serving, {len(current)} of the current plan "
                 f"(inputs {self.key}), {sum(g.index in self.ready for g in current)} of them ready")
        if self.retiring:
            return "False", "Rolling", f"{state}; releasing group(s) {sorted(self.retiring)} to make room"
        if not placed_now and all(g.index in self.ready for g in current) and self.current_instances() < want:
            return "False", "RollBlocked", (f"{state}; no free card for another group of the new plan and the "
                                            f"old group(s) serve alone: add cards, or set spec.builds: best")
        return "False", "Rolling", state


def release_window(spec: ElasticInferenceSpec) -> float:
    """How long a fully idle group stays flashed: the autoscaler's scale-down window; with manual scaling a
    smaller spec.replicas is a decision, not a fluctuation, so idle groups go as soon as the gateways let go."""
    return float(spec.autoscaling.scale_down_stabilization_seconds) if spec.autoscaling else 0.0


# ---- decide -----------------------------------------------------------------------------------------


def decide(owner: Owner, spec: ElasticInferenceSpec, snap: Observed, now: float, catalog: Catalog,
           load_model: Callable, settings: Settings = Settings()) -> Decision:
    decision = Decision()
    want = desired_replicas(spec)
    modelled, catalog = catalog, with_fabric_clocks(catalog, snap, decision)
    fallback = modelled if settings.builds.registry and spec.builds == "prefer-existing" and any(
        card.synth_clock_mhz != modelled.cards[name].synth_clock_mhz for name, card in catalog.cards.items()) else None
    key = plan_key(spec)
    cms, pods = snap.owned(owner.namespace, owner.name)
    pods_by_name = {p["metadata"]["name"]: p for p in pods}
    groups = drop_broken([GroupRecord.parse(cm) for cm in cms], pods, snap, now, catalog, settings, decision)
    catalog = with_reported_resources(with_reported_clocks(catalog, groups, key, snap.builds.clocks), groups,
                                      snap.builds.resources)
    decision.catalog = catalog
    roll = Roll.of(key, catalog, groups, owner, pods_by_name, snap.serving)
    decision.rolling = bool(roll.outdated)
    placed_now = False
    if decision.rolling and want > roll.current_instances():  # the new plan's groups go on free cards first
        made = place(owner, spec, snap, groups, set(), want - roll.current_instances(), catalog, load_model,
                     decision, settings, key, quiet=True)
        groups += made
        roll.groups, placed_now = groups, bool(made)
    roll.make_room(spec.builds, want, placed_now)
    groups = release_idle(groups, active_instances(groups, want, roll), now, release_window(spec), pods, decision,
                          settings, roll.taking_over())
    roll.groups = groups
    placed = roll.current_instances()
    if not groups or want > placed:
        decision.actions.append(Create(builders.cards_headless_service(owner)))
    for group in groups:
        repair(owner, spec, group, pods_by_name, snap, catalog, decision, settings)
    if want > placed and not decision.rolling:
        gone = {a.index for a in decision.actions if isinstance(a, DeleteGroup)}
        groups += place(owner, spec, snap, groups, gone, want - placed, catalog, load_model, decision, settings, key,
                        modelled=fallback)
        roll.groups = groups
    decision.active = active_instances(groups, want, roll)
    decision.conditions["PlanCurrent"] = roll.condition(want, placed_now)
    wired = decision.active | roll.taking_over_instances(want)
    wirings = [w for g in groups for i in sorted(wired & {x["index"] for x in g.instances}) for w in g.wirings(i)]
    decision.actions += [Apply(obj) for obj in builders.gateway_objects(owner, spec, wirings)]
    return decision


def _pod_uids(group: GroupRecord, pods: list[dict]) -> tuple[str, ...]:
    prefix = f"{group.index}"
    return tuple(p["metadata"].get("uid") for p in pods
                 if p["metadata"]["labels"].get(builders.LABEL_GROUP) == prefix)


def drop_broken(groups, pods, snap, now, catalog, settings, decision) -> list[GroupRecord]:
    kept = []
    when = dt.datetime.fromtimestamp(now, dt.UTC)
    for group in groups:
        lost = broken_cards(group.held, snap.nodes, catalog, when, settings.not_ready_grace_seconds)
        if not lost:
            kept.append(group)
            continue
        decision.actions.append(DeleteGroup(group.index, group.configmap["metadata"].get("uid"),
                                            _pod_uids(group, pods)))
        decision.emit("Warning", "GroupReplanned", f"group {group.index} (instances "
                      f"{[i['index'] for i in group.instances]}): {'; '.join(lost)}; re-planning")
    return kept


def release_idle(groups, active, now, window, pods, decision, settings: Settings,
                 taking_over: set[int]) -> list[GroupRecord]:
    """Mark groups idle whose instances all left the rotation; release them once idle long enough. Groups of a
    new plan that wait to take over from an old one (`taking_over`) are not idle, ready or not.

    Never in the pass that takes the instances out of the gateway's wiring: the card pods must outlive the
    gateways' use of them, or the requests in flight to them fail. So a group is released at the earliest
    `gateway_drain_seconds` after it went idle, and only once the gateways say they hold none of its
    instances (asked by the executor; after `gateway_confirm_seconds` more it goes regardless)."""
    kept = []
    wait = max(window, settings.gateway_drain_seconds)
    for group in groups:
        idle = not any(i["index"] in active for i in group.instances) and group.index not in taking_over
        if not idle:
            if group.idle_since is not None:
                decision.actions.append(MarkIdle(group.name, None))
            kept.append(group)
        elif group.idle_since is None:
            decision.actions.append(MarkIdle(group.name, now))
            kept.append(group)
        elif now - group.idle_since < wait:
            kept.append(group)
        else:
            ask = settings.ask_gateways and now - group.idle_since < wait + settings.gateway_confirm_seconds
            decision.actions.append(DeleteGroup(group.index, group.configmap["metadata"].get("uid"),
                                                _pod_uids(group, pods), group.instance_ids() if ask else ()))
            decision.emit("Normal", "GroupReleased", f"group {group.index}: every instance idle; released "
                          f"{len(group.cards)} card(s)")
    return kept


def missing_builds(spec: ElasticInferenceSpec, cards: list[CardWiring], snap: Observed,
                   settings: Settings) -> set[str]:
    """Card builds a group waits for. Without a registry: xrt builds with no bitstream in
    spec.model.artifacts.bitstreams (emulation cards cut the model themselves). With one: every build the
    registry does not hold (a user's bitstream still counts for xrt)."""
    have = spec.model.artifacts.bitstreams if spec.model.artifacts else {}
    if not settings.builds.registry:
        return {c.build for c in cards if c.mode == "xrt" and c.build not in have}
    return {c.build for c in cards if c.build not in have and not snap.builds.manifests.get(c.build)}


def _xclbin(spec: ElasticInferenceSpec, card: CardWiring) -> str | None:
    return (spec.model.artifacts.bitstreams if spec.model.artifacts else {}).get(card.build)


def _pull(settings: Settings) -> builders.BuildPull:
    """How card pods pull their build: builds.insecure, and builds.pullSecret (in the resource's namespace)."""
    return builders.BuildPull(settings.builds.insecure, settings.builds.pull_secret or None)


def with_artifact(card: CardWiring, snap: Observed, settings: Settings) -> CardWiring:
    """The card's wiring naming its build's artifact in the registry (unchanged when there is none)."""
    manifest = snap.builds.manifests.get(card.build)
    if not settings.builds.registry or not manifest:
        return card
    uri = settings.builds.artifact(manifest)
    return card.model_copy(update={"segments": [
        w.model_copy(update={"artifacts": w.artifacts.model_copy(update={"build": uri})}) for w in card.segments]})


def request_builds(spec: ElasticInferenceSpec, group: GroupRecord, pending: set[str], snap: Observed,
                   decision: Decision, settings: Settings) -> None:
    """Start (or re-start, bounded) the builder Job of every pending build of `group`; record failures."""
    if not settings.builds.registry:
        return
    modes = {c.build: c.mode for c in group.cards}
    for digest in sorted(pending - decision.requested_builds):
        decision.requested_builds.add(digest)
        state = build_state(digest, snap.builds, settings.builds)
        if state.phase == "Failed":
            decision.failed_builds[digest] = state.message
            continue
        if modes[digest] == "xrt" and not settings.builds.xrt_image:
            decision.failed_builds[digest] = "xrt builds need the chart value builds.xrtImage (a FINN + Vivado image)"
            continue
        looked_up = digest in snap.builds.manifests
        if looked_up and (state.job is None or state.retry):
            record = BuildRecord.model_validate({"model": model_identity(spec.model),
                                                 **json.loads(json.dumps(group.builds[digest]))})
            job = builders.build_job(record, spec, modes[digest], state.attempts, settings.builds,
                                     settings.pod_fetch)
            note = f" (attempt {state.attempts + 1}; before: {state.message})" if state.attempts else ""
            decision.actions.append(CreateBuildJob(job, Emit("Normal", "BuildStarted", f"card build {digest}: Job "
                                                             f"{settings.builds.namespace}/{job['metadata']['name']}"
                                                             f"{note}")))


def repair(owner, spec, group: GroupRecord, pods_by_name, snap: Observed, catalog, decision,
           settings: Settings) -> None:
    """Replace failed card pods and create missing ones (same name, same card); hold while a build is missing,
    and once it is there put its artifact into the wiring before the pod that mounts it is made."""
    pending = missing_builds(spec, group.cards, snap, settings)
    decision.pending_builds |= pending
    request_builds(spec, group, pending, snap, decision, settings)
    wired = [with_artifact(c, snap, settings) for c in group.cards]
    if wired != group.cards:
        decision.actions.append(UpdateWiring(group.name, {builders.card_wiring_key(p): c.model_dump_json()
                                                          for p, c in enumerate(wired)}))
        group.cards = wired
    for position, card in enumerate(group.cards):
        name = builders.card_pod_name(owner.name, group.index, position)
        pod = pods_by_name.get(name)
        if pod is not None and pod.get("status", {}).get("phase") == "Failed":
            decision.actions.append(DeletePod(name, pod["metadata"].get("uid")))
            decision.emit("Warning", "CardPodFailed", f"card pod {name} failed; replacing it")
            pod = None
        if pod is None and card.build not in pending:
            decision.actions.append(Create(builders.card_pod(owner, spec, group.index, position, card, catalog,
                                                             _xclbin(spec, card), settings.pod_fetch,
                                                             _pull(settings))))


# ---- placement --------------------------------------------------------------------------------------


def _settings(spec: ElasticInferenceSpec) -> PackSettings:
    cards = spec.placement.max_segments_per_instance if spec.placement else None
    return PackSettings(min_instance_fps=spec.min_instance_fps or 0.0,
                        **({"max_cards_per_instance": cards} if cards else {}))


def instance_target(spec: ElasticInferenceSpec) -> float | None:
    """The fps one instance should reach: the autoscaler's per-replica target, else targetFPS / replicas."""
    if spec.autoscaling is not None:
        return spec.autoscaling.target_fps
    return spec.target_fps / max(spec.replicas, 1) if spec.target_fps else None


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


def solve_groups(graph, cluster, spec: ElasticInferenceSpec) -> list[PlannedGroup]:
    """The solver's plan on `cluster` as groups, best fps per card first. Throughput/latency: exactly what
    `elasticdf plan` prints for these cards; cost: the cheapest plan that gives one instance its target."""
    objective, target = spec.objective, instance_target(spec)
    if objective == "cost" and not target:
        objective = "throughput"
    limits = spec.placement.limits if spec.placement else None
    plan = solve(graph, cluster, objective, target if objective == "cost" else None, limits,
                 settings=_settings(spec))
    groups = plan_groups(plan)
    return groups if objective != "cost" else groups[:1]


def resolve_graph(load_model: Callable, source: ModelSource, decision: Decision):
    """The graph of spec.model, or None with PartitionSolved saying why (fetching, fetch failed, invalid).
    `load_model` never blocks on a download: the operator's model store fetches in the background."""
    try:
        return load_model(source)
    except ModelPending as pending:
        decision.conditions["PartitionSolved"] = ("Unknown", "ModelFetching", str(pending))
    except ModelError as err:
        decision.conditions["PartitionSolved"] = ("False", err.reason, str(err))
    except ElasticDFError as err:
        decision.conditions["PartitionSolved"] = ("False", "InvalidModel", str(err))
    return None


def place(owner, spec, snap: Observed, groups: list[GroupRecord], gone: set[int], missing: int, catalog,
          load_model, decision: Decision, settings: Settings, key: str, quiet: bool = False,
          modelled: Catalog | None = None) -> list[GroupRecord]:
    """New groups over the free cards until `missing` more instances exist; returns their records. `quiet`:
    during a roll, where the old groups serve while too few cards are free, a shortage is no warning.
    `modelled`: the catalog without measured clocks, for spec.builds prefer-existing (see `prefer_existing`)."""
    kept = {g.index for g in groups}
    cms = [c for c in snap.configmaps if not _is_gone(c, owner, gone)]
    pods = [p for p in snap.pods if not _is_gone(p, owner, gone)]
    placement = spec.placement
    slots = free_slots(snap.nodes, held_slots(cms, pods), catalog, placement.card_types if placement else None,
                       placement.node_selector if placement else None)
    fabric = fabric_view(snap.fabrics)
    labels = {n["metadata"]["name"]: n["metadata"].get("labels") or {} for n in snap.nodes}
    ordinals = {name: i for i, name in enumerate(sorted(labels))}
    graph = resolve_graph(load_model, spec.model, decision)
    if graph is None:
        return []
    taken = {i["index"] for g in groups for i in g.instances}
    next_group = max(kept | gone, default=-1) + 1
    made: list[GroupRecord] = []
    while missing > 0:
        solved = solve_free(graph, slots, missing, snap, catalog, fabric, spec, decision, quiet)
        if solved is not None and modelled is not None:
            fallback = solve_free(graph, slots, missing, snap, modelled, fabric, spec, decision, True)
            solved = prefer_existing(solved, fallback, spec, missing, snap, decision)
        if solved is None:
            return made
        fc, planned = solved
        for pg in planned:
            if missing <= 0:
                break
            record = new_group(owner, spec, snap, pg, next_group, taken, fc, catalog, labels, ordinals,
                               fabric.pool or builders.DEFAULT_POOL, decision, settings, key)
            made.append(record)
            next_group += 1
            missing -= len(pg.instances)
            used = {(c.node, c.card) for c in record.cards}
            slots = [s for s in slots if (s.node, s.index) not in used]
        if spec.objective != "cost":
            break  # one solve offers every free card that matters: what it did not place does not fit
    if missing > 0 and not quiet:
        _short(decision, missing, "the free cards hold no further instance", infeasible=not made and not groups)
    return made


def solve_free(graph, slots: list[Slot], missing: int, snap: Observed, catalog: Catalog, fabric, spec, decision,
               quiet: bool):
    """(free cluster, its plan as groups) over the candidate free cards, or None with the reason recorded."""
    try:
        fc = build_cluster(candidates(slots, missing, _settings(spec).max_cards_per_instance), snap.nodes,
                           catalog, fabric)
    except ElasticDFError as err:  # e.g. a Fabric prices a card type the catalog does not know
        decision.conditions["PartitionSolved"] = ("False", "InvalidFabric", f"Fabric: {err}")
        return None
    if fc.cluster is None:
        if not quiet:
            _short(decision, missing, fc.reason)
        return None
    started = time.perf_counter()
    try:
        return fc, solve_groups(graph, fc.cluster, spec)
    except InfeasibleError as err:
        _short(decision, missing, str(err), infeasible=True)
    except ElasticDFError as err:
        decision.conditions["PartitionSolved"] = ("False", "InvalidSpec", str(err))
    finally:
        decision.solve_seconds = (decision.solve_seconds or 0) + time.perf_counter() - started
    return None


def prefer_existing(best, fallback, spec: ElasticInferenceSpec, missing: int, snap: Observed, decision: Decision):
    """spec.builds prefer-existing under measured clocks: the best plan's card builds may not exist yet while
    those of the plan at the modelled clocks do (made before the clocks were measured). Then that plan is placed
    now; its groups are outdated, so the roll to the best plan (and its builds) starts at once. None while the
    registry has not been asked about both plans' builds yet (the next pass has the answers)."""
    if fallback is None:
        return best
    model = model_identity(spec.model)
    best_builds, fallback_builds = (_placed_builds(model, planned, missing) for _, planned in (best, fallback))
    unknown = (best_builds | fallback_builds) - set(snap.builds.manifests)
    if unknown:
        decision.lookups |= unknown
        decision.conditions["PartitionSolved"] = ("Unknown", "LookingUpBuilds", f"asking the registry for "
                                                  f"{len(unknown)} card build(s) (spec.builds: prefer-existing)")
        return None
    def exist(digests: set[str]) -> bool:
        return all(snap.builds.manifests.get(d) for d in digests)
    if exist(best_builds) or not exist(fallback_builds):
        return best
    decision.emit("Normal", "PlacedOnExistingBuilds", "the best plan's card builds do not exist yet: placing the "
                  "plan at the modelled clocks, whose builds do, and rolling to the best plan once they are made")
    return fallback


def _placed_builds(model: str, planned: list[PlannedGroup], missing: int) -> set[str]:
    """The build digests of the groups `place` would take from `planned` for `missing` instances."""
    digests: set[str] = set()
    for pg in planned:
        if missing <= 0:
            break
        digests |= {b["digest"] for b in card_builds(model, pg).values()}
        missing -= len(pg.instances)
    return digests


def _is_gone(obj: dict, owner: Owner, gone: set[int]) -> bool:
    labels = obj["metadata"].get("labels") or {}
    return (obj["metadata"].get("namespace") == owner.namespace and labels.get(builders.LABEL_NAME)
            == builders.label_value(owner.name) and labels.get(builders.LABEL_GROUP) in {str(g) for g in gone})


def new_group(owner, spec, snap: Observed, pg: PlannedGroup, index: int, taken: set[int], fc, catalog, labels,
              ordinals, pool, decision: Decision, settings: Settings, key: str) -> GroupRecord:
    builds = card_builds(model_identity(spec.model), pg)
    places = [CardPlace(node, fc.physical[(node, card)], type_, ordinals.get(node, 0), builds[(node, card)]["digest"])
              for node, card, type_ in pg.cards]
    position = {(node, card): p for p, (node, card, _) in enumerate(pg.cards)}
    numbered = []
    for inst in pg.instances:
        number = next(i for i in range(len(taken) + len(pg.instances) + 1) if i not in taken)
        taken.add(number)
        numbered.append((number, inst))
    mode = builders.resolve_mode(spec, labels.get(pg.cards[0][0], {}))
    cards = [with_artifact(c, snap, settings)
             for c in builders.group_wiring(owner, spec, index, mode, places, numbered, position, pool)]
    record = {"instances": [{"index": n, "fps": round(i.fps, 3), "fclkMhz": i.fclk_mhz} for n, i in numbered],
              "builds": {b["digest"]: b for b in builds.values()}, "plan": key}
    cost = sum(fc.cluster.cost_per_hour(t) for _, _, t in pg.cards)
    cm = builders.group_configmap(owner, index, cards, record, pg.fps, cost)
    decision.actions.append(Create(cm))
    group = GroupRecord(index, cm, cards, record["instances"], record["builds"], None, key)
    pending = missing_builds(spec, cards, snap, settings)
    decision.pending_builds |= pending
    request_builds(spec, group, pending, snap, decision, settings)
    for p, card in enumerate(cards):
        if card.build not in pending:
            decision.actions.append(Create(builders.card_pod(owner, spec, index, p, card, catalog,
                                                             _xclbin(spec, card), settings.pod_fetch,
                                                             _pull(settings))))
    where = ", ".join(f"{c.node}/{c.card} ({c.card_type})" for c in cards)
    decision.emit("Normal", "GroupPlaced", f"group {index}: instances {[n for n, _ in numbered]} on {where}, "
                  f"{pg.fps:.0f} fps predicted")
    decision.conditions["PartitionSolved"] = ("True", "Solved", f"group {index}: {len(numbered)} instance(s), "
                                              f"{pg.fps:.1f} fps")
    return group


def _short(decision: Decision, missing: int, message: str, infeasible: bool = False) -> None:
    if infeasible and "PartitionSolved" not in decision.conditions:
        decision.conditions["PartitionSolved"] = ("False", "PartitionInfeasible", message)
    decision.emit("Warning", "PartitionInfeasible" if infeasible else "InsufficientCards",
                  f"{missing} instance(s) not placed: {message}")
