"""Training throughput of EGE-UNet on the CPU: images/second and peak memory for one optimisation step at 256x256,
batch 8, with the bundle's loss (DiceCE under deep supervision) and optimiser (AdamW), beside MONAI's UNet as a
yardstick trained the same way in the same run.

    python benchmarks/bench_training.py [--steps 10] [--batch 8] [--size 256]

Each model runs in its own child process so that its peak resident memory (ru_maxrss) is its own.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import time

import torch


def _child(name: str, batch: int, size: int, steps: int, queue: mp.Queue) -> None:
    from monai.losses import DeepSupervisionLoss, DiceCELoss
    from monai.networks.nets import UNet

    from monai_egeunet import EGEUNet

    torch.manual_seed(0)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if name == "EGE-UNet":
        net = EGEUNet()
        loss_fn = DeepSupervisionLoss(DiceCELoss(sigmoid=True), weights=[1.0, 0.5, 0.4, 0.3, 0.2, 0.1])
    else:
        net = UNet(2, 3, 1, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2)
        loss_fn = DiceCELoss(sigmoid=True)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2)
    net.train()
    x = torch.rand(batch, 3, size, size)
    y = (torch.rand(batch, 1, size, size) > 0.5).float()
    times = []
    for i in range(steps + 3):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        if i >= 3:  # warm-up steps excluded
            times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put({
        "name": name,
        "params": sum(p.numel() for p in net.parameters()),
        "step_s": statistics.median(times),
        "peak_mb": peak / 1024,
        "model_mb": (peak - base_rss) / 1024,
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    rows = []
    for name in ("EGE-UNet", "MONAI UNet"):
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(name, args.batch, args.size, args.steps, queue))
        proc.start()
        rows.append(queue.get())
        proc.join()
    print(f"training step, batch {args.batch}, {args.size}x{args.size}, CPU, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.steps} steps\n")
    print("| model | parameters | s/step | images/s | peak RSS (MB) | RSS growth in training (MB) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['params']:,} | {r['step_s']:.3f} | {args.batch / r['step_s']:.1f} | "
              f"{r['peak_mb']:.0f} | {r['model_mb']:.0f} |")
    print(f"\nEGE-UNet / UNet step time: {rows[0]['step_s'] / rows[1]['step_s']:.2f}")
    print(json.dumps({r["name"]: round(args.batch / r["step_s"], 2) for r in rows}))


if __name__ == "__main__":
    main()
