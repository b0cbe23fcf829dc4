"""Throughput of the bundle's whole inference workflow (configs/inference.json: check, load, preprocess, sliding-window
inference, inversion to the input's size, saving the mask) on PH2 images, with the network run by PyTorch (eager) and
by ONNX Runtime, and where the time goes.

    OMP_NUM_THREADS=1 python benchmarks/bench_inference.py [--images ../shared/data/ph2/images] [--count 20]
                                                           [--ckpt models/model.pt]

Timing is in-process with the loader's workers off (``num_workers 0``), so every stage is on the measured thread: the
input check (every file decoded once before the run), the network (the time inside its ``forward``), and the rest
(loading, transforms, inversion, thresholding, PNG writing, engine overhead). ONNX Runtime is given the same number
of threads as PyTorch (``torch.get_num_threads()``, which follows ``OMP_NUM_THREADS``). Each runtime first runs the
workflow on two images to warm up. Without a checkpoint the network has random weights: the timing is the same.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]


class TimedNetwork(nn.Module):
    """Adds up the wall time spent in the wrapped network's ``forward``."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.seconds = 0.0
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        y = self.network(x)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return y


def _run(network: nn.Module, images: Path, out: Path) -> dict[str, float]:
    from monai.bundle import ConfigWorkflow

    timed = TimedNetwork(network)
    wf = ConfigWorkflow(
        config_file=str(REPO_ROOT / "configs" / "inference.json"),
        meta_file=str(REPO_ROOT / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type="infer",
        dataset_dir=str(images),
        output_dir=str(out),
        num_workers=0,
        network=timed,
        **{"handlers#0#_disabled_": True},  # the weights are already in the network
    )
    wf.initialize()
    t0 = time.perf_counter()
    n = len(wf.parser.get_parsed_content("datalist"))  # the input check
    t1 = time.perf_counter()
    wf.run()
    t2 = time.perf_counter()
    wf.finalize()
    return {"images": n, "check": t1 - t0, "run": t2 - t1, "network": timed.seconds, "calls": timed.calls}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "ph2" / "images")
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--ckpt", type=Path, default=None, help="default: models/model.pt, bundle/models/model.pt")
    args = parser.parse_args()

    sources = sorted(p for p in args.images.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))
    if not sources:
        print(f"skipped: no images in {args.images} (the PH2 images come with the project's ../shared folder; "
              f"pass --images FOLDER)")
        return 0

    import onnxruntime
    from monai.networks.utils import convert_to_onnx

    from monai_egeunet import EGEUNet
    from monai_egeunet.inference import OnnxRuntimeNetwork
    from monai_egeunet.networks import load_weights

    net = EGEUNet().eval()
    candidates = (REPO_ROOT / "models" / "model.pt", REPO_ROOT / "bundle" / "models" / "model.pt")
    ckpt = args.ckpt or next((p for p in candidates if p.is_file()), None)
    if ckpt is not None:
        load_weights(net, ckpt)
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        timed_in, warm_in = tmp / "images", tmp / "warmup"
        timed_in.mkdir()
        warm_in.mkdir()
        for p in sources[: args.count]:
            shutil.copy(p, timed_in / p.name)
        for p in sources[-2:]:
            shutil.copy(p, warm_in / p.name)
        onnx_path = tmp / "model.onnx"
        # the TorchScript-based exporter: seconds instead of the dynamo exporter's minutes, same graph for ORT
        convert_to_onnx(net, [torch.rand(1, 3, 256, 256)], filename=str(onnx_path), use_trace=True, dynamo=False,
                        input_names=["image"], output_names=["pred"],
                        dynamic_axes={"image": {0: "batch"}, "pred": {0: "batch"}})
        runtimes = {"PyTorch eager": net, "ONNX Runtime": OnnxRuntimeNetwork(onnx_path)}
        rows = []
        for name, network in runtimes.items():
            _run(network, warm_in, tmp / "out_warmup")
            rows.append((name, _run(network, timed_in, tmp / f"out_{len(rows)}")))

    n_threads = torch.get_num_threads()
    print(f"inference workflow (configs/inference.json, defaults: shortest side 256, 256x256 sliding windows, "
          f"sw_batch_size 4, overlap 0.25), {rows[0][1]['images']} images from {args.images}, CPU "
          f"({platform.processor() or platform.machine()}), {n_threads} thread(s), torch {torch.__version__}, "
          f"onnxruntime {onnxruntime.__version__}, weights: {ckpt or 'random'}\n")
    print("| runtime | images/s | total (s) | network (s) | input check (s) "
          "| load, transforms, inversion, saving (s) |")
    print("|---|---|---|---|---|---|")
    for name, r in rows:
        total = r["check"] + r["run"]
        rest = r["run"] - r["network"]
        print(f"| {name} | {r['images'] / total:.2f} | {total:.2f} "
              f"| {r['network']:.2f} ({100 * r['network'] / total:.0f}%) "
              f"| {r['check']:.2f} ({100 * r['check'] / total:.0f}%) | {rest:.2f} ({100 * rest / total:.0f}%) |")
    print(f"\nnetwork calls per image: {rows[0][1]['calls'] / rows[0][1]['images']:.2f} (one per batch of windows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
