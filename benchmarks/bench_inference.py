"""Per-image time of the bundle's inference workflow (``run inference``, configs/inference.json) against a plain
loop that does what the original EGE-UNet release does at test time, with this project's network, on the same
photos (default: the 60 PH2 test photos), measured side by side in one process.

    python benchmarks/bench_inference.py [--images DIR] [--count 60] [--rounds 5] [--ckpt bundle/models/model.pt]
                                         [--no_options] [--stages]

The plain loop, per photo: PIL load, min-max to [0, 1], bilinear resize of the whole photo to 256x256, one forward
of ``EGEUNet`` (eval mode, no grad), sigmoid, bilinear resize back to the photo's size, threshold 0.5, PNG save. The
workflow rows run ``ConfigWorkflow(configs/inference.json)`` as ``python -m monai.bundle run`` does, with its
defaults (on a CPU: no loader worker, whose process would take cores from the network's threads) unless the row names options: reading and checking every input once, the
shorter side to 256, the whole photo (padded to a multiple of 32) in one window, inversion to the photo's size, PNG
save; masks only, as the loop (``--measure_lesions false``), the lesion measurements' cost in a row of its own. Per-image time excludes
startup in every row: it is the time from the first photo's mask to the last one's, divided by the photos in
between (config parsing, weights loading, the network's inference form, worker start and the first photo are
startup). Rows are measured in turn, ``--rounds`` times; the table gives each row's median and best round (the
best is the one least disturbed by other work on a shared machine), the ratios of both to the plain loop with
``EGEUNet``, and the median of the per-round ratios (each round's time over the loop's in the same round, measured
within seconds of each other: the statistic least moved by a load that changes from round to round). Threads: PyTorch's
default (``OMP_NUM_THREADS`` or the machine's cores), the same for every row; ONNX Runtime gets as many.

``--stages`` adds a table of where the defaults' time goes, from one more run of the default row: each transform of
the pre- and postprocessing (MONAI's ``Compose`` steps), the inferer (the network inside it), and the rest (the
engine, its handlers, batching).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
#: what the original's loop delivers: masks (the lesion measurements are an option row of their own)
MASKS_ONLY = {"measure_lesions": False}


def plain_loop(network: torch.nn.Module, images: list[Path], out: Path) -> list[float]:
    """The original release's test-time steps for each photo; returns the time at which each mask was saved."""
    out.mkdir(parents=True, exist_ok=True)
    network.eval()
    done = []
    with torch.no_grad():
        for path in images:
            img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
            img = (img - img.min()) / max(float(img.max() - img.min()), 1e-8)
            x = torch.from_numpy(img).permute(2, 0, 1)[None]
            h, w = x.shape[2:]
            x = F.interpolate(x, (256, 256), mode="bilinear", align_corners=False)
            prob = torch.sigmoid(network(x))
            prob = F.interpolate(prob, (h, w), mode="bilinear", align_corners=False)
            mask = (prob[0, 0] > 0.5).numpy().astype(np.uint8) * 255
            Image.fromarray(mask).save(out / f"{path.stem}_seg.png")
            done.append(time.perf_counter())
    return done


def _initialized(images_dir: Path, out: Path, ckpt: Path | None, config_files: list[str], **options):
    """``run inference``'s workflow, as ``python -m monai.bundle run`` builds it, initialised (masks only unless
    ``options`` say otherwise)."""
    from monai.bundle import ConfigWorkflow

    options = {**MASKS_ONLY, **options}
    wf = ConfigWorkflow(config_file=config_files, meta_file=str(REPO_ROOT / "configs" / "metadata.json"),
                        logging_file=False, workflow_type="infer", dataset_dir=str(images_dir), output_dir=str(out),
                        fail_on_error=True, **({} if ckpt is None else {"ckpt_path": str(ckpt)}), **options)
    wf.initialize()
    return wf


