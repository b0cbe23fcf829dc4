"""Peak memory of the bundle's inference workflow on one large photo (default 6000x4000 pixels, a 24-megapixel
dermoscope or phone camera image), in a fresh process, for the default pipeline and ``original_preprocessing``.

    OMP_NUM_THREADS=1 python benchmarks/peak_memory_inference.py [--width 6000] [--height 4000] [--limit_mb 2048]

Each run is ``python -m monai.bundle run --config_file configs/inference.json ... --num_workers 0`` in a child
process; its peak resident set size is the kernel's ``ru_maxrss`` for that child (``os.wait4``). The baseline is a
child that only imports torch, MONAI and this package. Exits with status 1 when a run exceeds ``--limit_mb``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]


def _peak_mb(cmd: list[str]) -> float:
    """Runs ``cmd`` in a child process and returns that child's own peak RSS in MB (``wait4``'s resource usage)."""
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return usage.ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=6000)
    parser.add_argument("--height", type=int, default=4000)
    parser.add_argument("--limit_mb", type=float, default=2048)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        (tmp / "in").mkdir()
        # a lesion-like dark ellipse on noisy skin, saved as a quality-90 JPEG like a camera's
        rng = np.random.default_rng(0)
        h, w = args.height, args.width
        y, x = np.ogrid[:h, :w]
        lesion = ((x - 0.45 * w) / (0.2 * w)) ** 2 + ((y - 0.5 * h) / (0.2 * h)) ** 2 < 1
        img = np.empty((h, w, 3), np.uint8)
        img[...] = rng.integers(185, 215, (h, w, 1), dtype=np.uint8)
        img[lesion] //= 3
        Image.fromarray(img).save(tmp / "in" / "large.jpg", quality=90)
        del img, lesion

        import torch

        ckpt = tmp / "model.pt"
        from monai_egeunet import EGEUNet

        torch.save(EGEUNet().state_dict(), ckpt)
        base = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
                "--dataset_dir", str(tmp / "in"), "--ckpt_path", str(ckpt), "--num_workers", "0"]
        rows = [("python + torch + MONAI + monai_egeunet imported", _peak_mb(
            [sys.executable, "-c", "import torch, monai, monai_egeunet.inference"]))]
        rows.append(("inference, defaults", _peak_mb(base + ["--output_dir", str(tmp / "out1")])))
        rows.append(("inference, --save_probabilities true", _peak_mb(
            base + ["--output_dir", str(tmp / "out2"), "--save_probabilities", "true"])))
        rows.append(("inference, --original_preprocessing true", _peak_mb(
            base + ["--output_dir", str(tmp / "out3"), "--original_preprocessing", "true"])))
        with Image.open(tmp / "out1" / "large_seg.png") as m:
            assert m.size == (w, h), f"mask is {m.size}, image {(w, h)}"
    print(f"peak resident memory, one {w}x{h} RGB JPEG, CPU, {os.environ.get('OMP_NUM_THREADS', 'all')} thread(s)\n")
    print("| process | peak RSS (MB) |")
    print("|---|---|")
    for name, mb in rows:
        print(f"| {name} | {mb:.0f} |")
    over = [name for name, mb in rows if mb > args.limit_mb]
    if over:
        print(f"\nover the {args.limit_mb:.0f} MB limit: {', '.join(over)}")
        return 1
    print(f"\nall under {args.limit_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
