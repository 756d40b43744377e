"""The whole model a segment runs and where it comes from; the cut itself is the partitioner's
(elasticdf_partitioner.segment_cut, shared with the emulation builder), re-exported here for the runtime."""

from __future__ import annotations

import onnx
from elasticdf_partitioner.artifacts import ModelError
from elasticdf_partitioner.modelio import fetched_reference, runnable_model
from elasticdf_partitioner.segment_cut import PACKED_INPUT, PACKED_OUTPUT, cut, layer_names, layer_of, split

__all__ = ["PACKED_INPUT", "PACKED_OUTPUT", "cut", "layer_names", "layer_of", "load", "local_path", "runnable",
           "split"]


def local_path(uri: str, sha256: str | None = None) -> str:
    """A plain path or zoo reference as it is (mounted or baked into the image); a URI fetched with the
    operator's policy (modelio.fetched_reference: the ELASTICDF_MODEL_* variables the operator sets)."""
    try:
        return fetched_reference(uri, sha256)
    except ModelError as err:
        raise ValueError(str(err)) from None


def load(uri: str, sha256: str | None = None) -> onnx.ModelProto:
    return onnx.load(local_path(uri, sha256))


def runnable(reference: str, sha256: str | None = None) -> onnx.ModelProto:
    """The whole model a pipeline runs: a zoo model built from its seed, or the fetched file made runnable
    (a FINN dataflow or QONNX model lowered to standard ops, a standard ONNX model as it is)."""
    return runnable_model(local_path(reference, sha256))