def workflow(images_dir: Path, out: Path, ckpt: Path | None, config_files: list[str], **options) -> list[float]:
    """``run inference`` in this process; returns the time at which each photo's iteration (mask saved) ended."""
    from ignite.engine import Events

    wf = _initialized(images_dir, out, ckpt, config_files, **options)
    done: list[float] = []
    evaluator = wf.parser.get_parsed_content("evaluator")
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda _: done.append(time.perf_counter()))
    wf.run()
    wf.finalize()
    return done


def stage_times(images_dir: Path, out: Path, ckpt: Path | None, config_files: list[str]) -> dict[str, float]:
    """One run of the default row with each stage timed; returns milliseconds per image by stage (all photos)."""
    from ignite.engine import Events
    from monai.transforms import Compose, Transform
    from monai.transforms import compose as compose_module

    totals: dict[str, float] = {}
    apply_transform = compose_module.apply_transform

    def timed(transform, data, *args, **kwargs):  # what Compose calls for each of its transforms
        if isinstance(transform, Compose) or not isinstance(transform, Transform):
            return apply_transform(transform, data, *args, **kwargs)
        start = time.perf_counter()
        result = apply_transform(transform, data, *args, **kwargs)
        name = type(transform).__name__
        totals[name] = totals.get(name, 0.0) + time.perf_counter() - start
        return result

    wf = _initialized(images_dir, out, ckpt, config_files)
    evaluator = wf.parser.get_parsed_content("evaluator")
    inferer = evaluator.inferer

    def timed_inferer(inputs, network, *args, **kwargs):
        start = time.perf_counter()
        result = inferer(inputs, network, *args, **kwargs)
        name = "inferer (the network inside it)"
        totals[name] = totals.get(name, 0.0) + time.perf_counter() - start
        return result

    bounds: list[float] = []
    evaluator.inferer = timed_inferer
    evaluator.add_event_handler(Events.EPOCH_STARTED, lambda _: bounds.append(time.perf_counter()))
    evaluator.add_event_handler(Events.EPOCH_COMPLETED, lambda _: bounds.append(time.perf_counter()))
    compose_module.apply_transform = timed
    try:
        wf.run()
    finally:
        compose_module.apply_transform = apply_transform
    wf.finalize()
    count = len(wf.parser.get_parsed_content("datalist"))
    ms = {name: 1000 * t / count for name, t in totals.items()}
    ms["the rest (engine, handlers, batching)"] = 1000 * (bounds[-1] - bounds[0]) / count - sum(ms.values())
    return ms


