"""Build bundle: a card build's record and model turned into the directory a FINN + Vitis builder works from.

Files (docs/builds.md; FINN field names follow FINN v0.10.1, src/finn/builder/build_dataflow_config.py):
- `build.json`                    the BuildRecord;
- `bundle.json`                   the index: model reference, card, and per hosted segment its files;
- `dataflow-<first>-<last>.onnx`  FINN dataflow ONNX of each distinct hosted layer range, folding set as node
                                  attributes (PE, SIMD, ram_style, ...);
- `folding_config.json`           FINN folding config of all hosted layers ({"Defaults": {}, node: {attr: v}});
- `vnx.json`                      the VNx network kernel the segments link against and the socket table layout;
- `segment-<k>/` per hosted segment k, the directory FINN's `build_dataflow_directory` builds: `model.onnx`
  (a relative symlink to its range's dataflow ONNX), `dataflow_build_config.json` (a DataflowBuildConfig: board,
  Vitis platform, clock, folding and floorplan files) and `floorplan.json` (node -> {slr, partition_id}).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from elasticdf_contract.builds import RECORD_FILE, BuildRecord

from .builds import ZOO_IDENTITY, read_document, reference_identity
from .catalog import CardType, Catalog, load_catalog
from .errors import InputError
from .export import floorplan_nodes

if TYPE_CHECKING:
    import onnx

BUNDLE_FILE = "bundle.json"
FOLDING_FILE = "folding_config.json"
FLOORPLAN_FILE = "floorplan.json"
FINN_CONFIG_FILE, FINN_MODEL_FILE = "dataflow_build_config.json", "model.onnx"  # build_dataflow_directory's names
VNX_FILE = "vnx.json"
FINN_VERSION = "v0.10.1"
# FINN's build steps from the dataflow partition on (default_build_dataflow_steps of FINN v0.10.1 without the
# QONNX conversion, streamlining and target-fps folding: a bundle's ONNX is already a folded dataflow model).
FINN_STEPS = ["step_create_dataflow_partition", "step_specialize_layers", "step_apply_folding_config",
              "step_minimize_bit_width", "step_generate_estimate_reports", "step_hw_codegen", "step_hw_ipgen",
              "step_set_fifo_depths", "step_create_stitched_ip", "step_synthesize_bitfile"]
VNX_SOURCE = "Xilinx/xup_vitis_network_example 0d594e6"
VNX_MAX_SOCKETS = 16  # the networklayer's default socket table (MAX_SOCKETS)
VNX_STREAM_BITS = 512  # S_AXIS_sk2nl / M_AXIS_nl2sk data width; `dest` carries the socket index


def dataflow_file(first: int, last: int) -> str:
    return f"dataflow-{first}-{last}.onnx"


def segment_dir(segment: int) -> str:
    return f"segment-{segment}"


def layer_ranges(record: BuildRecord) -> list[tuple[int, int]]:
    """The distinct layer ranges a build hosts, in record order (two replicas of one range share one graph)."""
    return list(dict.fromkeys((s.layers[0], s.layers[1]) for s in record.segments))


def floorplan(record: BuildRecord, segment: int, names: list[str]) -> dict:
    """FINN floorplan (Floorplan / ApplyConfig format) of hosted segment `segment`: each SLR part of it is a
    partition; nodes not listed (FIFOs, width converters FINN inserts) follow FINN's defaults."""
    return {"Defaults": {"slr": [-1, ["all"]]}, **floorplan_nodes(record.segments[segment].floorplan, names)}


def dataflow_build_config(record: BuildRecord, segment: int, card: CardType) -> dict:
    """A FINN DataflowBuildConfig (JSON, FINN's field names) that builds hosted segment `segment` from its
    directory (build_dataflow_directory changes into it, so paths are relative to it)."""
    if not card.board or not card.vitis_platform:
        raise InputError(f"card type {card.name}", "has no board / vitis_platform in the catalog; add them "
                         "(e.g. board: U280, vitis_platform: xilinx_u280_gen3x16_xdma_1_202211_1)")
    return {
        "output_dir": "output",
        "synth_clk_period_ns": round(1000.0 / record.fclk_mhz, 6),
        "generate_outputs": ["estimate_reports", "stitched_ip", "bitfile"],
        "folding_config_file": f"../{FOLDING_FILE}",
        "auto_fifo_depths": True,
        "board": card.board,
        "fpga_part": card.part,
        "shell_flow_type": "vitis_alveo",
        "vitis_platform": card.vitis_platform,
        "vitis_floorplan_file": FLOORPLAN_FILE,
        "save_intermediate_models": True,
        "enable_build_pdb_debug": False,
        "steps": FINN_STEPS,
    }


