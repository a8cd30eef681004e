"""MIT's person detector (``mcunet-person-det``, the MCUNet demo model) on the emulated Cortex-M7
(QEMU mps2-an500): memory plan, Flash and instructions per inference, one JSON line.

    .venv/bin/python benchmarks/person_det_deploy.py [--resolution 128x160] [--work build/bench_person_det_deploy]

The network is the preset at its published input (128x160, H x W) with random weights and
randomised BatchNorm (minmax PTQ on random images): memory, Flash and instruction counts depend on
the shapes, not on the weight values. Figures:

* ``peak_sram_per_layer`` and the planner's best patch schedule over grids 2..8 and every split
  (``best_patch``: lowest peak; ``best_patch_10pct``: lowest peak within +10% MACs), from
  :func:`tinydet.schedule.search_plans` (the neck in stage 2, taps alive until the neck reads them);
* per mode on QEMU (patch = ``best_patch``, layer = per layer): ``flash_bytes`` (the linked ELF: the
  int8 weights, the tables and the runtime), ``sram_arena_bytes`` (== the planned peak, checked on
  the ELF), ``instructions_per_inference`` (-icount shift=0; ``instructions_neck_weightless``: the
  upsample / max pool / add steps among them), ``outputs_bit_exact_vs_reference``;
* ``published``: what MIT publishes for the demo model (shared/reference/published_models.md;
  mit-han-lab/mcunet README "Detection Model", mit-han-lab/tinyengine assets): input, MACs and
  parameters. Neither README lists SRAM, Flash or latency for it (their measured tables cover
  the ImageNet / VWW classifiers only), so there is no peer figure for those.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
PUBLISHED = {"input_hw": [128, 160], "macs": 18.3e6, "params": 0.16e6,
             "source": "mit-han-lab/tinyengine @ 47bb283 assets/detection.tflite (mcunet zoo net_id person-det)"}
NECK_KINDS = ("upsample", "maxpool", "add", "concat")
ANCHORS = [[[10, 13], [16, 30], [33, 23]], [[30, 61], [62, 45], [59, 119]], [[116, 90], [156, 198], [373, 326]]]


def person_det(resolution: str):
    """(model, graph) of the preset at ``resolution`` with random weights and randomised BN."""
    import torch

    from test_export_utils import random_network  # the tests' random network (randomised BN)
    from tinydet.arch import HeadSpec, get_spec, lower

    torch.set_num_threads(1)
    spec = get_spec("mcunet-person-det")
    head = HeadSpec(num_classes=1, num_anchors=3)  # the spec's head layout sets the person-det head form
    return random_network(spec, head, seed=0), lower(spec, resolution, head=head)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolution", default="128x160", help="H x W (default: the published 128x160)")
    p.add_argument("--work", default=str(REPO / "build" / "bench_person_det_deploy"))
    args = p.parse_args()
    from tinydet.deploy import deploy
    from tinydet.export.folder import export_network
    from tinydet.pipeline.quantize import quantize_export
    from tinydet.quant.calibrate import calibrate
    from tinydet.schedule import search_plans

    t0 = time.time()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model, graph = person_det(args.resolution)
    h, w = graph.resolution
    best, _ = search_plans(graph)
    best10, _ = search_plans(graph, max_overhead=0.10)
    params = sum(int(t.numel()) for t in model.parameters())  # PyTorch's count: BN's scale and shift included
    result = {"benchmark": "person_det_deploy", "target": "qemu-mps2-an500", "arch": graph.arch, "input_hw": [h, w],
              "weights": "random (randomised BN), minmax PTQ on random images", "macs": graph.macs,
              "weight_count": sum(op.weight_count for op in graph.ops), "params": params,
              "neck_weightless_ops": sum(op.kind in NECK_KINDS for op in graph.ops),
              "peak_sram_per_layer": best.peak_sram_per_layer, "published": PUBLISHED}
    for key, plan in (("best_patch", best), ("best_patch_10pct", best10)):
        result[key] = {"grid": list(plan.grid), "split": plan.split, "peak_sram": plan.peak,
                       "mac_overhead": round(plan.mac_overhead, 4)}
    det = {"num_classes": 1, "class_names": ["person"], "anchors": ANCHORS, "strides": [8, 16, 32],
           "conf_thresh": 0.05, "nms_iou": 0.6, "max_det": 50}
    out = work / "export"
    export_network(model, graph, out, best.split, best.grid, detector=det, check_images=1)
    rng = np.random.default_rng(1)
    images = [rng.random((1, 3, h, w), dtype=np.float32) for _ in range(4)]
    quantize_export(out, calibrate(str(out / "full.onnx"), images, "minmax"),
                    {"kind": "ptq", "method": "minmax", "images": 4, "note": "benchmark, random"})
    for mode in ("patch", "layer"):
        r = deploy(out, "qemu-mps2-an500", work / mode, mode=mode, run=True, validate=True, images=images[0],
                   timeout_s=580, conf=0.05)
        result[mode] = {k: r[k] for k in ("flash_bytes", "weights_bytes", "sram_arena_bytes", "planned_peak_bytes",
                                          "scratch_bytes", "instructions_per_inference", "instructions_per_mac",
                                          "macs_per_inference", "outputs_bit_exact_vs_reference")}
        # the neck's weightless ops (upsample, max pool, add): their share of the instructions
        result[mode]["instructions_neck_weightless"] = sum(
            int(layer["instructions"]) for layer in r["per_layer"] if layer["kind"] in NECK_KINDS)
    result["patch_instruction_overhead"] = round(
        result["patch"]["instructions_per_inference"] / result["layer"]["instructions_per_inference"] - 1, 4)
    result["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
