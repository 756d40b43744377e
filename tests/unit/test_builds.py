"""Card builds: records and digests (shared with the operator), build bundles in FINN's formats, the emulation
builder (bit-exact against the unsplit model) and build reports feeding the plan."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from elasticdf_contract.builds import RECORD_ENV, BuildRecord, BuildReport, build_tag, segment_file
from elasticdf_operator.groups import card_builds, plan_groups
from elasticdf_partitioner import bundle
from elasticdf_partitioner.builds import (
    card_records,
    identity_reference,
    lowest_clocks,
    plan_builds,
    read_reports,
    reference_identity,
    resource_scales,
)
from elasticdf_partitioner.catalog import load_catalog
from elasticdf_partitioner.cli import main, usable_capacity
from elasticdf_partitioner.cluster import load_cluster
from elasticdf_partitioner.emulation_build import run_emulation_build
from elasticdf_partitioner.errors import InputError
from elasticdf_partitioner.finn_io import export_finn
from elasticdf_partitioner.modelio import runnable_model
from elasticdf_partitioner.segment_cut import PACKED_INPUT
from elasticdf_partitioner.solver import solve
from elasticdf_partitioner.zoo import load_model

CLUSTERS = Path(__file__).resolve().parents[2] / "examples" / "clusters"

# DataflowBuildConfig fields of FINN v0.10.1 (src/finn/builder/build_dataflow_config.py, in file order)
FINN_FIELDS = [
    "output_dir", "synth_clk_period_ns", "generate_outputs", "specialize_layers_config_file", "folding_config_file",
    "target_fps", "folding_two_pass_relaxation", "verify_steps", "verify_input_npy", "verify_expected_output_npy",
    "verify_save_full_context", "verify_save_rtlsim_waveforms", "stitched_ip_gen_dcp", "signature",
    "mvau_wwidth_max", "standalone_thresholds", "minimize_bit_width", "board", "shell_flow_type", "fpga_part",
    "auto_fifo_depths", "split_large_fifos", "auto_fifo_strategy", "force_python_rtlsim", "large_fifo_mem_style",
    "hls_clk_period_ns", "default_swg_exception", "vitis_platform", "vitis_floorplan_file", "vitis_opt_strategy",
    "save_intermediate_models", "enable_hw_debug", "enable_build_pdb_debug", "verbose", "steps", "start_step",
    "stop_step", "max_multithreshold_bit_width", "rtlsim_batch_size", "rtlsim_use_vivado_comps"]
FINN_REQUIRED = {"output_dir", "synth_clk_period_ns", "generate_outputs"}
FINN_OUTPUTS = {"stitched_ip", "estimate_reports", "out_of_context_synth", "rtlsim_performance", "bitfile",
                "pynq_driver", "deployment_package"}  # DataflowOutputType values
FINN_SHELL_FLOWS = {"vivado_zynq", "vitis_alveo"}  # ShellFlowType values
FINN_STEPS = [  # default_build_dataflow_steps
    "step_qonnx_to_finn", "step_tidy_up", "step_streamline", "step_convert_to_hw", "step_create_dataflow_partition",
    "step_specialize_layers", "step_target_fps_parallelization", "step_apply_folding_config",
    "step_minimize_bit_width", "step_generate_estimate_reports", "step_hw_codegen", "step_hw_ipgen",
    "step_set_fifo_depths", "step_create_stitched_ip", "step_measure_rtlsim_performance",
    "step_out_of_context_synthesis", "step_synthesize_bitfile", "step_make_pynq_driver", "step_deployment_package"]
FINN_BOARDS = {"U50", "U200", "U250", "U280", "U55C"}  # finn.util.basic.alveo_part_map keys


def plan_of(model: str, cluster: str, **kwargs):
    from elasticdf_partitioner.solver.pack import PackSettings

    graph = load_model(model)
    return solve(graph, load_cluster(CLUSTERS / cluster, load_catalog()), "throughput", None,
                 settings=PackSettings(**kwargs))


def documented_digest(record: dict, model: str) -> str:
    """The digest as docs/builds.md states it: sha256 over the sorted-key JSON of the record without digest."""
    body = {"model": model, **{k: record[k] for k in ("cardType", "fclkMhz", "segments", "folding")}}
    return "sha256:" + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]


def test_records_are_the_operators_and_follow_the_documented_digest():
    plan = plan_of("mobilenetv1", "2xU280.yaml")
    model = reference_identity("mobilenetv1")
    assert model == "zoo:mobilenetv1"
    records = card_records(model, plan.instances)
    assert {(s.node, s.card) for i in plan.instances for s in i.segments} == set(records)
    for group in plan_groups(plan):
        for card, build in card_builds(model, group).items():
            assert build == records[card].model_dump(by_alias=True)
            assert build["digest"] == documented_digest(build, model)


@pytest.mark.parametrize("reference,identity", [
    ("resnet50", "zoo:resnet50"), ("zoo://resnet50", "zoo:resnet50"), ("m/cnv.onnx", "onnx:m/cnv.onnx"),
    ("oci://reg:5000/models/cnv@sha256:" + "a" * 64, "onnx:oci://reg:5000/models/cnv@sha256:" + "a" * 64),
    ("https://example.org/cnv", "onnx:https://example.org/cnv")])
def test_model_identities_round_trip_to_the_reference_a_builder_fetches(reference, identity):
    assert reference_identity(reference) == identity
    assert reference_identity(identity_reference(identity)) == identity


def test_cards_doing_the_same_work_share_one_build():
    plan = plan_of("cnv", "2xU280.yaml", exclusive_cards=True)
    records = card_records("zoo:cnv", plan.instances)
    distinct = plan_builds("zoo:cnv", plan)
    assert len(records) == 2 and len(distinct) == 1  # two identical cards, one bitstream
    assert card_records("zoo:other", plan.instances)[("alveo-0", 0)].digest != distinct[0].digest


def test_bundle_holds_finn_files_for_every_hosted_segment(tmp_path):
    plan = plan_of("mobilenetv1", "2xU280.yaml")
    record = plan_builds("zoo:mobilenetv1", plan)[0]
    bundle.write_bundle(record, "mobilenetv1", tmp_path)
    names = [layer.name for layer in load_model("mobilenetv1").layers]
    assert BuildRecord.model_validate_json((tmp_path / "build.json").read_text()) == record
    folding = json.loads((tmp_path / "folding_config.json").read_text())
    assert folding == {"Defaults": {}, **record.folding}
    for first, last in bundle.layer_ranges(record):
        graph = onnx.load(str(tmp_path / bundle.dataflow_file(first, last)))
        assert [n.name for n in graph.graph.node] == names[first:last + 1]
        for node in graph.graph.node:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            for attr, value in record.folding.get(node.name, {}).items():
                assert attrs[attr] == (value.encode() if isinstance(value, str) else value), (node.name, attr)
    vnx = json.loads((tmp_path / "vnx.json").read_text())
    assert [s["layers"] for s in vnx["sockets"]] == [s.layers for s in record.segments]
    for entry in vnx["sockets"]:  # a socket toward each neighbour on another card; the host end takes none
        assert (entry["txSocket"] is None, entry["rxSocket"] is None) == (entry["layers"][1] == len(names) - 1,
                                                                          entry["layers"][0] == 0)
    used = [s[key] for s in vnx["sockets"] for key in ("txSocket", "rxSocket") if s[key] is not None]
    assert len(used) == len(set(used)) and all(0 <= u < vnx["maxSockets"] for u in used)
    for k, seg in enumerate(record.segments):
        directory = tmp_path / f"segment-{k}"
        assert (directory / "model.onnx").resolve() == (tmp_path / bundle.dataflow_file(*seg.layers)).resolve()
        floorplan = json.loads((directory / "floorplan.json").read_text())
        assert floorplan["Defaults"] == {"slr": [-1, ["all"]]}
        placed = {name: entry["slr"] for name, entry in floorplan.items() if name != "Defaults"}
        assert list(placed) == names[seg.layers[0]:seg.layers[1] + 1]
        for slr, (first, last) in seg.floorplan.items():
            assert {placed[n] for n in names[first:last + 1]} == {int(slr)}
        config = json.loads((directory / "dataflow_build_config.json").read_text())
        assert_finn_build_config(config, directory)
        assert config["board"] == "U280" and config["vitis_platform"] == "xilinx_u280_gen3x16_xdma_1_202211_1"
        assert config["synth_clk_period_ns"] == pytest.approx(1000 / record.fclk_mhz)


def test_whole_pipelines_on_one_card_take_no_network_socket(tmp_path):
    """cnv is small: many whole instances share one card, streaming to and from the host, not over VNx."""
    layers = len(load_model("cnv").layers)
    record = hand_record("zoo:cnv", "u250", [(0, layers - 1)] * 20 + [(0, 5), (6, layers - 1)])
    bundle.write_bundle(record, "cnv", tmp_path)
    sockets = json.loads((tmp_path / "vnx.json").read_text())["sockets"]
    assert sum(s["txSocket"] is None and s["rxSocket"] is None for s in sockets) == 20
    assert {(s["txSocket"], s["rxSocket"]) for s in sockets if s["layers"] != [0, layers - 1]} == \
        {(0, None), (None, 3)}
    assert len(list(tmp_path.glob("dataflow-*.onnx"))) == 3  # one graph per distinct range


def assert_finn_build_config(config: dict, directory: Path) -> None:
    """Field names, enum values and referenced files as FINN v0.10.1's DataflowBuildConfig reads them."""
    assert set(config) <= set(FINN_FIELDS), set(config) - set(FINN_FIELDS)
    assert FINN_REQUIRED <= set(config)
    assert set(config["generate_outputs"]) <= FINN_OUTPUTS
    assert config["shell_flow_type"] in FINN_SHELL_FLOWS
    assert config["board"] in FINN_BOARDS
    assert [s for s in FINN_STEPS if s in config["steps"]] == config["steps"]  # known steps, FINN's order
    for key in ("folding_config_file", "vitis_floorplan_file"):
        assert (directory / config[key]).is_file(), key


