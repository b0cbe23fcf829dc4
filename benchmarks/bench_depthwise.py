"""The bridges' dilated depthwise convolutions, the ways the inference form could run them, on this machine's CPU, in
one interleaved run.

    python benchmarks/bench_depthwise.py [--repeats 21] [--size 256]

For each GAB of the default EGEUNet (four groups of ``low_channels / 2 + 1`` channels, dilations 1, 2, 5 and 7, at
its stage's resolution for a ``size`` x ``size`` input, batch 1 and 8), from the groups' layer-normalised,
channel-first ``(B, 4, G, H, W)`` planes, with each group's affine applied first, to the four convolutions' outputs,
channel-first, which the bridge's tail reduces over:

* ``oneDNN, channels-last``: one ``F.conv2d`` per group on a channels-last copy of its planes (the layout oneDNN's
  depthwise convolutions are fastest in), copied back into the channel-first output;
* ``oneDNN, channel-first``: one ``F.conv2d`` per group on its channel-first planes;
* ``shifted multiply-adds``: what :class:`monai_egeunet.networks.FusedEGEUNet` runs: the planes written into the
  interior of a zero-bordered map, then one multiply-add per kernel tap and pair of groups
  (``monai_egeunet.networks.nets.fused._add_shifted_taps``).

The table gives median milliseconds per bridge and the ratios to the first column.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from monai_egeunet.networks.blocks import GAB
from monai_egeunet.networks.nets.fused import _add_shifted_taps, _FusedGAB

#: (high-level channels, low-level channels, stride of the stage) of the five bridges of the default EGEUNet
BRIDGES = [(16, 8, 2), (24, 16, 4), (32, 24, 8), (48, 32, 16), (64, 48, 32)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"median ms per bridge (four groups), {torch.get_num_threads()} thread(s), torch {torch.__version__}\n")
    print("| batch | group channels | H x W | oneDNN, channels-last | oneDNN, channel-first (ratio) "
          "| shifted multiply-adds (ratio) |")
    print("|---|---|---|---|---|---|")
    with torch.no_grad():
        for batch in (1, 8):
            for high, low, stride in BRIDGES:
                bridge = GAB(high, low).eval()
                fused = _FusedGAB(bridge)
                convs = [getattr(bridge, f"g{i}")[1] for i in range(4)]
                h = w = args.size // stride
                z = torch.rand(batch, 4, low // 2 + 1, h, w)
                g, p = z.shape[2], fused.pad

                def per_group(layout: torch.memory_format) -> torch.Tensor:
                    y = torch.empty_like(z)
                    for i, conv in enumerate(convs):
                        zi = torch.addcmul(fused.group_bias[:, i], z[:, i], fused.group_weight[:, i])
                        y[:, i] = conv(zi.contiguous(memory_format=layout))
                    return y

                def shifted() -> torch.Tensor:
                    padded = z.new_zeros((batch, 4, g, h + 2 * p, w + 2 * p))
                    inner = torch.addcmul(fused.group_bias, z, fused.group_weight, out=padded[..., p : p + h, p : p + w])
                    return _add_shifted_taps(torch.addcmul(fused.conv_bias, inner, fused.centre), padded, fused.taps, p)

                ways = (
                    ("last", lambda: per_group(torch.channels_last)),
                    ("first", lambda: per_group(torch.contiguous_format)),
                    ("shifted", shifted),
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
                last, first, shift = (statistics.median(times[name]) for name, _ in ways)
                print(f"| {batch} | {g} | {h} x {w} | {last:.3f} | {first:.3f} ({first / last:.2f}) "
                      f"| {shift:.3f} ({shift / last:.2f}) |")


if __name__ == "__main__":
    main()
