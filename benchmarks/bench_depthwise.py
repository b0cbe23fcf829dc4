"""The bridges' dilated depthwise convolutions, the ways the inference form could run them, on this machine's CPU, in
one interleaved run.

    python benchmarks/bench_depthwise.py [--repeats 21] [--size 256]

For each GAB's pair of groups (``low_channels / 2 + 1`` channels each, at its stage's resolution for a ``size`` x
``size`` input, batch 1 and 8), with each group's layer-norm affine applied first as in
:class:`monai_egeunet.networks.FusedEGEUNet`:

* ``two calls, channels-last``: one call per group on a channels-last map;
* ``two calls, channel-first``: the same on channel-first maps;
* ``one call``: both groups in one depthwise convolution whose kernel holds both kernels spread by their dilations
  (``monai_egeunet.networks.nets.fused._merged_depthwise``): 5x5 for dilations 1 and 2, 15x15 for 5 and 7.

The inference form merges the pair (1, 2) and keeps 5 and 7 apart. The table gives median milliseconds per pair and
the ratios to the first column.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from monai_egeunet.networks.nets.fused import _merged_depthwise

#: (group channels, stride of the stage) of the five bridges of the default EGEUNet (features 8 ... 64)
BRIDGES = [(5, 2), (9, 4), (13, 8), (17, 16), (25, 32)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"median ms per pair of groups, {torch.get_num_threads()} thread(s), torch {torch.__version__}\n")
    print("| batch | group channels | H x W | dilations | two calls, channels-last | two calls, channel-first (ratio) "
          "| one call (ratio) |")
    print("|---|---|---|---|---|---|---|")
    with torch.no_grad():
        for batch in (1, 8):
            for channels, stride in BRIDGES:
                h = w = args.size // stride
                z = torch.rand(batch, 2 * channels, h, w)
                scale, shift = torch.rand(1, 2 * channels, 1, 1), torch.rand(1, 2 * channels, 1, 1)
                for pair in ((1, 2), (5, 7)):
                    convs = [nn.Conv2d(channels, channels, 3, padding=d, dilation=d, groups=channels) for d in pair]
                    merged = _merged_depthwise(convs)

                    def affine(zs: torch.Tensor, s: slice, layout: torch.memory_format) -> torch.Tensor:
                        return torch.addcmul(shift[:, s], zs, scale[:, s]).contiguous(memory_format=layout)

                    def separate(layout: torch.memory_format) -> torch.Tensor:
                        y = torch.empty_like(z)
                        for i, conv in enumerate(convs):
                            s = slice(i * channels, (i + 1) * channels)
                            y[:, s] = conv(affine(z[:, s], s, layout))
                        return y

                    def one_call() -> torch.Tensor:
                        return F.conv2d(affine(z, slice(None), torch.channels_last), **merged)

                    ways = (
                        ("last", lambda: separate(torch.channels_last)),
                        ("first", lambda: separate(torch.contiguous_format)),
                        ("one", one_call),
                    )
                    reference = ways[0][1]()
                    for _, fn in ways[1:]:
                        torch.testing.assert_close(fn(), reference, rtol=1e-4, atol=1e-4)
                    times: dict[str, list[float]] = {name: [] for name, _ in ways}
                    for _ in range(3):
                        for _, fn in ways:
                            fn()
                    for _ in range(args.repeats):
                        for name, fn in ways:
                            t0 = time.perf_counter()
                            fn()
                            times[name].append(1000 * (time.perf_counter() - t0))
                    last, first, one = (statistics.median(times[name]) for name, _ in ways)
                    print(f"| {batch} | {channels} | {h} x {w} | {pair[0]}, {pair[1]} | {last:.3f} | {first:.3f} "
                          f"({first / last:.2f}) | {one:.3f} ({one / last:.2f}) |")


if __name__ == "__main__":
    main()