def test_bundle_refuses_a_record_of_another_model(tmp_path):
    record = plan_builds("zoo:mobilenetv1", plan_of("mobilenetv1", "2xU280.yaml"))[0]
    with pytest.raises(InputError, match="is zoo:cnv, the record is a build of zoo:mobilenetv1"):
        bundle.write_bundle(record, "cnv", tmp_path)
    with pytest.raises(InputError, match="outside the model's"):
        bundle.write_bundle(record.model_copy(update={"model": "zoo:cnv", "folding": {}}), "cnv", tmp_path)
    with pytest.raises(InputError, match="unknown card type"):
        bundle.write_bundle(record.model_copy(update={"card_type": "k80"}), "mobilenetv1", tmp_path)


def chained(paths: list[Path], frames: np.ndarray) -> np.ndarray:
    value = frames
    for path in paths:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (value,) = session.run(None, {session.get_inputs()[0].name: value})
    return value


def hand_record(model: str, card_type: str, ranges: list[tuple[int, int]]) -> BuildRecord:
    segments = [{"layers": [a, b], "slrs": [0], "floorplan": {"0": [a, b]}} for a, b in ranges]
    return BuildRecord(digest=BuildRecord.content_digest(model, card_type, 200.0, segments, {}), model=model,
                       card_type=card_type, fclk_mhz=200.0, segments=segments)


