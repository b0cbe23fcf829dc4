"""The bridges' dilated depthwise convolutions two ways, on this machine's CPU: PyTorch's convolution (oneDNN) on a
channels-last map, as the inference form runs dilations 1 and 2, and the shifted multiply-adds it runs for the larger
dilations (``monai_egeunet.networks.nets.fused._shifted_depthwise``), in one interleaved run.

    python benchmarks/bench_depthwise.py [--repeats 21] [--size 256]

Shapes: each GAB's group (``low_channels / 2 + 1`` channels) at its stage's resolution for a ``size`` x ``size``
input, batch 1 and 8. The table gives median milliseconds per call and the ratio shifted / convolution.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from monai_egeunet.networks.nets.fused import _shifted_depthwise

#: (group channels, stride of the stage) of the five bridges of the default EGEUNet (features 8 ... 64)
BRIDGES = [(5, 2), (9, 4), (13, 8), (17, 16), (25, 32)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"median ms per call, {torch.get_num_threads()} thread(s), torch {torch.__version__}\n")
    print("| batch | group channels | H x W | dilation | convolution, channels-last | shifted multiply-adds | ratio |")
    print("|---|---|---|---|---|---|---|")
    with torch.no_grad():
        for batch in (1, 8):
            for channels, stride in BRIDGES:
                h = w = args.size // stride
                z = torch.rand(batch, channels, h, w)
                scale, shift = torch.rand(1, channels, 1, 1), torch.rand(1, channels, 1, 1)
                for d in (1, 2, 5, 7):
                    conv = nn.Conv2d(channels, channels, 3, padding=d, dilation=d, groups=channels).eval()

                    def onednn() -> torch.Tensor:
                        zi = torch.addcmul(shift, z, scale).contiguous(memory_format=torch.channels_last)
                        return conv(zi)

                    def shifted() -> torch.Tensor:
                        return _shifted_depthwise(z, scale, shift, conv)

                    torch.testing.assert_close(shifted(), onednn(), rtol=1e-4, atol=1e-4)
                    times: dict[str, list[float]] = {"conv": [], "shifted": []}
                    for _ in range(3):
                        onednn(), shifted()
                    for _ in range(args.repeats):
                        for name, fn in (("conv", onednn), ("shifted", shifted)):
                            t0 = time.perf_counter()
                            fn()
                            times[name].append(1000 * (time.perf_counter() - t0))
                    c, s = statistics.median(times["conv"]), statistics.median(times["shifted"])
                    print(f"| {batch} | {channels} | {h} x {w} | {d} | {c:.3f} | {s:.3f} | {s / c:.2f} |")


if __name__ == "__main__":
    main()
