"""Training step of EGE-UNet beside MONAI's UNet as a yardstick: one optimisation step (forward, backward, AdamW) at
batch 8, 256x256, with the bundle's loss (DiceCE under deep supervision) and optimiser, in one interleaved run.

    python benchmarks/bench_training.py [--steps 10] [--batch 8] [--size 256] [--threads N] [--no-memory] [--no-cuda]

The two models take turns step by step on the same batch after warm-up steps, so a change of load on the machine
hits both alike; the table gives the median step time, images per second and the median of the per-round ratios to
the yardstick (``UNet(2, 3, 1, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2)`` with ``DiceCELoss``). On
the CPU, the peak resident memory of training is measured afterwards for each model in a fresh child process (the
peak resident set, ``VmHWM`` reset after building the model, over the resident set then: activations, gradients,
optimiser state and workspace). Where CUDA is available the same comparison runs on the GPU too (synchronised per
step), in rows of their own, with ``torch.cuda.max_memory_allocated`` as the memory; elsewhere the output says they
were skipped. On a shared machine compare only the ratios of one run; the load average is printed with the table.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from _memory import start_peak_tracking

YARDSTICK = "MONAI UNet (yardstick)"
TRAIN_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "train.json"


def _setup(name: str, batch: int, size: int, device: str):
    """Network, one training step as a closure, and the parameter count, for ``name`` on ``device``.

    The optimiser is the bundle's (``optimizer`` of ``configs/train.json``) for both networks, and so is EGE-UNet's
    loss (``loss``); the yardstick has no side outputs and takes ``DiceCELoss`` alone.
    """
    from monai.bundle import ConfigParser
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet

    from monai_egeunet import EGEUNet

    torch.manual_seed(0)
    config = ConfigParser()
    config.read_config(str(TRAIN_CONFIG))
    if name == "EGE-UNet":
        net = EGEUNet()
        loss_fn = config.get_parsed_content("loss")
    else:
        net = UNet(2, 3, 1, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2)
        loss_fn = DiceCELoss(sigmoid=True)
    net = net.to(device).train()
    config["network"] = net
    opt = config.get_parsed_content("optimizer")
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(batch, 3, size, size, generator=generator).to(device)
    y = (torch.rand(batch, 1, size, size, generator=generator) > 0.5).float().to(device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        opt.step()

    return step, sum(p.numel() for p in net.parameters())


def _memory_child(name: str, batch: int, size: int, threads: int, queue: mp.Queue) -> None:
    torch.set_num_threads(threads)
    step, _ = _setup(name, batch, size, "cpu")
    base, peak = start_peak_tracking()
    for _ in range(2):
        step()
    queue.put((peak() - base) / 1024)


def _peak_memory(name: str, batch: int, size: int, threads: int) -> float:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_memory_child, args=(name, batch, size, threads, queue))
    proc.start()
    result = queue.get(timeout=1200)
    proc.join()
    return result


def _rows(device: str, args: argparse.Namespace) -> list[tuple]:
    """(model, device, parameters, step times, memory or None) for EGE-UNet and the yardstick, timed in turns."""
    cuda = device.startswith("cuda")
    names = ("EGE-UNet", YARDSTICK)
    models = {name: _setup(name, args.batch, args.size, device) for name in names}

    def timed(step) -> float:
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for _ in range(3):
        for step, _ in models.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.steps):
        for name, (step, _) in models.items():
            times[name].append(timed(step))
    memory: dict[str, float] = {}
    for name in names:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            models[name][0]()
            memory[name] = torch.cuda.max_memory_allocated() / 2**20
        elif not args.no_memory:
            memory[name] = _peak_memory(name, args.batch, args.size, args.threads)
    return [(name, device, models[name][1], times[name], times[YARDSTICK], memory.get(name)) for name in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model (after 3 warm-up steps)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="intra-op threads (CPU)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes (CPU)")
    parser.add_argument("--no-cuda", action="store_true", help="skip the CUDA rows where a GPU is available")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = _rows("cpu", args)
    if torch.cuda.is_available() and not args.no_cuda:
        rows += _rows("cuda", args)
        cuda_note = f"CUDA rows on {torch.cuda.get_device_name()} (peak memory: torch.cuda.max_memory_allocated)"
    else:
        cuda_note = "no CUDA rows: " + ("--no-cuda" if args.no_cuda else "no CUDA device here (they run where "
                                         "torch.cuda.is_available())")

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"\ntraining step (forward, backward, AdamW), batch {args.batch}, {args.size}x{args.size}, torch "
        f"{torch.__version__}, CPU: {args.threads} threads, {os.cpu_count()} CPUs ({platform.machine()}), load "
        f"average {load:.2f}; median of {args.steps} interleaved steps; {cuda_note}\n"
    )
    print("| model | device | parameters | s / step | images / s | ratio to yardstick | peak memory + (MB) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, device, params, ts, reference, memory in rows:
        ratio = statistics.median(t / u for t, u in zip(ts, reference))
        step_s = statistics.median(ts)
        mem = "-" if memory is None else f"{memory:.0f}"
        print(f"| {name} | {device} | {params:,} | {step_s:.3f} | {args.batch / step_s:.1f} | {ratio:.2f} | {mem} |")


if __name__ == "__main__":
    main()