@pytest.mark.parametrize("name,ranges", [("cnv", [(0, 4), (5, 9), (10, 999)]),
                                         ("resnet50", [(0, 20), (21, 60), (61, 999)])])
def test_emulation_build_segments_chain_to_the_unsplit_model_bit_exactly(tmp_path, name, ranges):
    """Every hosted range of one card build (here one card hosting a whole pipeline in pieces: the cuts of
    resnet50 fall inside residual blocks, so the segments pass packed tensors)."""
    layers = len(load_model(name).layers)
    ranges = [(a, min(b, layers - 1)) for a, b in ranges]
    record = hand_record(f"zoo:{name}", "u250", ranges)
    bundle.write_bundle(record, name, tmp_path / "bundle")
    report = run_emulation_build(tmp_path / "bundle", tmp_path / "out")
    assert report.files == [segment_file(a, b) for a, b in ranges]
    assert BuildReport.model_validate_json((tmp_path / "out" / "report.json").read_text()) == report
    assert (report.mode, report.clock_mhz, report.clock_source) == ("emulation", 200.0, "modelled")
    whole_graph = load_model(name)
    assert report.resources["LUT"] == pytest.approx(whole_graph.total_resources().lut, abs=1)  # all layers hosted
    whole = runnable_model(name)
    onnx.save(whole, str(tmp_path / "whole.onnx"))
    shape = [d.dim_value for d in whole.graph.input[0].type.tensor_type.shape.dim][1:]
    frames = np.random.default_rng(1).integers(0, 256, (2, *shape)).astype(np.float32)
    expected = np.concatenate([chained([tmp_path / "whole.onnx"], frame[None]) for frame in frames])  # batch 1
    got = chained([tmp_path / "out" / f for f in report.files], frames)
    np.testing.assert_array_equal(got, expected)
    inputs = [onnx.load(str(tmp_path / "out" / f)).graph.input[0].name for f in report.files]
    assert (PACKED_INPUT in inputs) == (name == "resnet50")  # cuts inside residual blocks carry packed tensors


