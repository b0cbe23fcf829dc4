"""Writes the MONAI datalist that trains the shipped weights: the ISIC 2018 train ids plus the PH2 train ids.

    python scripts/isic_ph2_datalist.py OUT.json [--isic_dir ../shared/data/isic2018] [--ph2_dir ../shared/data/ph2]
        [--val_fraction 0.1] [--seed 0] [--ph2_repeat 1]

The fixed splits (``data/isic2018_split.json``, ``data/ph2_split.json``) decide which ids are test ids; no test id
enters the datalist. A seeded ``val_fraction`` of the pooled training ids is held out as ``validation``: it selects
the checkpoint and the inference options, so test ids never do. Paths are written relative to ``OUT.json``, as
``monai.data.load_decathlon_datalist`` reads them. ``--ph2_repeat R`` lists each PH2 training image R times (the
validation list is unchanged), so that PH2's 129 training photos weigh more against ISIC's 1,777 in an epoch; the
held-out images are the same for any R.
"""

from __future__ import annotations

import argparse
import os
import random
from pathlib import Path

from monai_egeunet.data import prepare_datalists, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--isic_dir", default=str(ROOT.parent / "shared/data/isic2018"))
    parser.add_argument("--ph2_dir", default=str(ROOT.parent / "shared/data/ph2"))
    parser.add_argument("--val_fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ph2_repeat", type=int, default=1, help="times each PH2 training image is listed")
    args = parser.parse_args()

    pool = []
    for name, folder, split in (("isic2018", args.isic_dir, "isic2018_split.json"), ("ph2", args.ph2_dir, "ph2_split.json")):
        lists = prepare_datalists(folder, None, val_fraction=0, split_file=ROOT / "data" / split, check=False)
        pool += [dict(item, source=name) for item in lists["training"]]
    pool.sort(key=lambda it: it["image"])
    random.Random(args.seed).shuffle(pool)
    n_val = round(len(pool) * args.val_fraction)
    out_dir = args.out.resolve().parent

    def rel(items: list[dict]) -> list[dict]:
        return sorted(({k: os.path.relpath(Path(v).resolve(), out_dir) if k in ("image", "label") else v
                        for k, v in it.items()} for it in items), key=lambda it: it["image"])

    if args.ph2_repeat < 1:
        raise SystemExit(f"--ph2_repeat must be >= 1, got {args.ph2_repeat}")
    training = [it for it in pool[n_val:] for _ in range(args.ph2_repeat if it["source"] == "ph2" else 1)]
    content = {
        "description": "EGE-UNet shipped weights: ISIC 2018 train ids + PH2 train ids (fixed splits in data/); "
                       f"{args.val_fraction:g} of them held out for validation (seed {args.seed})"
                       + (f"; each PH2 training image listed {args.ph2_repeat} times" if args.ph2_repeat > 1 else ""),
        "training": rel(training),
        "validation": rel(pool[:n_val]),
    }
    write_json_atomic(args.out, content)
    counts = {s: {n: sum(it["source"] == n for it in content[s]) for n in ("isic2018", "ph2")} for s in ("training", "validation")}
    print(f"wrote {args.out}: {counts}")


if __name__ == "__main__":
    main()
