"""Run the operator from this machine against a cluster: install the generated CRDs and start the operator as
a local process. The quickstart, the e2e tests, the benchmarks and the metrics example all do this."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml


def install_crds(api_client, crd_dir: Path, timeout: float = 60.0) -> list[str]:
    """Create every CRD in `crd_dir` (existing ones are left as they are) and wait until each is Established."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    ext = client.ApiextensionsV1Api(api_client)
    names = []
    for path in sorted(crd_dir.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        try:
            ext.create_custom_resource_definition(doc)
        except ApiException as err:
            if err.status != 409:
                raise
        names.append(doc["metadata"]["name"])
    deadline = time.monotonic() + timeout
    for name in names:
        while not _established(ext.read_custom_resource_definition(name)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {name} not Established after {timeout:.0f} s")
            time.sleep(0.1)
    return names


def _established(crd) -> bool:
    return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])


@contextmanager
def local_operator(kubeconfig: Path, *flags: str, log: Path | None = None,
                   env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """`python -m elasticdf_operator FLAGS` with KUBECONFIG set; stopped (SIGTERM, then SIGKILL) on exit."""
    environment = {**os.environ, **(env or {}), "KUBECONFIG": str(kubeconfig)}
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 (open for the process's lifetime)
    proc = subprocess.Popen([sys.executable, "-m", "elasticdf_operator", *flags], env=environment, stdout=out,
                            stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log:
            out.close()
