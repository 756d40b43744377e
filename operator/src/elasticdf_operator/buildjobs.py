"""Card builds the operator runs (issue 15, docs/builds.md): where builds are stored, what it observes of them,
and how a build's Jobs read as a phase.

With a registry configured (chart value builds.registry -> ELASTICDF_BUILD_REGISTRY), a card build exists when the
registry has the tag `build_tag(digest)` in BUILD_REPOSITORY; a missing one is made by a builder Job in the
operator's namespace (`builders.build_job`), one per digest and attempt, shared by every resource that needs it.
Looking a tag up (oci_builds.build_exists) is I/O, so it happens in the observe step (`BuildIndex.observe`);
`decide` and `status` only read the resulting `BuildsSeen` and the Jobs' projections through `build_state`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from elasticdf_contract.builds import build_tag
from elasticdf_contract.names import ANNOTATION_BUILD_ATTEMPT, LABEL_BUILD
from elasticdf_partitioner.artifacts import FetchPolicy, ModelError
from elasticdf_partitioner.oci_builds import Reported, build_exists, build_reference, plain_http, reported

LOG_TAIL_LINES = 20
WANTED_SECONDS = 30.0
STEPS = ("bundle", "build", "push")  # the builder pod's init containers, then its container, in order


@dataclass(frozen=True)
class BuildSettings:
    """The chart's builds.* values. An empty registry means: no builds (emulation cards cut the model themselves,
    xrt needs spec.model.artifacts.bitstreams)."""

    registry: str = ""
    insecure: bool = False
    namespace: str = "default"  # where builder Jobs run: the operator's own namespace
    builder_image: str = ""  # default: the segment image (it has the partitioner and `elasticdf`)
    xrt_image: str = ""
    xrt_command: tuple[str, ...] = ()
    node_selector: tuple[tuple[str, str], ...] = ()  # where builder Jobs run
    resources: str = "{}"  # JSON of a container's resources (requests/limits) for the build step
    license_secret: str = ""
    pull_secret: str = ""  # kubernetes.io/dockerconfigjson Secret for the registry, in the operator namespace
    docker_config: str = ""  # that Secret mounted into the operator: the credentials of its registry lookups
    timeout_seconds: int = 6 * 3600
    backoff_limit: int = 0
    recreations: int = 1  # failed Jobs of a build re-created at most this often (then: BuildFailed)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> BuildSettings:
        env = dict(os.environ if env is None else env)
        get = env.get
        return cls(registry=get("ELASTICDF_BUILD_REGISTRY", ""),
                   insecure=get("ELASTICDF_BUILD_INSECURE", "") in ("1", "true"),
                   namespace=get("POD_NAMESPACE", "default"),
                   builder_image=get("ELASTICDF_BUILD_BUILDER_IMAGE", ""),
                   xrt_image=get("ELASTICDF_BUILD_XRT_IMAGE", ""),
                   xrt_command=tuple(json.loads(get("ELASTICDF_BUILD_XRT_COMMAND") or "[]")),
                   node_selector=tuple(sorted(json.loads(get("ELASTICDF_BUILD_NODE_SELECTOR") or "{}").items())),
                   resources=get("ELASTICDF_BUILD_RESOURCES") or "{}",
                   license_secret=get("ELASTICDF_BUILD_LICENSE_SECRET", ""),
                   pull_secret=get("ELASTICDF_BUILD_PULL_SECRET", ""),
                   docker_config=get("ELASTICDF_BUILD_DOCKER_CONFIG", ""),
                   timeout_seconds=int(get("ELASTICDF_BUILD_TIMEOUT_SECONDS") or 6 * 3600),
                   backoff_limit=int(get("ELASTICDF_BUILD_BACKOFF_LIMIT") or 0),
                   recreations=int(get("ELASTICDF_BUILD_RECREATIONS") or 1))

    def artifact(self, manifest: str) -> str:
        """The URI card pods pull a build from (by manifest digest: what was verified is what runs)."""
        return build_reference(self.registry, manifest)


NO_BUILDS = BuildSettings()  # no registry: builds are not the operator's business


# ---- observing -----------------------------------------------------------------------------------------


def lookup_policy(policy: FetchPolicy, settings: BuildSettings) -> FetchPolicy:
    """The operator's fetch policy (CAs) for registry lookups, with builds.pullSecret's credentials when set:
    short timeouts and no retries, as they run on the reconcile path (the next reconcile asks again); plain http
    with builds.insecure."""
    credentials = Path(settings.docker_config) if settings.docker_config else policy.docker_config
    quick = replace(policy, retries=0, connect_timeout=2.0, read_timeout=3.0, docker_config=credentials)
    return plain_http(quick, settings.registry) if settings.insecure else quick


@dataclass
class BuildsSeen:
    """What the observe step saw of builds: manifest digest per build digest (None: looked up, absent; a digest
    not in the dict was not looked up), builder Jobs and their pods (projections), log tails of failed Jobs."""

    manifests: dict[str, str | None] = field(default_factory=dict)
    jobs: list[dict] = field(default_factory=list)
    pods: list[dict] = field(default_factory=list)
    logs: dict[str, str] = field(default_factory=dict)  # Job name -> its failed step's log tail
    clocks: dict[str, float] = field(default_factory=dict)  # build digest -> the clock its report states (MHz)
    resources: dict[str, dict[str, float]] = field(default_factory=dict)  # build digest -> what it reports using
    error: str | None = None  # the registry could not be asked


class BuildIndex:
    """The operator's memory of builds: a build found in the registry stays found (content-addressed, never
    rebuilt), a failed Job's log tail is read once. Absent builds are asked again on every observe."""

    def __init__(self, lookup=build_exists, report_of=reported):
        self.lookup, self.report_of = lookup, report_of
        self.found: dict[str, str] = {}
        self.reports: dict[str, Reported] = {}  # a found build's report, read once from its manifest
        self.logs: dict[str, str] = {}
        # digests a decision asked about (Decision.lookups) -> until when every observe asks the registry (any
        # resource's observe may run first, and absent builds are not remembered)
        self.wanted: dict[str, float] = {}
        self.lock = threading.Lock()

    def want(self, digests: set[str]) -> None:
        until = time.monotonic() + WANTED_SECONDS
        with self.lock:
            self.wanted.update(dict.fromkeys(digests, until))

    def observe(self, kube, settings: BuildSettings, digests: set[str], policy: FetchPolicy) -> BuildsSeen:
        """Jobs first, then the registry: a Job seen Succeeded has pushed before the lookup below."""
        if not settings.registry:
            return BuildsSeen()
        jobs = [project_job(j) for j in kube.build_jobs(settings.namespace)]
        pods = [project_build_pod(p) for p in kube.build_pods(settings.namespace)]
        seen = BuildsSeen(jobs=jobs, pods=pods)
        with self.lock:
            seen.manifests.update(self.found)
            now = time.monotonic()
            self.wanted = {d: until for d, until in self.wanted.items() if until > now}
            digests = digests | set(self.wanted)
        quick = lookup_policy(policy, settings)
        for digest in sorted(digests - set(seen.manifests)):
            try:
                seen.manifests[digest] = self.lookup(settings.registry, digest, quick)
            except ModelError as err:
                seen.error = f"registry {settings.registry} did not answer: {err}"
                break
        with self.lock:
            self.found.update({d: m for d, m in seen.manifests.items() if m})
        reports = self._reports(settings, {d: m for d, m in seen.manifests.items() if m and d in digests}, quick)
        seen.clocks = {d: r.clock_mhz for d, r in reports.items() if r.clock_mhz is not None}
        seen.resources = {d: r.resources for d, r in reports.items() if r.resources}
        seen.logs = self._failed_logs(kube, settings.namespace, jobs, pods)
        return seen

    def _reports(self, settings: BuildSettings, found: dict[str, str], quick: FetchPolicy) -> dict[str, Reported]:
        """The reports of the found builds asked about (a manifest unreadable now is read next time)."""
        for digest in sorted(set(found) - set(self.reports)):
            try:
                report = self.report_of(settings.artifact(found[digest]), digest, quick)
            except ModelError:
                continue
            with self.lock:
                self.reports[digest] = report
        with self.lock:
            return {d: self.reports[d] for d in found if d in self.reports}

    def _failed_logs(self, kube, namespace: str, jobs: list[dict], pods: list[dict]) -> dict[str, str]:
        for job in jobs:
            name = job["metadata"]["name"]
            if job_outcome(job) != "Failed" or name in self.logs:
                continue
            pod, step, how = failed_step(name, pods)
            text = kube.pod_log_tail(namespace, pod, step, LOG_TAIL_LINES).strip() if pod else ""
            with self.lock:
                self.logs[name] = f"step {step}, {how}: {text}" if step else text
        with self.lock:
            return {j["metadata"]["name"]: self.logs[j["metadata"]["name"]] for j in jobs
                    if j["metadata"]["name"] in self.logs}


