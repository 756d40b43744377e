"""Export Brevitas example networks to QONNX with seeded random init (no downloads of trained weights).

Needs torch (CPU is enough) and brevitas, which the project does not depend on: run it in a throwaway venv,
  python3 -m venv /tmp/brevitas && /tmp/brevitas/bin/pip install torch brevitas onnx onnxscript
  /tmp/brevitas/bin/python tests/data/qonnx/export_brevitas.py tests/data/qonnx [NAME ...] [--all]
Only models under 1 MB are kept (weights inline), so the repository stays small. BatchNorm statistics get seeded random
values too, so thresholds are not trivial.
"""

import sys
from pathlib import Path

import onnx
import torch
from brevitas.export import export_qonnx
from brevitas_examples.bnn_pynq.models import model_with_cfg
from brevitas_examples.imagenet_classification.models import model_with_cfg as imagenet_model_with_cfg

MAX_BYTES = 1024 * 1024


def randomize_batchnorm(model: torch.nn.Module, generator: torch.Generator) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            if module.affine:
                module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.data.copy_(torch.randn(n, generator=generator) * 0.5)


def bnn_pynq(name: str) -> tuple[torch.nn.Module, tuple[int, ...]]:
    model, cfg = model_with_cfg(name, pretrained=False)
    channels = cfg.getint("MODEL", "IN_CHANNELS")
    size = 32 if cfg.get("MODEL", "ARCH") == "CNV" else 28
    return model, (1, channels, size, size)


def mobilenet_v1_4b() -> tuple[torch.nn.Module, tuple[int, ...]]:
    model, _ = imagenet_model_with_cfg("quant_mobilenet_v1_4b")
    return model, (1, 3, 224, 224)


EXPORTS = {
    "tfc_w1a1": lambda: bnn_pynq("tfc_1w1a"),
    "tfc_w2a2": lambda: bnn_pynq("tfc_2w2a"),
    "sfc_w1a2": lambda: bnn_pynq("sfc_1w2a"),
    "cnv_w1a1": lambda: bnn_pynq("cnv_1w1a"),
    "cnv_w2a2": lambda: bnn_pynq("cnv_2w2a"),
    "mobilenetv1_w4a4": mobilenet_v1_4b,
}


def main(out_dir: str, names: list[str], max_bytes: float = MAX_BYTES) -> None:
    out = Path(out_dir)
    for name in names or EXPORTS:
        torch.manual_seed(0)
        generator = torch.Generator().manual_seed(0)
        model, shape = EXPORTS[name]()
        randomize_batchnorm(model, generator)
        model.eval()
        path = out / f"{name}.onnx"
        export_qonnx(model, input_t=torch.rand(shape, generator=generator), export_path=str(path))
        external = path.with_name(path.name + ".data")  # torch's dynamo exporter writes weights beside the model
        onnx.save(onnx.load(str(path)), str(path))
        external.unlink(missing_ok=True)
        size = path.stat().st_size
        if size > max_bytes:
            path.unlink()
            print(f"{name}: {size / 1e6:.1f} MB, over {max_bytes / 1e6:.0f} MB: not kept")
        else:
            print(f"{name}: {size / 1e3:.0f} kB -> {path}")


if __name__ == "__main__":
    # --all: keep every size (for local runs into a scratch directory)
    args = [a for a in sys.argv[2:] if a != "--all"]
    main(sys.argv[1], args, float("inf") if "--all" in sys.argv else MAX_BYTES)
