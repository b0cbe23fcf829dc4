"""Compares weights (training snapshots, other runs) on validation images only (never the test ids), through the
inference pipeline a user runs: the evaluation workflow with the inference defaults on a datalist's validation list.

    python scripts/compare_weights.py --datalist runs/isic_ph2_ft/datalist.json \
        --weights runs/isic_ph2/models/model.pt runs/isic_ph2_ft/models/snapshots/*.pt \
        --out runs/isic_ph2_ft/validation

Prints, per weights file, pooled and mean Dice, the mean Dice of each data source of the datalist (ISIC's 201 and
PH2's 11 validation photos), and the mean over sources; writes ``OUT/summary.json``. It reports, it does not choose:
each training stage's rule, fixed in its script before any of its figures, says which of its models is the candidate
and what it must beat (``scripts/finetune_isic_ph2.sh``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _validation import evaluate_validation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datalist", type=Path, required=True, help="a datalist whose 'validation' list is scored")
    parser.add_argument("--weights", type=Path, nargs="+", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    for c in args.weights:
        if not c.is_file():
            raise SystemExit(f"no weights at {c}")

    rows = {}
    for i, ckpt in enumerate(args.weights):
        s = evaluate_validation(args.datalist, ckpt, args.out / f"{i:02d}_{ckpt.stem}")
        by = s["mean_dice_by_source"]
        rows[str(ckpt)] = {"by_source": by, "mean_over_sources": sum(v[0] for v in by.values()) / len(by),
                           "pooled_dice": s["metrics"]["test_pooled_dice"], "mean_dice": s["metrics"]["test_mean_dice"]}
    (args.out / "summary.json").write_text(json.dumps(rows, indent=2))
    sources = sorted(next(iter(rows.values()))["by_source"])
    print("| weights (validation images, inference defaults) | Dice pooled | Dice mean | "
          + " | ".join(f"Dice mean, {n} ({next(iter(rows.values()))['by_source'][n][1]})" for n in sources)
          + " | mean over sources |")
    print("|---" * (4 + len(sources)) + "|")
    for k, r in rows.items():
        print(f"| `{k}` | {r['pooled_dice']:.4f} | {r['mean_dice']:.4f} | "
              + " | ".join(f"{r['by_source'][n][0]:.4f}" for n in sources) + f" | {r['mean_over_sources']:.4f} |")


if __name__ == "__main__":
    main()