def vnx_layout(record: BuildRecord, card: CardType, layer_count: int) -> dict:
    """The VNx kernels the card's segments link against and the socket table. One entry per hosted segment: a
    segment with a neighbour on another card gets a socket pair, TX `dest` 2j to its downstream and 2j+1 for its
    upstream (j numbers the networked segments; j = 0 is the segment runtime's SOCKET_DOWNSTREAM/UPSTREAM, and
    the entry of a missing neighbour stays invalid); a whole pipeline on the card streams to and from the host
    and takes no socket."""
    entries, pairs = [], 0
    for k, seg in enumerate(record.segments):
        first, last = seg.layers
        entry = {"segment": k, "layers": seg.layers, "txSocket": None, "rxSocket": None}
        if first > 0 or last < layer_count - 1:
            entry.update(txSocket=2 * pairs if last < layer_count - 1 else None,
                         rxSocket=2 * pairs + 1 if first > 0 else None)
            pairs += 1
        entries.append(entry)
    if 2 * pairs > VNX_MAX_SOCKETS:
        raise InputError(f"build {record.digest}", f"{pairs} hosted segments stream to other cards and need "
                         f"{2 * pairs} VNx sockets; the networklayer has {VNX_MAX_SOCKETS}")
    return {"source": VNX_SOURCE, "kernels": {"networklayer": "networklayer_0", "cmac": "cmac_0"},
            "interface": 0, "slr": card.eth_slr, "streamWidthBits": VNX_STREAM_BITS, "maxSockets": VNX_MAX_SOCKETS,
            "sockets": entries}


def model_dataflow(model: str, sha256: str | None = None) -> onnx.ModelProto:
    """The FINN dataflow ONNX of a model reference (zoo name or URI, FINN dataflow or QONNX); URIs are fetched
    with the environment's fetch policy and checked against `sha256`."""
    from .modelio import dataflow_model, fetched_reference

    dataflow = dataflow_model(fetched_reference(model, sha256))
    if dataflow is None:
        raise InputError(model, "a standard ONNX model has no FINN dataflow layers to build; give the FINN "
                         "dataflow or QONNX model")
    return dataflow


def write_bundle(record: BuildRecord, model: str, out_dir: str | Path, sha256: str | None = None,
                 catalog: Catalog | None = None, dataflow: onnx.ModelProto | None = None) -> list[Path]:
    """Write the bundle of `record` for `model` (a reference as model_dataflow takes; `dataflow`: its FINN
    dataflow ONNX when the caller has it already) into `out_dir`; the files written."""
    from .finn_io import dataflow_ranges

    card = (catalog or load_catalog()).card(record.card_type, "build.json: cardType")
    given = reference_identity(model)
    if given.startswith(ZOO_IDENTITY) and given != record.model:
        raise InputError("model", f"{model!r} is {given}, the record is a build of {record.model}")
    dataflow = dataflow or model_dataflow(model, sha256)
    names = _layer_names(dataflow, record)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for (first, last), graph in dataflow_ranges(dataflow, layer_ranges(record), record.folding).items():
        written.append(_save_onnx(graph, out / dataflow_file(first, last)))
    files: dict[str, object] = {FOLDING_FILE: {"Defaults": {}, **record.folding},
                                VNX_FILE: vnx_layout(record, card, len(names))}
    for k, seg in enumerate(record.segments):
        (out / segment_dir(k)).mkdir(exist_ok=True)
        link = out / segment_dir(k) / FINN_MODEL_FILE
        link.unlink(missing_ok=True)
        link.symlink_to(Path("..") / dataflow_file(*seg.layers))
        files[f"{segment_dir(k)}/{FLOORPLAN_FILE}"] = floorplan(record, k, names)
        files[f"{segment_dir(k)}/{FINN_CONFIG_FILE}"] = dataflow_build_config(record, k, card)
    files[BUNDLE_FILE] = _index(record, model, sha256, card)
    files[RECORD_FILE] = record.model_dump(by_alias=True)
    for name, content in files.items():
        (out / name).write_text(json.dumps(content, indent=2) + "\n")
        written.append(out / name)
    return written


def _layer_names(dataflow: onnx.ModelProto, record: BuildRecord) -> list[str]:
    """The model's layer names; a record whose ranges or folding do not fit the model is refused."""
    from .finn_io import import_onnx

    names = [layer.name for layer in import_onnx(dataflow).layers]
    for k, seg in enumerate(record.segments):
        first, last = seg.layers
        if not 0 <= first <= last < len(names):
            raise InputError(f"build.json: segments[{k}].layers", f"[{first}, {last}] is outside the model's "
                             f"{len(names)} layers (0..{len(names) - 1}): the record is of another model")
    unknown = sorted(set(record.folding) - set(names))
    if unknown:
        raise InputError("build.json: folding", f"names layers the model does not have: {unknown[:5]}")
    return names


def _index(record: BuildRecord, model: str, sha256: str | None, card: CardType) -> dict:
    segments = [{"layers": s.layers, "onnx": dataflow_file(*s.layers), "finnDirectory": segment_dir(k)}
                for k, s in enumerate(record.segments)]
    return {"digest": record.digest, "model": model, "sha256": sha256, "cardType": card.name,
            "board": card.board, "vitisPlatform": card.vitis_platform, "finnVersion": FINN_VERSION,
            "folding": FOLDING_FILE, "vnx": VNX_FILE, "segments": segments}


def _save_onnx(model: onnx.ModelProto, path: Path) -> Path:
    import onnx

    onnx.save(model, str(path))
    return path


def read_bundle(bundle_dir: str | Path) -> tuple[BuildRecord, dict]:
    """The record and index of a bundle directory; a missing or malformed file is an InputError."""
    bundle = Path(bundle_dir)
    index_path = bundle / BUNDLE_FILE
    try:
        index = json.loads(index_path.read_text())
    except FileNotFoundError:
        raise InputError(str(index_path), "not found: not a build bundle (elasticdf build bundle)") from None
    except json.JSONDecodeError as err:
        raise InputError(str(index_path), f"malformed JSON: {err}") from None
    return read_document(BuildRecord, bundle / RECORD_FILE), index
