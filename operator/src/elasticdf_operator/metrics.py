"""Prometheus metrics of the operator (DESIGN §5.6)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

LABELS = ("namespace", "name")
INSTANCES = Gauge("elasticdf_instances", "Placed instances (replicas) of an ElasticInference", LABELS)
READY = Gauge("elasticdf_ready_instances", "Instances whose segment pods are all Ready and which the gateways serve",
              LABELS)
PREDICTED_FPS = Gauge("elasticdf_predicted_fps", "Predicted frames/s of the placed instances", LABELS)
OBSERVED_FPS = Gauge("elasticdf_observed_fps", "Observed frames/s reported by the gateway", LABELS)
COST = Gauge("elasticdf_cost_per_hour", "Card cost of the placed instances in $/h", LABELS)
FPS_PER_DOLLAR = Gauge("elasticdf_fps_per_dollar_hour", "Predicted fps per $/h", LABELS)
PLAN_SECONDS = Histogram("elasticdf_plan_seconds", "Time to solve one instance placement",
                         buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
RECONCILE_ERRORS = Counter("elasticdf_reconcile_errors_total", "Reconciles that raised", LABELS)
LEADER = Gauge("elasticdf_operator_leader", "1 while this replica holds the Lease and reconciles")
_served: set[int] = set()


def publish(namespace: str, name: str, status: dict) -> None:
    key = (namespace, name)
    INSTANCES.labels(*key).set(status.get("replicas", 0))
    READY.labels(*key).set(status.get("readyReplicas", 0))
    PREDICTED_FPS.labels(*key).set(status.get("predictedFPS", 0))
    COST.labels(*key).set(status.get("costPerHour", 0))
    FPS_PER_DOLLAR.labels(*key).set(status.get("fpsPerDollarHour", 0))
    if status.get("observedFPS") is not None:
        OBSERVED_FPS.labels(*key).set(status["observedFPS"])


def forget(namespace: str, name: str) -> None:
    for gauge in (INSTANCES, READY, PREDICTED_FPS, OBSERVED_FPS, COST, FPS_PER_DOLLAR):
        try:
            gauge.remove(namespace, name)
        except KeyError:
            pass


def serve(port: int) -> None:
    """Start the /metrics endpoint once per port (a follower serves it before it leads: probes need it)."""
    if port and port not in _served:
        start_http_server(port)
        _served.add(port)