def project_job(body: dict) -> dict:
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    return {"metadata": {k: meta.get(k) for k in ("name", "namespace", "uid", "labels", "annotations")},
            "status": {"active": status.get("active") or 0, "succeeded": status.get("succeeded") or 0,
                       "failed": status.get("failed") or 0, "startTime": status.get("startTime"),
                       "completionTime": status.get("completionTime"),
                       "conditions": [{k: c.get(k) for k in ("type", "status", "reason", "message")}
                                      for c in status.get("conditions") or []]}}


def _states(statuses: list[dict] | None) -> list[dict]:
    out = []
    for s in statuses or []:
        state = s.get("state") or {}
        term = state.get("terminated")
        out.append({"name": s.get("name"), "running": "running" in state,
                    "exitCode": term.get("exitCode") if term else None, "reason": (term or {}).get("reason"),
                    "message": (term or {}).get("message")})
    return out


def project_build_pod(body: dict) -> dict:
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    return {"metadata": {"name": meta.get("name"), "labels": dict(meta.get("labels") or {}),
                         "creationTimestamp": meta.get("creationTimestamp")},
            "status": {"phase": status.get("phase"), "steps": _states(status.get("initContainerStatuses"))
                       + _states(status.get("containerStatuses"))}}


# ---- reading (pure) ------------------------------------------------------------------------------------