def per_image_ms(done: list[float]) -> float:
    return 1000 * (done[-1] - done[0]) / (len(done) - 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=SHARED / "data" / "ph2" / "images")
    parser.add_argument("--split", type=Path, default=SHARED / "data" / "ph2_split.json",
                        help="take the 'test' ids of this split from --images (when it exists)")
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ckpt", type=Path, default=REPO_ROOT / "bundle" / "models" / "model.pt")
    parser.add_argument("--no_options", action="store_true", help="only the defaults, not each option's cost")
    parser.add_argument("--stages", action="store_true", help="also where the defaults' time goes, stage by stage")
    args = parser.parse_args()

    sources = sorted(p for p in args.images.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))
    if args.split.is_file():
        test_ids = set(json.loads(args.split.read_text())["test"])
        sources = [p for p in sources if p.stem in test_ids] or sources
    sources = sources[: args.count]
    if len(sources) < 3:
        print(f"skipped: fewer than 3 images in {args.images} (the PH2 photos come with the project's ../shared "
              f"folder; pass --images FOLDER)")
        return 0

    from monai_egeunet import EGEUNet
    from monai_egeunet.networks import fuse_for_inference, load_weights

    net = load_weights(EGEUNet().eval(), args.ckpt)
    fused = fuse_for_inference(net)
    inference = [str(REPO_ROOT / "configs" / "inference.json")]
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        images = tmp / "images"
        images.mkdir()
        for p in sources:
            (images / p.name).symlink_to(p.resolve())
        photos = sorted(images.iterdir())
        rows: dict[str, Callable[[Path], list[float]]] = {
            "plain loop, the original's steps (EGEUNet)": lambda o: plain_loop(net, photos, o),
            "plain loop, the original's steps (inference form)": lambda o: plain_loop(fused, photos, o),
            "run inference, defaults": lambda o: workflow(images, o, args.ckpt, inference),
            "run inference, --fuse_network false": lambda o: workflow(images, o, args.ckpt, inference,
                                                                      fuse_network=False),
            "run inference, --num_workers 1 (a loader worker)": lambda o: workflow(images, o, args.ckpt, inference,
                                                                               num_workers=1),
        }
        onnx_path = tmp / "model.onnx"
        note = _export_onnx(net, onnx_path)
        if note is None:
            onnx = [*inference, str(REPO_ROOT / "configs" / "inference_onnx.json")]
            rows["run inference, ONNX Runtime (configs/inference_onnx.json)"] = lambda o: workflow(
                images, o, None, onnx, onnx_path=str(onnx_path))
        if not args.no_options:
            for name, options in {
                "--flip_tta true": {"flip_tta": True},
                "--keep_largest_component true --fill_holes true": {"keep_largest_component": True,
                                                                   "fill_holes": True},
                "--overlap 0.5": {"overlap": 0.5},
                "--roi_size [256,256] --pad_to_multiple_of 1 (sliding windows)": {"roi_size": [256, 256],
                                                                                 "pad_to_multiple_of": 1},
                "--original_preprocessing true": {"original_preprocessing": True},
                "--measure_lesions true (measurements.csv)": {"measure_lesions": True},
            }.items():
                rows[f"run inference, {name}"] = lambda o, opts=options: workflow(images, o, args.ckpt, inference,
                                                                                  **opts)
        results: dict[str, list[float]] = {name: [] for name in rows}
        for name, run in rows.items():  # warm-up: imports, first-call allocations
            run(tmp / "warmup")
        for r in range(args.rounds):
            for i, (name, run) in enumerate(rows.items()):
                results[name].append(per_image_ms(run(tmp / f"out_{r}_{i}")))
        stages = stage_times(images, tmp / "stages", args.ckpt, inference) if args.stages else None

    base = results["plain loop, the original's steps (EGEUNet)"]
    print(f"per-image time, {len(sources)} photos from {args.images} (startup excluded), median of {args.rounds} "
          f"interleaved rounds; CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
          f"thread(s), torch {torch.__version__}; weights {args.ckpt}\n")
    print("| pipeline | ms / image, median (best) | images/s, median | vs the original's loop, median (best) "
          "| vs the loop in the same round, median |")
    print("|---|---|---|---|---|")
    for name, values in results.items():
        ms, best = statistics.median(values), min(values)
        paired = statistics.median(v / b for v, b in zip(values, base))
        print(f"| {name} | {ms:.1f} ({best:.1f}) | {1000 / ms:.1f} | {ms / statistics.median(base):.2f}x "
              f"({best / min(base):.2f}x) | {paired:.2f}x |")
    if stages is not None:
        print("\nwhere the defaults' time goes (one more run, all photos; a stage's time includes its MONAI "
              "bookkeeping)\n")
        print("| stage | ms / image |")
        print("|---|---|")
        for name, ms in sorted(stages.items(), key=lambda kv: -kv[1]):
            print(f"| {name} | {ms:.2f} |")
    if note is not None:
        print(f"\nno ONNX Runtime row: {note}")
    return 0


def _export_onnx(net: torch.nn.Module, path: Path) -> str | None:
    """Exports ``net`` with dynamic batch, height and width (the TorchScript-based exporter: seconds); returns why
    not, or None."""
    try:
        import onnxruntime  # noqa: F401
        from monai.networks.utils import convert_to_onnx

        axes = {0: "batch", 2: "height", 3: "width"}
        convert_to_onnx(net, [torch.rand(1, 3, 256, 256)], filename=str(path), use_trace=True, dynamo=False,
                        input_names=["image"], output_names=["pred"], dynamic_axes={"image": axes, "pred": axes})
    except Exception as e:  # onnxruntime missing, or an exporter error
        return f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    return None


if __name__ == "__main__":
    sys.exit(main())