def test_emulation_build_refuses_another_model_than_the_bundled_one(tmp_path):
    layers = len(load_model("cnv").layers)
    bundle.write_bundle(hand_record("zoo:cnv", "u250", [(0, layers - 1)]), "cnv", tmp_path / "bundle")
    other = tmp_path / "other.onnx"
    onnx.save(export_finn(load_model("mobilenetv1")), str(other))
    with pytest.raises(InputError, match="not the bundled model"):
        run_emulation_build(tmp_path / "bundle", tmp_path / "out", str(other))


def test_cli_plan_build_out_then_build_run_then_plan_from_reports(tmp_path, capsys, monkeypatch):
    cluster = str(CLUSTERS / "2xU280.yaml")
    assert main(["plan", "--model", "cnv", "--cluster", cluster, "--exclusive-cards",
                 "--build-out", str(tmp_path / "bundles")]) == 0
    (tag,) = [p.name for p in (tmp_path / "bundles").iterdir()]
    record = BuildRecord.model_validate_json((tmp_path / "bundles" / tag / "build.json").read_text())
    assert build_tag(record.digest) == tag and record.model == "zoo:cnv"
    # the same bundle again from the record alone, given as a builder Job gets it (in the environment)
    monkeypatch.setenv(RECORD_ENV, (tmp_path / "bundles" / tag / "build.json").read_text())
    assert main(["build", "bundle", "-o", str(tmp_path / "again")]) == 0
    source = tmp_path / "bundles" / tag
    for path in source.rglob("*.json"):
        first = json.loads(path.read_text())
        again = json.loads((tmp_path / "again" / path.relative_to(source)).read_text())
        if path.name == "bundle.json":  # the model as given: "cnv" on the command line, zoo://cnv from the record
            assert (first.pop("model"), again.pop("model")) == ("cnv", "zoo://cnv")
        assert first == again
    assert main(["build", "run", str(tmp_path / "again"), "-o", str(tmp_path / "artifacts" / tag)]) == 0
    assert "segment-0-" in capsys.readouterr().out
    # a measured clock (what an xrt builder reports) lowers the next plan's clock and says where it came from
    report_path = tmp_path / "artifacts" / tag / "report.json"
    report = BuildReport.model_validate_json(report_path.read_text())
    estimate = BuildRecord.model_validate_json((tmp_path / "artifacts" / tag / "build.json").read_text()).resources
    assert report.resources == pytest.approx(estimate, abs=0.2), "emulation reports what the cost model estimates"
    built = BuildRecord.model_validate_json((tmp_path / "artifacts" / tag / "build.json").read_text())
    assert resource_scales([(built, report.resources)]) == {}, "rounding differences scale nothing"
    used = {**report.resources, "LUT": round(estimate["LUT"] * 1.25, 1)}  # Vivado placed 25 % more LUTs
    report_path.write_text(report.model_copy(update={"mode": "xrt", "clock_mhz": 161.5, "clock_source": "measured",
                                                     "resources": used}).model_dump_json(by_alias=True))
    assert lowest_clocks(read_reports(tmp_path / "artifacts"))["u280"][0] == 161.5
    plan_json = tmp_path / "plan.json"
    assert main(["plan", "--model", "cnv", "--cluster", cluster, "--build-reports", str(tmp_path / "artifacts"),
                 "--json", str(plan_json)]) == 0
    plan = json.loads(plan_json.read_text())
    assert plan["fclk_mhz"] == 161.5
    assert plan["clocks"]["u280"]["source"].startswith("measured (build report xrt")
    assert plan["clocks"]["u280"]["build_mhz"] == 200.0, "its builds still target the clock the report was made for"
    assert plan["resource_scale"] == {"u280": {"lut": pytest.approx(1.25, abs=1e-3)}}
    usable = usable_capacity(load_catalog().card("u280"), load_catalog()).as_dict()["lut"]
    per_card: dict[tuple, float] = {}
    for instance in plan["instances"]:
        for seg in instance["segments"]:
            per_card[(seg["node"], seg["card"])] = per_card.get((seg["node"], seg["card"]), 0) + seg["resources"]["lut"]
    assert max(per_card.values()) * 1.25 <= usable, "every card fits at the LUT count the build reported"


