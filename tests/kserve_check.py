"""The KServe Python client against a gateway, checked: runs kserve_client.py in its own process (kserve and
tritonclient cannot share one protobuf descriptor pool) and asserts every call answered the expected output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

KSERVE_CLIENT = Path(__file__).parent / "kserve_client.py"


def check_kserve_client(rest_base: str, grpc_target: str, model: str, frames: np.ndarray, want: np.ndarray) -> dict:
    """REST (JSON, binary) and gRPC (FP32, UINT8) inference answer `want` with their request ids echoed, both
    servers ready, an unknown model NOT_FOUND over gRPC. Returns what the client printed."""
    run = subprocess.run([sys.executable, str(KSERVE_CLIENT), rest_base, grpc_target, model,
                          json.dumps(frames.tolist())], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    reply = json.loads(run.stdout.splitlines()[-1])
    assert reply["rest"]["ready"] and reply["grpc"]["ready"] and reply["grpc"]["model_ready"]
    for side, calls in (("rest", ("json", "binary")), ("grpc", ("FP32", "UINT8"))):
        for call in calls:
            assert reply[side][call]["id"] == f"{side}-{call}"
            assert np.array_equal(np.asarray(reply[side][call]["output"], np.float32), want), (side, call)
    assert reply["grpc"]["unknown_model"]["code"] == "NOT_FOUND"
    return reply
