"""Leader election: of several operator replicas only the holder of a coordination.k8s.io Lease runs kopf.

Why a Lease and not kopf's peering: kopf's peering pauses operators of a *lower* priority while one of a higher
priority is present; replicas of one Deployment have the same priority, so during a rolling update both would
act (kopf only logs a warning). A Lease is taken and renewed by optimistic concurrency (resourceVersion), so at
most one replica holds it; a follower takes it only when the holder has not renewed for a whole lease duration
(measured on the follower's own clock) or released it.

The election is `kubernetes.leaderelection` (the client's port of client-go's). A follower runs no handler,
watch or index at all: kopf starts only once the Lease is held. The leader gives up *before* anyone else may
take over: it stops trying to renew after `renew` + `retry` < lease seconds and then exits at once (the
container restarts as a follower), the way client-go's controllers exit on lost leadership. On SIGTERM (a
rolling update) it stops kopf, waits for an in-flight reconcile to finish its writes, and releases the Lease,
so the next replica takes over without waiting for it to expire.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from kubernetes import client
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

LOG = logging.getLogger("elasticdf.leader")
MIN_LEASE_SECONDS = 3


def identity() -> str:
    """Unique per process: the pod name (hostname in a pod) and the PID."""
    return f"{socket.gethostname()}_{os.getpid()}"


def timings(lease_seconds: int) -> tuple[float, float]:
    """(renew deadline, retry period) with renew + retry < lease: the leader stops acting before a follower
    may take over (the election library measures the deadline from the start of a renew attempt, after a
    retry-period pause)."""
    if lease_seconds < MIN_LEASE_SECONDS:
        raise ValueError(f"--lease-seconds must be at least {MIN_LEASE_SECONDS}, got {lease_seconds}")
    return lease_seconds * 0.6, max(1.0, lease_seconds * 0.15)


class ReleasableLease(LeaseLock):
    """A LeaseLock on our API client that can be released: once released it never renews again."""

    def __init__(self, api_client: client.ApiClient, name: str, namespace: str, holder: str):
        super().__init__(name, namespace, holder)
        self.api_instance = client.CoordinationV1Api(api_client)
        self._guard = threading.Lock()
        self._released = False

    def update(self, name, namespace, updated_record):
        with self._guard:
            if self._released:
                return False
            return super().update(name, namespace, updated_record)

    def release(self) -> None:
        """Clear the holder (a follower takes the Lease on its next try) if we still hold it."""
        with self._guard:
            self._released = True
            found, record = self.get(self.name, self.namespace)
            if not found or record.holder_identity != self.identity:
                return
            self.lease_reference.spec.holder_identity = None
            self.lease_reference.spec.lease_duration_seconds = 1
            self.api_instance.replace_namespaced_lease(self.name, self.namespace, self.lease_reference)
            LOG.info("released Lease %s/%s", self.namespace, self.name)


def lost_leadership() -> None:
    """Exit now: a replica that may no longer lead must not finish any write (the container restarts)."""
    LOG.error("lost the Lease: exiting so that no two replicas act")
    logging.shutdown()
    os._exit(1)


def _elect(election: leaderelection.LeaderElection) -> None:
    """The election loop; if it breaks, the process must not go on (leading or waiting) without it."""
    try:
        election.run()
    except BaseException:
        LOG.exception("leader election failed")
    lost_leadership()


def acquire(api_client: client.ApiClient, namespace: str, name: str, lease_seconds: int) -> ReleasableLease:
    """Block until this process holds the Lease; it is renewed in a background thread until release or exit."""
    renew, retry = timings(lease_seconds)
    lease = ReleasableLease(api_client, name, namespace, identity())
    leading = threading.Event()
    config = electionconfig.Config(lease, lease_duration=lease_seconds, renew_deadline=renew, retry_period=retry,
                                   onstarted_leading=leading.set, onstopped_leading=lost_leadership)
    election = leaderelection.LeaderElection(config)
    threading.Thread(target=_elect, args=(election,), name="leader-election", daemon=True).start()
    LOG.info("%s waiting for Lease %s/%s", lease.identity, namespace, name)
    leading.wait()
    LOG.info("%s leads (Lease %s/%s)", lease.identity, namespace, name)
    return lease
