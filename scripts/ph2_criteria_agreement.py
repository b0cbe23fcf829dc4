"""Checks the lesion measurements (``monai_egeunet.measurements``) against the expert dermoscopic criteria of all
200 PH2 images (``PH2_criteria.csv``), with the expert masks and with a model's masks, and writes the model card's
table and figure.

    python scripts/ph2_criteria_agreement.py --ckpt_path bundle/models/model.pt \\
        [--ph2_dir ../shared/data/ph2] [--split_file data/ph2_split.json] [--run_dir runs/ph2_measurements] \\
        [--figure bundle/docs/images/ph2_measurements.png] [--tune]

1. Segments the 200 images with the bundle's inference workflow (``python -m monai.bundle run --config_file
   configs/inference.json``, the command a user runs), which writes the masks and their ``measurements.csv`` into
   ``RUN_DIR/masks``; skipped when the masks there came from the same checkpoint file and ``inference.json``
   (``RUN_DIR/masks/checkpoint.json``; ``--resegment`` forces it).
2. Measures the expert masks as the workflows' ``LesionMeasurementsSaver`` does: ``RUN_DIR/measurements_expert.csv``
   beside the workflow's ``RUN_DIR/measurements_model.csv``.
3. Compares them with the experts: asymmetry (Spearman correlation with the 0/1/2 grade, AUC of fully asymmetric vs
   fully symmetric), colours (per-colour sensitivity and specificity, colour-count error, on the 60 test ids: the
   colour model was tuned on the 140 training ids), melanoma vs common nevus (AUC of each measurement and of a fixed
   ABCD-like score). 95% intervals: percentile bootstrap, 2,000 resamples, stratified by class. Writes
   ``RUN_DIR/report.md`` (printed) and the figure.

The 140 training ids are not held out for the segmentation (the shipped weights trained on them): their model masks
are better than a new image's would be, so results on model masks are given for the 60 test ids too.

``--tune`` re-derives the colour prototypes and thresholds and the asymmetry weighting from the 140 training ids and
their expert masks (never the test ids) and prints them as the constants of ``monai_egeunet/measurements.py``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from monai.transforms import LoadImage
from PIL import Image
from scipy.stats import mannwhitneyu, spearmanr

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from monai_egeunet.provenance import file_sha256  # noqa: E402
from monai_egeunet.handlers.lesion_measurements import LesionMeasurementsSaver, write_measurements_csv  # noqa: E402
from monai_egeunet.measurements import DERMOSCOPIC_COLOURS, TEXTBOOK_COLOURS_LAB, lesion_lab  # noqa: E402
from monai_egeunet.visualize import draw_lesion_axes  # noqa: E402

N_BOOT = 2000

# melanoma vs common nevus: each measurement, oriented so that a larger value is the more suspicious
MELANOMA_MEASUREMENTS = [
    ("asymmetry score", lambda r: r["asymmetry_score"]),
    ("shape asymmetry", lambda r: r["shape_asymmetry"]),
    ("asymmetric axes (0-2)", lambda r: r["asymmetric_axes"]),
    ("border irregularity", lambda r: r["border_irregularity"]),
    ("1 - solidity", lambda r: 1 - r["solidity"]),
    ("irregular border sectors (0-8)", lambda r: r["irregular_border_sectors"]),
    ("colour count", lambda r: r["colour_count"]),
    ("greatest diameter (px)", lambda r: r["greatest_diameter_px"]),
    ("**ABCD-like score** 1.3 A + 0.1 B + 0.5 C", lambda r: tds_like(r)),
]


def tds_like(r: dict) -> float:
    """The fixed combination, in the spirit of the ABCD rule's total dermoscopy score (TDS = 1.3 A + 0.1 B + 0.5 C +
    0.5 D): A = asymmetric axes (0-2), B = irregular border sectors (0-8), C = colour count (0-6); D (differential
    structures) is not measured and is left out. Weights are the ABCD rule's, nothing fitted."""
    return 1.3 * r["asymmetric_axes"] + 0.1 * r["irregular_border_sectors"] + 0.5 * r["colour_count"]


# ---------------------------------------------------------------------------------------------------- statistics
def auc(scores, positive) -> float:
    """Area under the ROC curve (Mann-Whitney U / n1 n0, ties count half)."""
    s, y = np.asarray(scores, float), np.asarray(positive, bool)
    if y.all() or not y.any():
        return float("nan")
    return float(mannwhitneyu(s[y], s[~y]).statistic / (y.sum() * (~y).sum()))


