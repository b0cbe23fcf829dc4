"""Chooses how the inference workflow sees an image, on validation images only (never the test ids).

Each option set is a handful of overrides of the inference ids shared by ``configs/inference.json`` and
``configs/evaluate.json`` (scale, aspect ratio kept or whole image resized as in training, one window or sliding windows, overlap, flip TTA, largest component, hole filling). Each is run
through the evaluation workflow (the same pipeline inference runs, plus labels and metrics) on the validation list
of a training datalist, and the table gives Dice / IoU (also per ``source`` of the datalist: ISIC's square photos,
PH2's oblong ones) and the workflow's images/s, including its startup.

    python scripts/select_inference_options.py --datalist runs/isic_ph2/datalist.json \
        --ckpt_path runs/isic_ph2/models/model.pt --out results/isic_ph2/inference_options

Writes ``OUT/<option>/metrics.json`` per option set and ``OUT/summary.json``; prints a markdown table. Option sets
already evaluated (their ``metrics.json`` exists) are not run again.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _validation import evaluate_validation

#: the two ways of seeing a photo at the network's scale (shorter side to ``scale``): the whole photo in one window
#: (padded to a multiple of 32), or 256x256 sliding windows
WHOLE = {"roi_size": "[-1,-1]", "pad_to_multiple_of": 32}
WINDOWS = {"roi_size": "[256,256]", "pad_to_multiple_of": 1}
#: the postprocessing and test-time options tried on top of each
EXTRA: dict[str, dict[str, object]] = {
    "flip_tta": {"flip_tta": True},
    "largest_component": {"keep_largest_component": True},
    "fill_holes": {"fill_holes": True},
    "largest_component+fill_holes": {"keep_largest_component": True, "fill_holes": True},
    "flip_tta+largest_component+fill_holes": {"flip_tta": True, "keep_largest_component": True, "fill_holes": True},
}
#: name -> overrides of the inference/evaluation config ids, each set complete in what it compares
OPTION_SETS: dict[str, dict[str, object]] = {
    "whole_image": WHOLE,
    **{f"whole_image+{k}": {**WHOLE, **v} for k, v in EXTRA.items()},
    "whole_image_resized_256x256": {**WHOLE, "keep_aspect_ratio": False},
    "sliding_windows_256": WINDOWS,
    **{f"sliding_windows_256+{k}": {**WINDOWS, **v} for k, v in EXTRA.items()},
    "sliding_windows_256+overlap_0.5": {**WINDOWS, "overlap": 0.5},
    "sliding_windows_256+scale_224": {**WINDOWS, "scale": 224},
    "sliding_windows_256+scale_288": {**WINDOWS, "scale": 288},
}
#: what the table's changes are measured from
BASELINE = "sliding_windows_256"


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
        s = evaluate_validation(args.datalist, args.ckpt_path, args.out / name, overrides)
        rows[name] = {"overrides": overrides, "num_images": s.get("num_images"), "wall_s": s.get("wall_s"),
                      **{k.removeprefix("test_"): v for k, v in s["metrics"].items()},
                      "mean_dice_by_source": s["mean_dice_by_source"]}
    (args.out / "summary.json").write_text(json.dumps(rows, indent=2))
    base = rows.get(BASELINE)
    names = sorted({k for r in rows.values() for k in r["mean_dice_by_source"]})
    print("| option set (validation images) | Dice pooled | Dice mean | "
          + " | ".join(f"Dice mean, {n} ({next(iter(rows.values()))['mean_dice_by_source'][n][1]})" for n in names)
          + f" | IoU mean | HD95 px | mean Dice vs {BASELINE} | images/s (whole workflow) |")
    print("|---" * (7 + len(names)) + "|")
    for name, r in rows.items():
        delta = "" if base is None else f"{r['mean_dice'] - base['mean_dice']:+.4f}"
        speed = "-" if not r.get("wall_s") else f"{r['num_images'] / r['wall_s']:.1f}"
        by = " | ".join(f"{r['mean_dice_by_source'][n][0]:.4f}" for n in names)
        print(f"| {name} | {r['pooled_dice']:.4f} | {r['mean_dice']:.4f} | {by} | {r['mean_iou']:.4f} | "
              f"{r.get('hd95', float('nan')):.1f} | {delta} | {speed} |")


if __name__ == "__main__":
    main()
