"""The bridges' dilated depthwise convolutions three ways, on this machine's CPU: PyTorch's convolution on a
channels-last map (oneDNN), as the plain network (which runs channels-last) and the inference form at dilations 1 and
2 run it, the same convolution on a channel-first map, and the shifted multiply-adds the inference form runs for the
larger dilations (``monai_egeunet.networks.nets.fused._shifted_depthwise``), in one interleaved run.

    python benchmarks/bench_depthwise.py [--repeats 21] [--size 256]

Shapes: each GAB's group (``low_channels / 2 + 1`` channels) at its stage's resolution for a ``size`` x ``size``
input, batch 1 and 8. The table gives median milliseconds per call and the ratios to the channels-last convolution.
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
    print("| batch | group channels | H x W | dilation | convolution, channels-last | convolution, channel-first "
          "(ratio) | shifted multiply-adds (ratio) |")
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

                    def channel_first() -> torch.Tensor:
                        return conv(torch.addcmul(shift, z, scale))

                    def shifted() -> torch.Tensor:
                        return _shifted_depthwise(z, scale, shift, conv)

                    torch.testing.assert_close(shifted(), onednn(), rtol=1e-4, atol=1e-4)
                    torch.testing.assert_close(channel_first(), onednn(), rtol=1e-4, atol=1e-4)
                    ways = (("conv", onednn), ("first", channel_first), ("shifted", shifted))
                    times: dict[str, list[float]] = {name: [] for name, _ in ways}
                    for _ in range(3):
                        for _, fn in ways:
                            fn()
                    for _ in range(args.repeats):
                        for name, fn in ways:
                            t0 = time.perf_counter()
                            fn()
                            times[name].append(1000 * (time.perf_counter() - t0))
                    c, f, s = (statistics.median(times[name]) for name, _ in ways)
                    print(f"| {batch} | {channels} | {h} x {w} | {d} | {c:.3f} | {f:.3f} ({f / c:.2f}) | {s:.3f} "
                          f"({s / c:.2f}) |")


if __name__ == "__main__":
    main()