def spearman(x, y) -> float:
    return float(spearmanr(x, y)[0])


def _resamples(strata, seed: int = 0) -> np.ndarray:
    """``(N_BOOT, n)`` bootstrap index sets, each resampling every stratum (class) to its own size, so that every
    resample has all the classes."""
    strata = np.asarray(strata)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(strata == g) for g in np.unique(strata)]
    return np.concatenate([g[rng.integers(0, len(g), (N_BOOT, len(g)))] for g in groups], axis=1)


def bootstrap(stat, arrays, strata=None) -> tuple[float, float, float]:
    """The statistic on ``arrays`` (same length) and its 95% percentile-bootstrap interval."""
    arrays = [np.asarray(a) for a in arrays]
    idx = _resamples(np.zeros(len(arrays[0])) if strata is None else strata)
    values = [stat(*(a[i] for a in arrays)) for i in idx]
    lo, hi = np.nanpercentile(values, [2.5, 97.5])
    return stat(*arrays), float(lo), float(hi)


def bootstrap_auc(scores, positive) -> tuple[float, float, float]:
    """AUC and its 95% interval, resampling positives and negatives separately; each resample's AUC is the mean of
    the pairwise comparison matrix over the drawn pairs, so all 2,000 take one matrix product."""
    s, y = np.asarray(scores, float), np.asarray(positive, bool)
    pos, neg = s[y], s[~y]
    wins = (pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])
    rng = np.random.default_rng(0)
    cp = np.stack([np.bincount(r, minlength=len(pos)) for r in rng.integers(0, len(pos), (N_BOOT, len(pos)))])
    cn = np.stack([np.bincount(r, minlength=len(neg)) for r in rng.integers(0, len(neg), (N_BOOT, len(neg)))])
    values = ((cp @ wins) * cn).sum(1) / (len(pos) * len(neg))
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(wins.mean()), float(lo), float(hi)


def fmt(v: tuple[float, float, float], digits: int = 2) -> str:
    return f"{v[0]:.{digits}f} ({v[1]:.{digits}f} to {v[2]:.{digits}f})"


def sensitivity(pred, truth) -> float:
    p, t = np.asarray(pred, bool), np.asarray(truth, bool)
    return float((p & t).sum() / t.sum()) if t.any() else float("nan")


def specificity(pred, truth) -> float:
    p, t = np.asarray(pred, bool), np.asarray(truth, bool)
    return float((~p & ~t).sum() / (~t).sum()) if (~t).any() else float("nan")


# ---------------------------------------------------------------------------------------------------- data
def read_criteria(path: Path) -> dict[str, dict]:
    with open(path) as f:
        return {r["image"]: r for r in csv.DictReader(f)}


def read_rows(path: Path) -> dict[str, dict]:
    """A measurements CSV as ``{image id: row}``, numbers parsed (empty cells are NaN)."""
    out = {}
    with open(path) as f:
        for r in csv.DictReader(f):
            row = {}
            for k, v in r.items():
                if k in ("image", "mask", "status"):
                    row[k] = v
                else:
                    row[k] = float(v) if v != "" else float("nan")
            out[Path(r["image"]).stem] = row
    return out


