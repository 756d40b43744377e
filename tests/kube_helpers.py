"""Helpers shared by the tiers that talk to a real API server (tests/e2e, tests/real)."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator

import pytest


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.2):
    """Poll until predicate() is truthy and return its value; fail the test with `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def fresh_namespace(core_v1, prefix: str) -> Iterator[str]:
    """A new namespace, once pods can be created in it; deleted afterwards (without waiting)."""
    from kubernetes import client

    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    core_v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    # the controller manager creates the namespace's default ServiceAccount; pods need it
    wait_until(lambda: _has_default_sa(core_v1, name), 30, f"default ServiceAccount in {name}")
    yield name
    core_v1.delete_namespace(name)


def _has_default_sa(core_v1, ns: str) -> bool:
    from kubernetes.client.rest import ApiException

    try:
        core_v1.read_namespaced_service_account("default", ns)
    except ApiException as err:
        if err.status == 404:
            return False
        raise
    return True


@contextlib.contextmanager
def uncaptured(config: pytest.Config) -> Iterator[None]:
    """Let install and build progress reach the terminal (a cold build takes minutes)."""
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is None:
        yield
        return
    with capman.global_and_fixture_disabled():
        yield
