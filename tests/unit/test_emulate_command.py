"""`elasticdf emulate`: real segment and gateway processes on loopback, answers equal to the unsplit model."""

from __future__ import annotations

from pathlib import Path

from elasticdf_partitioner.cli import main

ROOT = Path(__file__).resolve().parents[2]
CLUSTERS = ROOT / "examples" / "clusters"


def emulate(capsys, *argv: str) -> tuple[int, str]:
    code = main(["emulate", *argv])
    return code, capsys.readouterr().out


def test_cnv_instances_answer_like_the_unsplit_model(capsys):
    code, out = emulate(capsys, "--model", "cnv", "--cluster", str(CLUSTERS / "1xU250.yaml"), "--frames", "6",
                        "--instances", "2")
    assert code == 0, out
    assert out.count("identical") == 2
    assert "every answer of every instance equals the unsplit model's (6 frames each)" in out


def test_resnet50_split_over_two_cards_answers_like_the_unsplit_model(capsys):
    """With 40 % of their LUTs two U280s run ResNet-50 cut between the cards inside a residual stage (several live
    tensors); one U280 holds whole instances."""
    code, out = emulate(capsys, "--model", "resnet50", "--cluster", str(CLUSTERS / "2xU280.yaml"), "--frames", "2",
                        "--instances", "1", "--limits", '{"lut": 0.4}')
    assert code == 0, out
    assert "alveo-0/0, alveo-1/0" in out and "identical" in out


def test_unknown_model_is_a_user_error(capsys):
    code = main(["emulate", "--model", "nope", "--cluster", str(CLUSTERS / "1xU250.yaml")])
    assert code == 2
    assert "unknown zoo model 'nope'" in capsys.readouterr().err


def test_brevitas_qonnx_export_plans_and_answers_like_the_unsplit_model(capsys):
    """A QONNX model (Brevitas TFC w2a2) is imported, planned (a tiny MLP: dozens of instances per card) and
    emulated."""
    model = ROOT / "tests" / "data" / "qonnx" / "tfc_w2a2.onnx"
    code, out = emulate(capsys, "--model", str(model), "--cluster", str(CLUSTERS / "2xU280.yaml"), "--frames", "4",
                        "--instances", "2")
    assert code == 0, out
    assert out.count("identical") == 2


def test_qonnx_espcn_split_over_two_cards_at_its_upsampler_answers_like_the_unsplit_model(capsys, tmp_path):
    """qonnx's ESPCN (nearest-neighbour resize) on two U50s with a LUT limit so tight that no card holds it: the
    plan cuts it between the cards right before UpsampleNearestNeighbour."""
    import qonnx

    model = Path(qonnx.__file__).parent / "data" / "onnx" / "bsd300x3-espcn" / "nn_resize" / "quant_model.onnx"
    cluster = tmp_path / "2xU50.yaml"
    cluster.write_text("nodes:\n  - {name: alveo-0, cards: [u50]}\n  - {name: alveo-1, cards: [u50]}\n")
    code, out = emulate(capsys, "--model", str(model), "--cluster", str(cluster), "--limits", '{"lut": 0.04}',
                        "--frames", "2")
    assert code == 0, out
    assert "alveo-0/0, alveo-1/0" in out and out.count("identical") == 1
