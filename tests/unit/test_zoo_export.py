"""Zoo models as FINN dataflow ONNX: export -> import round trips, the lowered models run in onnxruntime and
equal the numpy reference (finn_reference.py) bit for bit, with activations that actually vary."""

from __future__ import annotations

import dataclasses

import finn_reference
import numpy as np
import onnxruntime as ort
import pytest
from elasticdf_partitioner.cli import main
from elasticdf_partitioner.emulation import lower_model
from elasticdf_partitioner.finn_io import export_finn, import_onnx
from elasticdf_partitioner.ops.base import SETTINGS_ATTRS
from elasticdf_partitioner.zoo import load_model, zoo_names


def layer_fields(layer) -> dict:
    fields = {f.name: getattr(layer, f.name) for f in dataclasses.fields(layer) if f.name != "settings"}
    settings = {k: v for k, v in layer.settings.items() if k in SETTINGS_ATTRS}
    return {"class": type(layer).__name__, **fields, "settings": settings}


@pytest.mark.parametrize("name", zoo_names())
def test_export_import_round_trip(name):
    graph = load_model(name)
    back = import_onnx(export_finn(graph, seed=1))
    assert [layer_fields(a) for a in graph.layers] == [layer_fields(b) for b in back.layers]
    assert sorted(graph.edges) == back.edges
    assert graph.ties == back.ties
    assert [a.current() for a in graph.layers] == [b.current() for b in back.layers]
    assert back.input_bits_per_frame == graph.input_bits_per_frame
    assert back.max_cycles() == graph.max_cycles() and back.total_resources() == graph.total_resources()


def test_export_is_deterministic_per_seed():
    graph = load_model("cnv")
    first, again, other = (export_finn(graph, seed=s).SerializeToString() for s in (0, 0, 1))
    assert first == again and first != other


def session(model):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def frames(model, count, seed=0):
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    return np.random.default_rng(seed).integers(0, 256, (count, *shape)).astype(np.float32)


def test_cnv_lowered_equals_reference_and_activations_vary():
    finn = export_finn(load_model("cnv"), seed=0)
    lowered = lower_model(finn)
    layers = list(dict.fromkeys(n.name.split("/", 1)[0] for n in lowered.graph.node))
    assert layers == [layer.name for layer in import_onnx(finn).layers]
    run = session(lowered)
    seen: dict[str, set] = {}
    for x in frames(finn, 3):
        reference = finn_reference.run(finn, x)
        (got,) = run.run(None, {"global_in": x})
        np.testing.assert_array_equal(got, reference["global_out"])
        for node in finn.graph.node:
            seen.setdefault(node.name, set()).update(np.unique(reference[node.output[0]]).tolist())
    thresholded = [n.name for n in finn.graph.node if n.op_type in ("MVAU_hls", "Thresholding_hls")]
    assert all(len(seen[name]) >= 2 for name in thresholded), {n: seen[n] for n in thresholded}


@pytest.mark.parametrize("name", ["mobilenetv1", "resnet50"])
def test_large_zoo_model_runs_one_frame_bit_exactly(name):
    finn = export_finn(load_model(name), seed=0)
    (x,) = frames(finn, 1)
    (got,) = session(lower_model(finn)).run(None, {"global_in": x})
    assert got.shape == (1, 5)
    np.testing.assert_array_equal(got, finn_reference.run(finn, x)["global_out"])


def test_cli_zoo_export_writes_an_importable_model(tmp_path, capsys):
    out = tmp_path / "cnv.onnx"
    assert main(["zoo", "export", "cnv", "-o", str(out), "--seed", "5"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert len(import_onnx(out).layers) == len(load_model("cnv").layers)
    assert main(["zoo", "export", "cnv"]) == 2
    assert "usage: elasticdf zoo export" in capsys.readouterr().err


def test_export_of_a_table_driven_model_names_its_layers():
    from elasticdf_partitioner.errors import InputError
    from elasticdf_partitioner.models.synthetic import chain
    from elasticdf_partitioner.resources import Resources

    with pytest.raises(InputError, match=r"toy: layers \['L0', 'L1'\].*not FINN dataflow layers"):
        export_finn(chain("toy", [[(10, Resources(lut=1), 8)]] * 2))