def job_outcome(job: dict) -> str | None:
    """"Succeeded" or "Failed" (incl. the deadline: batch/v1 marks it Failed, reason DeadlineExceeded), else None."""
    for c in job["status"]["conditions"]:
        if c["type"] in ("Complete", "SuccessCriteriaMet") and c["status"] == "True":
            return "Succeeded"
        if c["type"] == "Failed" and c["status"] == "True":
            return "Failed"
    return None


def _job_pods(job_name: str, pods: list[dict]) -> list[dict]:
    return sorted((p for p in pods if p["metadata"]["labels"].get("job-name") == job_name),
                  key=lambda p: p["metadata"].get("creationTimestamp") or "")


def failed_step(job_name: str, pods: list[dict]) -> tuple[str | None, str | None, str]:
    """(pod, step, how it ended) of the latest pod of a failed Job: the step that exited non-zero, else the one
    running when the Job was stopped (deadline). "How" is the container runtime's word (e.g. StartError: the
    image has no such command), for a step that wrote no log."""
    mine = _job_pods(job_name, pods)
    if not mine:
        return None, None, ""
    pod = mine[-1]
    steps = pod["status"]["steps"]
    bad = next((s for s in steps if s["exitCode"] not in (None, 0)), None)
    step = bad or next((s for s in steps if s["running"] or s["exitCode"] is None), None)
    if step is None:
        return pod["metadata"]["name"], None, ""
    how = ": ".join(x for x in (step.get("reason"), step.get("message")) if x)
    if step["exitCode"] not in (None, 0):
        how = f"exit code {step['exitCode']}" + (f" ({how})" if how else "")
    return pod["metadata"]["name"], step["name"], how


def current_step(job_name: str, pods: list[dict]) -> str | None:
    """The step the latest pod of a running Job is in: the first of bundle, build, push not yet done; None
    before its first step started (e.g. the pod waits for a node)."""
    mine = _job_pods(job_name, pods)
    steps = mine[-1]["status"]["steps"] if mine else []
    if not any(s["running"] or s["exitCode"] is not None for s in steps):
        return None
    done = {s["name"] for s in steps if s["exitCode"] == 0}
    return next((s for s in STEPS if s not in done), None)


@dataclass(frozen=True)
class BuildState:
    """A build as the operator sees it: phase Pending | Building | Ready | Failed."""

    phase: str
    manifest: str | None = None
    progress: str | None = None  # bundle | build | push while Building
    attempts: int = 0  # Jobs made so far
    job: str | None = None  # the latest Job
    started: str | None = None  # the latest Job's startTime
    message: str = ""
    retry: bool = False  # the latest Job failed and another attempt is allowed


def jobs_of(digest: str, jobs: list[dict]) -> list[dict]:
    tag = build_tag(digest)
    mine = [j for j in jobs if (j["metadata"].get("labels") or {}).get(LABEL_BUILD) == tag]
    return sorted(mine, key=lambda j: int((j["metadata"].get("annotations") or {}).get(ANNOTATION_BUILD_ATTEMPT, 0)))


def build_state(digest: str, seen: BuildsSeen, settings: BuildSettings) -> BuildState:
    manifest = seen.manifests.get(digest)
    jobs = jobs_of(digest, seen.jobs)
    latest = jobs[-1] if jobs else None
    name = latest["metadata"]["name"] if latest else None
    started = latest["status"]["startTime"] if latest else None
    if manifest:
        return BuildState("Ready", manifest, attempts=len(jobs), job=name, started=started)
    if latest is None:
        why = seen.error or ("looking it up in the registry" if digest not in seen.manifests
                             else "not in the registry; starting a builder Job")
        return BuildState("Pending", message=why)
    outcome = job_outcome(latest)
    if outcome is None:
        step = current_step(name, seen.pods)
        return BuildState("Building" if step else "Pending", progress=step, attempts=len(jobs), job=name,
                          started=started, message=f"Job {name}" + (f": step {step}" if step else ": starting"))
    if outcome == "Succeeded" and digest not in seen.manifests:
        return BuildState("Building", progress="push", attempts=len(jobs), job=name, started=started,
                          message=f"Job {name} succeeded; looking the build up in the registry")
    if outcome == "Succeeded":
        why = f"Job {name} succeeded but registry {settings.registry} has no tag {build_tag(digest)}"
    else:
        cond = next((c for c in latest["status"]["conditions"] if c["type"] == "Failed"), {})
        why = f"Job {name} failed ({cond.get('reason') or 'error'}: {cond.get('message') or ''})"
        tail = seen.logs.get(name)
        if tail:
            why += f"; log tail: {tail}"
    retry = len(jobs) <= settings.recreations
    return BuildState("Pending" if retry else "Failed", attempts=len(jobs), job=name, started=started,
                      message=why, retry=retry)


def age_seconds(started: str | None, now: dt.datetime) -> int | None:
    if not started:
        return None
    return max(0, int((now - dt.datetime.fromisoformat(started.replace("Z", "+00:00"))).total_seconds()))
