"""Overlays of test predictions for the model card: the worst images by Dice and a few typical ones, segmented by the
inference workflow (``run inference``, the pipeline a user runs) and drawn beside the expert mask.

    python scripts/card_overlays.py runs/isic2018_test --ckpt_path bundle/models/model.pt \
        --out bundle/docs/images --prefix isic2018 [--worst 3] [--typical 2] [--width 900]

``EVAL_DIR`` is an evaluation workflow's output folder (``run evaluating``): its ``test_mean_dice_raw.csv`` ranks
the images and its ``datalist.json`` pairs each with its expert mask. The chosen images are segmented again by the
inference workflow with its defaults (options from ``--override KEY=VALUE``); the picture's caption gives the Dice
of the mask inference wrote, which must agree with the evaluation's. Writes ``OUT/PREFIX_worst1_<id>.png`` ...,
``OUT/PREFIX_typical1_<id>.png`` ..., and prints a markdown list of them.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from pathlib import Path

import numpy as np
from monai.bundle import ConfigWorkflow
from PIL import Image, ImageDraw

from monai_egeunet.visualize import overlay_panels

ROOT = Path(__file__).resolve().parents[1]


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(2 * (pred & truth).sum() / max(int(pred.sum() + truth.sum()), 1))


def choose(eval_dir: Path, worst: int, typical: int) -> list[tuple[str, str, float]]:
    """``(kind, image path, evaluation Dice)`` of the ``worst`` lowest-Dice images and ``typical`` images around the
    median, from the evaluation's per-image CSV."""
    with open(eval_dir / "test_mean_dice_raw.csv") as f:
        rows = sorted(((float(r["mean"]), r["filename"]) for r in csv.DictReader(f)), key=lambda r: r[0])
    if len(rows) < worst + typical:
        raise ValueError(f"{eval_dir / 'test_mean_dice_raw.csv'} has {len(rows)} images, fewer than {worst + typical}")
    mid = len(rows) // 2 - typical // 2
    picked = [(f"worst{i + 1}", *rows[i][::-1]) for i in range(worst)]
    picked += [(f"typical{i + 1}", *rows[mid + i][::-1]) for i in range(typical)]
    return picked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("eval_dir", type=Path)
    parser.add_argument("--ckpt_path", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--worst", type=int, default=3)
    parser.add_argument("--typical", type=int, default=2)
    parser.add_argument("--width", type=int, default=900, help="width of each saved picture (three panels)")
    parser.add_argument("--override", nargs="*", default=[], help="inference config overrides, KEY=VALUE (JSON)")
    args = parser.parse_args()

    picked = choose(args.eval_dir, args.worst, args.typical)
    datalist = json.loads((args.eval_dir / "datalist.json").read_text())
    labels = {item["image"]: item["label"] for item in datalist["test"] or datalist["validation"]}
    overrides = {k: json.loads(v) for k, v in (o.split("=", 1) for o in args.override)}
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        (tmp / "in").mkdir()
        for _, image, _ in picked:
            (tmp / "in" / Path(image).name).symlink_to(Path(image).resolve())
        wf = ConfigWorkflow(config_file=str(ROOT / "configs" / "inference.json"),
                            meta_file=str(ROOT / "configs" / "metadata.json"), logging_file=False,
                            workflow_type="infer", bundle_root=str(ROOT), dataset_dir=str(tmp / "in"),
                            output_dir=str(tmp / "out"), ckpt_path=str(args.ckpt_path), num_workers=0, **overrides)
        wf.initialize()
        wf.run()
        wf.finalize()
        for kind, image, eval_dice in picked:
            stem = Path(image).stem
            photo = np.asarray(Image.open(image).convert("RGB"))
            pred = np.asarray(Image.open(tmp / "out" / f"{stem}_seg.png")) > 0
            truth = np.asarray(Image.open(labels[image]).convert("L")) > 127
            dice = _dice(pred, truth)
            if abs(dice - eval_dice) > 0.005:
                raise RuntimeError(f"{stem}: inference's mask has Dice {dice:.4f}, the evaluation {eval_dice:.4f}")
            picture = overlay_panels(photo, truth, pred)
            picture = picture.resize((args.width, round(picture.height * args.width / picture.width)),
                                     Image.Resampling.LANCZOS)
            ImageDraw.Draw(picture).text((8, picture.height - 18), f"{stem}  Dice {dice:.3f}", fill=(255, 255, 0))
            name = f"{args.prefix}_{kind}_{stem}.png"
            picture.save(args.out / name)
            print(f"- {kind}: {stem}, Dice {dice:.3f}: `{name}`")


if __name__ == "__main__":
    main()
