"""Chooses how the inference workflow sees an image, on validation images only (never the test ids).

Each option set is a handful of overrides of the inference ids shared by ``configs/inference.json`` and
``configs/evaluate.json`` (scale, sliding-window overlap, flip TTA, largest component, hole filling). Each is run
through the evaluation workflow (the same pipeline inference runs, plus labels and metrics) on the validation list
of a training datalist, and the table gives Dice / IoU and the workflow's images/s.

    python scripts/select_inference_options.py --datalist runs/isic_ph2/datalist.json \
        --ckpt_path runs/isic_ph2/models/model.pt --out results/isic_ph2/inference_options

Writes ``OUT/<option>/metrics.json`` per option set and ``OUT/summary.json``; prints a markdown table. Option sets
already evaluated (their ``metrics.json`` exists) are not run again.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: name -> overrides of the inference/evaluation config ids; "default" is the workflow as shipped
OPTION_SETS: dict[str, dict[str, object]] = {
    "default": {},
    "flip_tta": {"flip_tta": True},
    "largest_component": {"keep_largest_component": True},
    "fill_holes": {"fill_holes": True},
    "largest_component+fill_holes": {"keep_largest_component": True, "fill_holes": True},
    "flip_tta+largest_component+fill_holes": {"flip_tta": True, "keep_largest_component": True, "fill_holes": True},
    "overlap_0.5": {"overlap": 0.5},
    "scale_224": {"scale": 224},
    "scale_288": {"scale": 288},
}


def _cli_value(v: object) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def run_option(name: str, overrides: dict, args: argparse.Namespace) -> dict:
    out = args.out / name
    metrics = out / "metrics.json"
    if not metrics.exists():
        cmd = [sys.executable, "-m", "monai.bundle", "run", "evaluating",
               "--config_file", "['configs/train.json','configs/evaluate.json']",
               "--dataset_dir", str(args.datalist), "--ckpt_path", str(args.ckpt_path),
               "--output_dir", str(out), "--num_overlays", "0"]
        for k, v in overrides.items():
            cmd += [f"--{k}", _cli_value(v)]
        start = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        summary = json.loads(metrics.read_text())
        summary["wall_s"] = time.perf_counter() - start
        metrics.write_text(json.dumps(summary, indent=2))
    return json.loads(metrics.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datalist", type=Path, required=True, help="a datalist whose 'validation' list is scored")
    parser.add_argument("--ckpt_path", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", nargs="*", help="option sets to run (default: all)")
    args = parser.parse_args()
    rows = {}
    for name, overrides in OPTION_SETS.items():
        if args.only and name not in args.only:
            continue
        s = run_option(name, overrides, args)
        m = s["metrics"]
        rows[name] = {"overrides": overrides, "num_images": s.get("num_images"), "wall_s": s.get("wall_s"),
                      **{k.removeprefix("test_"): v for k, v in m.items()}}
    (args.out / "summary.json").write_text(json.dumps(rows, indent=2))
    base = rows.get("default")
    print("| option set (validation images) | Dice pooled | Dice mean | IoU mean | HD95 px | change in mean Dice | images/s (whole workflow) |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        delta = "" if base is None else f"{r['mean_dice'] - base['mean_dice']:+.4f}"
        speed = "-" if not r.get("wall_s") else f"{r['num_images'] / r['wall_s']:.1f}"
        print(f"| {name} | {r['pooled_dice']:.4f} | {r['mean_dice']:.4f} | {r['mean_iou']:.4f} | "
              f"{r.get('hd95', float('nan')):.1f} | {delta} | {speed} |")


if __name__ == "__main__":
    main()