def segment(images_dir: Path, masks_dir: Path, ckpt_path: Path, device: str, ids: list[str], force: bool) -> None:
    """Runs the bundle's inference workflow on ``images_dir`` (masks and, with ``--measure_lesions true``, their
    ``measurements.csv``) unless ``masks_dir`` holds its output for these weights and this ``inference.json``."""
    config = REPO / "configs" / "inference.json"
    stamp = masks_dir / "checkpoint.json"
    expected = {"ckpt_path": str(ckpt_path), "sha256": file_sha256(ckpt_path), "inference_json_sha256": file_sha256(config)}
    have = all((masks_dir / f"{i}_seg.png").exists() for i in ids)
    if not force and have and stamp.exists() and json.loads(stamp.read_text()) == expected:
        print(f"masks of {ckpt_path} found in {masks_dir}: not segmenting again (--resegment to force)")
        return
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "--config_file", str(config), "--bundle_root", str(REPO),
        "--dataset_dir", str(images_dir), "--output_dir", str(masks_dir), "--ckpt_path", str(ckpt_path),
        "--device", device, "--num_workers", "0", "--measure_lesions", "true",
    ]
    print("segmenting:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)
    stamp.write_text(json.dumps(expected, indent=1) + "\n")


def measure(ph2_dir: Path, masks_dir: Path, ids: list[str], run_dir: Path) -> None:
    """Measures the expert masks as the workflows' handler does; the model's masks' rows are those the inference
    workflow wrote (``masks_dir/measurements.csv``), or, when it wrote none, measured here from its mask files."""
    saver = LesionMeasurementsSaver(run_dir / "unused.csv", mask_keys=["label", "pred"])
    load = LoadImage(image_only=True, ensure_channel_first=True)
    workflow_rows = masks_dir / "measurements.csv"
    expert, model = [], []
    for n, i in enumerate(ids):
        source = str(ph2_dir / "images" / f"{i}.jpg")
        item = {"label": (load(ph2_dir / "masks" / f"{i}_lesion.png")[:1] > 127).float()}
        if not workflow_rows.exists():
            item["pred"] = (load(masks_dir / f"{i}_seg.png")[:1] > 127).float()
        rows = saver.measure_item(source, item)
        expert.append(rows[0])
        model.extend(rows[1:])
        if (n + 1) % 20 == 0:
            print(f"measured {n + 1}/{len(ids)}", flush=True)
    write_measurements_csv(run_dir / "measurements_expert.csv", expert)
    if workflow_rows.exists():
        print(f"model masks: the inference workflow's {workflow_rows}")
        (run_dir / "measurements_model.csv").write_bytes(workflow_rows.read_bytes())
    else:
        write_measurements_csv(run_dir / "measurements_model.csv", model)


# ---------------------------------------------------------------------------------------------------- tuning
def youden_thresholds(fractions: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per colour, the presence threshold on the fraction with the best Youden index (sensitivity + specificity - 1),
    half-way between two observed fractions, and that index."""
    thresholds, best = [], []
    for k in range(fractions.shape[1]):
        f, t = fractions[:, k], truth[:, k].astype(bool)
        values = np.unique(f)
        cands = np.concatenate([[values[0] / 2 if values[0] > 0 else 1e-6], (values[1:] + values[:-1]) / 2])
        j = [sensitivity(f >= c, t) + specificity(f >= c, t) - 1 for c in cands]
        thresholds.append(float(cands[int(np.argmax(j))]))
        best.append(float(np.max(j)))
    return np.array(thresholds), np.array(best)


def _fractions(pixels: list[np.ndarray], prototypes: dict) -> np.ndarray:
    names = list(prototypes)
    centres = np.asarray([prototypes[n] for n in names], np.float32)
    out = []
    for x in pixels:
        nearest = ((x[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
        counts = np.bincount(nearest, minlength=len(names)) / max(1, len(x))
        out.append([counts[names.index(c)] for c in DERMOSCOPIC_COLOURS])
    return np.array(out)


def tune(ph2_dir: Path, train_ids: list[str], criteria: dict, expert_rows: dict) -> None:
    """Re-derives the colour model and the asymmetry weighting from the training ids and their expert masks."""
    print(f"tuning on the {len(train_ids)} training ids (expert masks)", flush=True)
    pixels = []
    for i in train_ids:
        image = np.asarray(Image.open(ph2_dir / "images" / f"{i}.jpg").convert("RGB"))
        mask = np.asarray(Image.open(ph2_dir / "masks" / f"{i}_lesion.png")) > 127
        lab = lesion_lab(mask, image)
        pixels.append(lab[:: max(1, len(lab) // 5000)])  # about 5,000 pixels a lesion keep the search fast
    truth = np.array([[int(criteria[i][c]) for c in DERMOSCOPIC_COLOURS] for i in train_ids])

    def score(protos: dict) -> float:
        return float(youden_thresholds(_fractions(pixels, protos), truth)[1].mean())

    protos = {k: list(v) for k, v in TEXTBOOK_COLOURS_LAB.items()}
    best = score(protos)
    print(f"textbook prototypes: mean Youden index {best:.3f}")
    for step in (8.0, 4.0, 2.0):  # coordinate search; the skin prototype stays the reference skin
        improved = True
        while improved:
            improved = False
            for name in DERMOSCOPIC_COLOURS:
                for d in range(3):
                    for s in (step, -step):
                        trial = {k: list(v) for k, v in protos.items()}
                        trial[name][d] += s
                        v = score(trial)
                        if v > best + 1e-4:
                            best, protos, improved = v, trial, True
        print(f"step {step}: mean Youden index {best:.3f}", flush=True)
    thresholds, j = youden_thresholds(_fractions(pixels, protos), truth)

    ids = [i for i in train_ids if not math.isnan(expert_rows[i]["shape_asymmetry_major_axis"])]
    grade = np.array([int(criteria[i]["asymmetry"]) for i in ids])
    shape = np.array([[expert_rows[i]["shape_asymmetry_major_axis"], expert_rows[i]["shape_asymmetry_minor_axis"]] for i in ids])
    colour = np.array([[expert_rows[i]["colour_asymmetry_major_axis"], expert_rows[i]["colour_asymmetry_minor_axis"]] for i in ids])
    sel = grade != 1
    scales = [5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 60.0]
    aucs = [auc((shape + colour / s).sum(1)[sel], grade[sel] == 2) for s in scales]
    scale = scales[int(np.argmax(aucs))]
    terms = shape + colour / scale
    ts = np.round(np.arange(0.05, 2.0, 0.01), 2)
    acc = [float(np.mean((terms > t).sum(1) == grade)) for t in ts]
    t_best = float(ts[int(np.argmax(acc))])

    print("\n# constants for monai_egeunet/measurements.py (tuned on the PH2 training ids)")
    print("COLOUR_PROTOTYPES_LAB = {")
    for k, v in protos.items():
        print(f'    "{k}": ({v[0]:.1f}, {v[1]:.1f}, {v[2]:.1f}),')
    print("}")
    print("COLOUR_MIN_FRACTION = {" + ", ".join(f'"{c}": {t:.4f}' for c, t in zip(DERMOSCOPIC_COLOURS, thresholds)) + "}")
    print(f"COLOUR_ASYMMETRY_SCALE = {scale}  # train AUC 2 vs 0 by scale: " + ", ".join(f"{s:g}: {a:.3f}" for s, a in zip(scales, aucs)))
    print(f"ASYMMETRY_AXIS_THRESHOLD = {t_best}  # train accuracy of the axis count vs the experts' grade: {max(acc):.3f}")
    print("# train Youden index per colour: " + ", ".join(f"{c} {v:.2f}" for c, v in zip(DERMOSCOPIC_COLOURS, j)))


# ---------------------------------------------------------------------------------------------------- report
def report(criteria: dict, split: dict, rows: dict[str, dict[str, dict]], ckpt: str) -> str:
    ids_all = split["train"] + split["test"]
    parts = {"all 200": ids_all, "60 test ids": split["test"]}
    lines = []
    a = lines.append

    a("#### Asymmetry score vs the experts' asymmetry grade (0 symmetric, 1 about one axis, 2 fully asymmetric)\n")
    a("| masks | images | Spearman rho, score vs grade | AUC, grade 2 vs 0 | AUC, grade 2 vs 0, shape term only |")
    a("| --- | --- | --- | --- | --- |")
    aucs = {}
    for masks in ("expert", "model"):
        for part, ids in parts.items():
            ids = [i for i in ids if not math.isnan(rows[masks][i]["asymmetry_score"])]
            g = np.array([int(criteria[i]["asymmetry"]) for i in ids])
            s = np.array([rows[masks][i]["asymmetry_score"] for i in ids])
            sh = np.array([rows[masks][i]["shape_asymmetry"] for i in ids])
            sel = g != 1
            rho = bootstrap(spearman, [s, g], strata=g)
            au = bootstrap_auc(s[sel], g[sel] == 2)
            au_shape = bootstrap_auc(sh[sel], g[sel] == 2)
            aucs[(masks, part)] = au[0]
            n2, n0 = int((g == 2).sum()), int((g == 0).sum())
            label = "expert" if masks == "expert" else "model" + (" (140 of them trained the model)" if part == "all 200" else "")
            a(f"| {label} | {part} ({n2} vs {n0}) | {fmt(rho)} | {fmt(au)} | {fmt(au_shape)} |")
    e, m = aucs[("expert", "all 200")], aucs[("model", "all 200")]
    a(f"\nFloor (all 200, AUC 2 vs 0): expert masks {e:.3f} >= 0.75: {'met' if e >= 0.75 else 'NOT MET'}; model masks "
      f"{m:.3f}, {abs(m - e):.3f} from it (<= 0.05: {'met' if abs(m - e) <= 0.05 else 'NOT MET'}). On the 60 test ids: "
      f"expert {aucs[('expert', '60 test ids')]:.3f}, model {aucs[('model', '60 test ids')]:.3f}.\n")

    test = split["test"]
    a("#### Colours on the 60 test ids (colour model tuned on the 140 training ids)\n")
    a("| colour | experts: present in | expert masks: sensitivity | specificity | model masks: sensitivity | specificity |")
    a("| --- | --- | --- | --- | --- | --- |")
    for c in DERMOSCOPIC_COLOURS:
        t = np.array([int(criteria[i][c]) for i in test])
        cells = [f"{c.replace('_', ' ')}", f"{t.sum()} / {len(t)}"]
        for masks in ("expert", "model"):
            p = np.array([rows[masks][i][c] == 1 for i in test])
            for f in (sensitivity, specificity):
                v = bootstrap(f, [p, t], strata=t)
                cells.append("-" if math.isnan(v[0]) else fmt(v))
        a("| " + " | ".join(cells) + " |")
    t_count = np.array([sum(int(criteria[i][c]) for c in DERMOSCOPIC_COLOURS) for i in test])
    cells = ["colour count: mean absolute error", f"experts' mean {t_count.mean():.2f}"]
    for masks in ("expert", "model"):
        p = np.array([rows[masks][i]["colour_count"] for i in test])
        v = bootstrap(lambda x, y: float(np.mean(np.abs(x - y))), [p, t_count])
        cells += [f"{fmt(v)} (measured mean {p.mean():.2f})", ""]
    a("| " + " | ".join(cells) + " |")

    a("\n#### Melanoma vs common nevus: AUC of each measurement\n")
    a("| measurement | expert masks, 60 test ids | model masks, 60 test ids | expert masks, all 200 | model masks, all 200 |")
    a("| --- | --- | --- | --- | --- |")
    cols = [("expert", test), ("model", test), ("expert", ids_all), ("model", ids_all)]
    for name, f in MELANOMA_MEASUREMENTS:
        cells = [name]
        for masks, ids in cols:
            ids = [i for i in ids if criteria[i]["diagnosis"] in ("0", "2") and not math.isnan(rows[masks][i]["asymmetry_score"])]
            y = np.array([criteria[i]["diagnosis"] == "2" for i in ids])
            s = np.array([f(rows[masks][i]) for i in ids])
            cells.append(fmt(bootstrap_auc(s, y)))
        a("| " + " | ".join(cells) + " |")
    for name, f in (
        ("experts' asymmetry grade", lambda r: int(r["asymmetry"])),
        ("experts' colour count", lambda r: sum(int(r[c]) for c in DERMOSCOPIC_COLOURS)),
        ("experts' 1.3 A + 0.5 C", lambda r: 1.3 * int(r["asymmetry"]) + 0.5 * sum(int(r[c]) for c in DERMOSCOPIC_COLOURS)),
    ):
        cells = [f"*{name} (reference)*"]
        for ids in (test, ids_all):
            ids = [i for i in ids if criteria[i]["diagnosis"] in ("0", "2")]
            y = np.array([criteria[i]["diagnosis"] == "2" for i in ids])
            s = np.array([f(criteria[i]) for i in ids])
            v = fmt(bootstrap_auc(s, y))
            cells += [v, ""]
        a("| " + " | ".join(cells) + " |")
    n_test = sum(criteria[i]["diagnosis"] == "2" for i in test), sum(criteria[i]["diagnosis"] == "0" for i in test)
    n_all = sum(criteria[i]["diagnosis"] == "2" for i in ids_all), sum(criteria[i]["diagnosis"] == "0" for i in ids_all)
    a(f"\nMelanomas vs common nevi: {n_test[0]} vs {n_test[1]} test ids, {n_all[0]} vs {n_all[1]} in all. Model masks: "
      f"`{ckpt}` through `configs/inference.json`. 95% intervals: percentile bootstrap, {N_BOOT} resamples within each "
      "class.")
    return "\n".join(lines) + "\n"


def figure(path: Path, criteria: dict, split: dict, rows: dict[str, dict[str, dict]], ph2_dir: Path, example: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise SystemExit(f"the figure needs matplotlib (pip install matplotlib): {e}") from e
    fig, (ax, ax_img) = plt.subplots(1, 2, figsize=(11, 4.4), gridspec_kw={"width_ratios": [1, 1.2]})
    rng = np.random.default_rng(0)
    for k, (masks, colour) in enumerate((("expert", "tab:green"), ("model", "tab:red"))):
        for g in (0, 1, 2):
            ids = [i for i in rows[masks] if int(criteria[i]["asymmetry"]) == g and not math.isnan(rows[masks][i]["asymmetry_score"])]
            v = np.array([rows[masks][i]["asymmetry_score"] for i in ids])
            x = g + (k - 0.5) * 0.36
            ax.scatter(x + rng.uniform(-0.1, 0.1, len(v)), v, s=9, alpha=0.6, color=colour,
                       label=f"{masks} masks" if g == 0 else None)
            ax.plot([x - 0.14, x + 0.14], [np.median(v)] * 2, color="black", lw=2)
    names = ("0: symmetric", "1: about one axis", "2: fully asymmetric")
    ax.set_xticks([0, 1, 2], [f"{names[g]}\n(n={sum(int(r['asymmetry']) == g for r in criteria.values())})" for g in (0, 1, 2)])
    ax.set_xlabel("experts' asymmetry grade")
    ax.set_ylabel("measured asymmetry score")
    ax.set_title("all 200 PH2 images (bar: median)")
    ax.legend(loc="upper left", frameon=False)
    image = Image.open(ph2_dir / "images" / f"{example}.jpg").convert("RGB")
    draw_lesion_axes(image, rows["model"][example])
    expert = np.asarray(Image.open(ph2_dir / "masks" / f"{example}_lesion.png")) > 127
    model = np.asarray(Image.open(Path(rows["model"][example]["mask_file"]))) > 127
    ax_img.imshow(image)
    ax_img.contour(expert, levels=[0.5], colors="lime", linewidths=1)
    ax_img.contour(model, levels=[0.5], colors="red", linewidths=1)
    r = rows["model"][example]
    which = "test id" if example in split["test"] else "training id"
    ax_img.set_title(
        f"{example} ({which}, experts' grade {criteria[example]['asymmetry']}); model mask (red): score "
        f"{r['asymmetry_score']:.2f}, {int(r['asymmetric_axes'])} asymmetric axes\naxes: major (yellow), minor (cyan); "
        "greatest diameter (magenta); expert mask (green)", fontsize=9)
    ax_img.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"figure written to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ph2_dir", default=str(REPO.parent / "shared" / "data" / "ph2"))
    parser.add_argument("--split_file", default=str(REPO / "data" / "ph2_split.json"))
    parser.add_argument("--ckpt_path", default=str(REPO / "bundle" / "models" / "model.pt"))
    parser.add_argument("--run_dir", default=str(REPO / "runs" / "ph2_measurements"))
    parser.add_argument("--figure", default=str(REPO / "bundle" / "docs" / "images" / "ph2_measurements.png"))
    parser.add_argument("--example", default="IMD405", help="the image drawn with its axes in the figure")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reuse_measurements", action="store_true", help="report from RUN_DIR's CSV files")
    parser.add_argument("--resegment", action="store_true", help="run the inference workflow even if its masks are there")
    parser.add_argument("--tune", action="store_true", help="print the colour and asymmetry constants from the train ids")
    args = parser.parse_args()

    ph2_dir, run_dir = Path(args.ph2_dir).resolve(), Path(args.run_dir).resolve()
    criteria = read_criteria(ph2_dir / "PH2_criteria.csv")
    split = json.loads(Path(args.split_file).resolve().read_text())
    ids = split["train"] + split["test"]
    run_dir.mkdir(parents=True, exist_ok=True)
    masks_dir = run_dir / "masks"
    if not args.reuse_measurements:
        segment(ph2_dir / "images", masks_dir, Path(args.ckpt_path).resolve(), args.device, ids, args.resegment)
        measure(ph2_dir, masks_dir, ids, run_dir)
    rows = {m: read_rows(run_dir / f"measurements_{m}.csv") for m in ("expert", "model")}
    for i, r in rows["model"].items():
        r["mask_file"] = str(masks_dir / f"{i}_seg.png")
    if args.tune:
        tune(ph2_dir, split["train"], criteria, rows["expert"])
        return
    text = report(criteria, split, rows, os.path.relpath(args.ckpt_path, REPO))
    (run_dir / "report.md").write_text(text)
    print(text)
    figure(Path(args.figure), criteria, split, rows, ph2_dir, args.example)


if __name__ == "__main__":
    main()
