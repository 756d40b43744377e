"""The `elasticdf` CLI: cards and zoo listings, exit codes, no tracebacks for user errors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from elasticdf_partitioner.cli import COMMANDS, main


def test_commands_table():
    assert {"cards", "zoo"} <= set(COMMANDS)
    assert all(len(entry) == 2 and all(callable(f) for f in entry) for entry in COMMANDS.values())


def test_cards_lists_catalog(capsys):
    assert main(["cards"]) == 0
    out = capsys.readouterr().out
    for card in ("u200", "u250", "u280", "u55c", "u50"):
        assert card in out
    assert "1,500,000" in out  # U250 LUT total = 4 × 375,000


def test_cards_with_extra_catalog(tmp_path, capsys):
    extra = tmp_path / "extra.yaml"
    extra.write_text("cards:\n  vck5000:\n    part: xcvc1902\n    slrs: [[899840, 1799680, 1934, 463, 1968]]\n"
                     "    eth_slr: 0\n    cost_per_hour: 2.5\n")
    assert main(["cards", "--catalog", str(extra)]) == 0
    assert "vck5000" in capsys.readouterr().out


def test_zoo_prints_models_and_utilisation(capsys):
    assert main(["zoo"]) == 0
    out = capsys.readouterr().out
    assert "56,448" in out and "resnet50" in out and "mobilenetv1" in out and "cnv" in out
    assert "LUT %" in out


def test_zoo_single_model_layer_table(capsys):
    assert main(["zoo", "cnv"]) == 0
    out = capsys.readouterr().out
    assert "StreamingFCLayer_Batch_8" in out and "LabelSelect_Batch_0" in out


@pytest.mark.parametrize("argv,needle", [
    (["zoo", "alexnet"], "unknown zoo model 'alexnet'"),
    (["cards", "--catalog", "/nonexistent/cards.yaml"], "file not found"),
])
def test_user_errors_exit_2_without_traceback(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_malformed_catalog_yaml(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("cards: [unclosed\n")
    assert main(["cards", "--catalog", str(bad)]) == 2
    assert "malformed YAML" in capsys.readouterr().err


def test_entry_point_subprocess():
    result = subprocess.run([sys.executable, "-m", "elasticdf_partitioner.cli", "zoo", "nosuchmodel"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "unknown zoo model" in result.stderr and "Traceback" not in result.stderr


def test_plan_of_a_zoo_model_imports_neither_onnx_nor_cp_sat(tmp_path):
    """`plan` of a zoo model on two cards reads no model file (onnx, the fetcher) and needs no CP-SAT (clusters of
    3+ cards, which loads pandas), so a CLI run does not pay for importing them; nor for other commands' modules."""
    cluster = Path(__file__).parents[2] / "examples" / "clusters" / "2xU280.yaml"
    heavy = ("onnx", "ortools.sat.python.cp_model", "pandas", "urllib3", "elasticdf_partitioner.emulate_command",
             "elasticdf_partitioner.build_command")
    code = ("import sys; from elasticdf_partitioner.cli import main; "
            f"assert main(['plan', '--model', 'cnv', '--cluster', {str(cluster)!r}]) == 0; "
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "ELASTICDF_PLAN_CACHE": str(tmp_path)},
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