@pytest.mark.parametrize("argv,needle", [
    (["build", "run", "/nonexistent/bundle", "-o", "/tmp/x"], "not a build bundle"),
    (["build", "bundle", "--record", "/nonexistent/build.json", "-o", "/tmp/x"], "file not found"),
    (["build", "bundle", "-o", "/tmp/x"], "give the build record file, or its JSON in $ELASTICDF_BUILD_RECORD"),
    (["plan", "--model", "cnv", "--cluster", str(CLUSTERS / "2xU280.yaml"), "--build-reports", "/nonexistent"],
     "no report.json"),
])
def test_build_user_errors_exit_2(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_user_model_by_uri_is_fetched_and_checked_as_a_builder_job_does(tmp_path, monkeypatch, capsys):
    """A record of an ONNX artifact (identity onnx:URI): bundle and build fetch the model with the card pods'
    fetch policy (here file:// below the configured root) and refuse a wrong digest."""
    models = tmp_path / "models"
    models.mkdir()
    onnx.save(export_finn(load_model("cnv"), seed=3), str(models / "cnv.onnx"))
    monkeypatch.setenv("ELASTICDF_MODEL_FILE_ROOT", str(models))
    monkeypatch.setenv("ELASTICDF_MODEL_CACHE", str(tmp_path / "cache"))
    uri = f"file://{models}/cnv.onnx"
    assert main(["plan", "--model", uri, "--cluster", str(CLUSTERS / "1xU250.yaml"),
                 "--build-out", str(tmp_path / "bundles")]) == 0
    (record_path,) = (tmp_path / "bundles").glob("*/build.json")
    assert BuildRecord.model_validate_json(record_path.read_text()).model == f"onnx:{uri}"
    digest = "sha256:" + hashlib.sha256((models / "cnv.onnx").read_bytes()).hexdigest()
    capsys.readouterr()
    assert main(["build", "bundle", "--record", str(record_path), "--sha256", "sha256:" + "0" * 64,
                 "-o", str(tmp_path / "bad")]) == 2
    assert "digest mismatch" in capsys.readouterr().err
    assert main(["build", "bundle", "--record", str(record_path), "--sha256", digest,
                 "-o", str(tmp_path / "bundle")]) == 0
    index = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert (index["model"], index["sha256"]) == (uri, digest)
    assert main(["build", "run", str(tmp_path / "bundle"), "-o", str(tmp_path / "out")]) == 0
    (segment,) = (tmp_path / "out").glob("segment-*.onnx")
    whole, runnable = tmp_path / "whole.onnx", runnable_model(str(models / "cnv.onnx"))
    onnx.save(runnable, str(whole))
    shape = [d.dim_value for d in runnable.graph.input[0].type.tensor_type.shape.dim]
    frames = np.random.default_rng(0).integers(0, 256, shape).astype(np.float32)
    np.testing.assert_array_equal(chained([segment], frames), chained([whole], frames))


def test_a_card_pods_wiring_lists_its_segments_in_the_builds_order():
    """Kernel chain k of a card's bitstream (build record order, with its VNx socket pair) is the k-th hosted
    segment of the card pod's wiring, whatever order the plan listed the instances in."""
    from elasticdf_operator import builders
    from elasticdf_operator.api import ElasticInferenceSpec

    plan = plan_of("mobilenetv1", "2xU280.yaml")
    spec = ElasticInferenceSpec.model_validate({"model": {"name": "mobilenetv1"}})
    owner = builders.Owner("r", "ns", "uid-1")
    mixed = 0
    for group in plan_groups(plan):
        records = card_records("zoo:mobilenetv1", group.instances)
        mixed += sum(len({(tuple(s.layers), tuple(s.slrs)) for s in r.segments}) > 1 for r in records.values())
        places = [builders.CardPlace(n, c, t, 0, records[(n, c)].digest) for n, c, t in group.cards]
        position = {(n, c): p for p, (n, c, _) in enumerate(group.cards)}
        for instances in (group.instances, group.instances[::-1]):
            cards = builders.group_wiring(owner, spec, 0, "emulation", places, list(enumerate(instances)), position)
            for card in cards:
                assert [(w.layer_range, w.slrs) for w in card.segments] == \
                    [(s.layers, s.slrs) for s in records[(card.node, card.card)].segments]
    assert mixed, "the case needs a card hosting different segments"
