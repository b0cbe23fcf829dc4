from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from monai_egeunet.networks.blocks.inference import (
    CachedInferenceModule,
    ParameterSnapshotCache,
    center_,
    channels_last_pointwise,
    depthwise_conv3x3,
    pointwise_conv,
    upsample_bilinear,
    use_inference_path,
)
from monai_egeunet.networks.blocks.layernorm import ChannelLayerNorm, channel_layer_norm

__all__ = ["GAB"]


def _dilated(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for one of GAB's depthwise dilated convolutions, through the cheaper kernel when 3x3."""
    if conv.kernel_size == (3, 3):
        return depthwise_conv3x3(x, conv.weight, conv.bias, conv.dilation[0])
    return F.conv2d(x, conv.weight, conv.bias, padding=conv.padding, dilation=conv.dilation, groups=conv.groups)


def _merged_kernel(convs: tuple[nn.Conv2d, ...]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One depthwise kernel (and bias) equal to GAB's dilated 3x3 convolutions side by side (zero padding "same").

    A 3x3 kernel with dilation ``d`` is a ``(2r+1) x (2r+1)`` kernel (``r`` the largest dilation) with its nine taps
    at offsets ``-d, 0, d`` from the centre and zeros elsewhere; the zeros add nothing to the sums.
    """
    radius = max(conv.dilation[0] for conv in convs)
    size = 2 * radius + 1
    first = convs[0].weight
    g = first.shape[0]
    kernel = first.new_zeros(len(convs) * g, 1, size, size)
    for i, conv in enumerate(convs):
        d = conv.dilation[0]
        kernel[i * g : (i + 1) * g, :, radius - d : radius + d + 1 : d, radius - d : radius + d + 1 : d] = conv.weight
    if all(conv.bias is None for conv in convs):
        return kernel, None
    return kernel, torch.cat([first.new_zeros(g) if conv.bias is None else conv.bias for conv in convs])


def _all_3x3(convs: tuple[nn.Conv2d, ...]) -> bool:
    return all(conv.kernel_size == (3, 3) and conv.dilation[0] == conv.dilation[1] for conv in convs)


def _or_none(t: torch.Tensor) -> torch.Tensor | None:
    return t if t.numel() > 0 else None


class GAB(CachedInferenceModule):
    """Group Aggregation Bridge (GAB) of EGE-UNet: fuses a skip connection with deeper features and a mask.

    The high-level features are projected to the low-level channel count by a pointwise convolution and resized
    bilinearly to the low-level size. Both are split into four channel groups; group ``i`` of each is concatenated
    with the decoder's mask (its logits) and passed through a channel layer norm and a depthwise 3x3 convolution
    with dilation ``dilations[i]``, so each group sees a different scale. A final layer norm and pointwise
    convolution mix the four groups.

    In inference (eval mode, autograd off) an equivalent, cheaper computation runs (see :meth:`_forward_inference`),
    with the tensors it derives from the parameters alone cached in ``cache`` and recomputed whenever a parameter
    value changes; training, autograd, TorchScript and exports run the original computation.

    Parameter names follow the original release (``pre_project``, ``g0`` ... ``g3``, ``tail_conv``).

    Args:
        high_channels: channels of the high-level (deeper) features.
        low_channels: channels of the low-level features and of the output; divisible by 4.
        mask_channels: channels of the mask (1 in the original; the number of classes for a multi-class mask).
        dilations: the four dilation rates (1, 2, 5, 7 in the paper).
        kernel_size: kernel size of the dilated convolutions.

    Raises:
        ValueError: when ``low_channels`` is not a positive multiple of 4 or ``dilations`` does not have 4 entries.

    Example::

        >>> bridge = GAB(high_channels=16, low_channels=8)
        >>> xh, xl, mask = torch.randn(1, 16, 32, 32), torch.randn(1, 8, 64, 64), torch.randn(1, 1, 64, 64)
        >>> bridge(xh, xl, mask).shape
        torch.Size([1, 8, 64, 64])
    """

    # the cache is an eager-mode inference aid: scripted modules always compute from the parameters
    __jit_ignored_attributes__ = ["cache"]

    def __init__(
        self,
        high_channels: int,
        low_channels: int,
        mask_channels: int = 1,
        dilations: Sequence[int] = (1, 2, 5, 7),
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        if low_channels <= 0 or low_channels % 4:
            raise ValueError(f"GAB low_channels must be a positive multiple of 4, got {low_channels}.")
        if len(dilations) != 4:
            raise ValueError(f"GAB needs 4 dilation rates (one per group), got {tuple(dilations)}.")
        self.pre_project = nn.Conv2d(high_channels, low_channels, 1)
        group = low_channels // 2 + mask_channels
        for i, d in enumerate(dilations):
            pad = (kernel_size + (kernel_size - 1) * (d - 1)) // 2
            conv = nn.Conv2d(group, group, kernel_size, padding=pad, dilation=d, groups=group)
            self.add_module(f"g{i}", nn.Sequential(ChannelLayerNorm(group), conv))
        fused = 4 * group
        self.tail_conv = nn.Sequential(ChannelLayerNorm(fused), nn.Conv2d(fused, low_channels, 1))
        self.cache = ParameterSnapshotCache(max_entries=2)

    def forward(self, xh: torch.Tensor, xl: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """
        Args:
            xh: high-level features ``(B, high_channels, h, w)``.
            xl: low-level features ``(B, low_channels, H, W)``.
            mask: mask logits ``(B, mask_channels, H, W)``.

        Returns:
            The fused features ``(B, low_channels, H, W)``.
        """
        if torch.jit.is_scripting():
            return self._forward_plain(xh, xl, mask)
        return self._forward_eager(xh, xl, mask)

    @torch.jit.unused
    def _forward_eager(self, xh: torch.Tensor, xl: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if use_inference_path(self):
            return self._forward_inference(xh, xl, mask)
        return self._forward_plain(xh, xl, mask)

    def _forward_plain(self, xh: torch.Tensor, xl: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The original release's computation, operator by operator (training, autograd, scripting, export)."""
        xh = self.pre_project(xh)
        if xh.shape[2:] != xl.shape[2:]:
            xh = F.interpolate(xh, size=[xl.shape[2], xl.shape[3]], mode="bilinear", align_corners=True)
        z = self._group_norm(xh, xl, mask)
        g = z.shape[1] // 4
        x0 = self.g0[1](z[:, :g])
        x1 = self.g1[1](z[:, g : 2 * g])
        x2 = self.g2[1](z[:, 2 * g : 3 * g])
        x3 = self.g3[1](z[:, 3 * g :])
        return self.tail_conv(torch.cat([x0, x1, x2, x3], dim=1))

    def _group_norm(self, xh: torch.Tensor, xl: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The four groups ``[xh_i, xl_i, mask]`` side by side, each layer-normalised by its ``g{i}[0]``."""
        hs = torch.chunk(xh, 4, dim=1)
        ls = torch.chunk(xl, 4, dim=1)
        # the four group norms are one reduction over a (B, 4, group, H, W) view; only the dilations differ
        z = torch.cat([hs[0], ls[0], mask, hs[1], ls[1], mask, hs[2], ls[2], mask, hs[3], ls[3], mask], dim=1)
        norms = [self.g0[0], self.g1[0], self.g2[0], self.g3[0]]
        weight = torch.cat([n.weight for n in norms])
        bias = torch.cat([n.bias for n in norms])
        return channel_layer_norm(z, weight, bias, self.g0[0].eps, groups=4)

    @torch.jit.unused
    def _cache_sources(self) -> list[torch.Tensor]:
        """The parameters :meth:`_folded` depends on (all but ``pre_project``), looked up afresh."""
        sources = []
        for name in ("g0", "g1", "g2", "g3", "tail_conv"):
            for layer in self._modules[name]._modules.values():  # type: ignore[union-attr]
                sources.extend(p for p in layer._parameters.values() if p is not None)
        return sources  # type: ignore[return-value]

    @torch.jit.unused
    def _folded(self, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Inference tensors derived from the parameters only, computed once and cached (never stale, see
        :class:`~monai_egeunet.networks.blocks.inference.ParameterSnapshotCache`):

        * the four group norms' scales (times ``sqrt(group)``, see :func:`center_`) and shifts, concatenated;
        * the merged depthwise kernel and bias of the four dilated 3x3 convolutions (:func:`_merged_kernel`), and
          of those with dilation 1 and 2 only;
        * the tail: ``W diag(g) sqrt(C)`` and ``W b + c`` (see :meth:`_forward_inference`).
        """
        key = (like.dtype, like.device)
        sources = self._cache_sources()
        entry = self.cache.get(key, sources)
        if entry is None:
            norms = [self.g0[0], self.g1[0], self.g2[0], self.g3[0]]
            convs = (self.g0[1], self.g1[1], self.g2[1], self.g3[1])
            g = norms[0].num_channels
            channels = 4 * g
            weight = torch.cat([n.weight for n in norms]).mul(math.sqrt(g)).view(1, channels, 1, 1)
            bias = torch.cat([n.bias for n in norms]).view(1, channels, 1, 1)
            empty = weight.new_zeros(0)
            kernel, kernel_bias = _merged_kernel(convs) if _all_3x3(convs) else (empty, None)
            # on large maps only the groups with dilation 1 or 2 (a prefix) are merged: a 5x5 kernel, where the
            # larger dilations would need a 15x15 one (25 times the arithmetic of 3x3)
            prefix = 0
            while prefix < len(convs) and convs[prefix].dilation[0] <= 2 and _all_3x3(convs[: prefix + 1]):
                prefix += 1
            head, head_bias = _merged_kernel(convs[:prefix]) if prefix > 1 else (empty, None)
            norm, tail = self.tail_conv[0], self.tail_conv[1]
            w = tail.weight.flatten(1)
            entry = (
                weight,
                bias,
                kernel,
                empty if kernel_bias is None else kernel_bias,
                head,
                empty if head_bias is None else head_bias,
                w * (norm.weight * math.sqrt(channels)),
                torch.addmv(tail.bias, w, norm.bias).view(1, -1, 1, 1),
            )
            self.cache.put(key, sources, entry)
        return entry

    @torch.jit.unused
    def _forward_inference(self, xh: torch.Tensor, xl: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Same function as :meth:`_forward_plain` with fewer operators and passes over the fused feature maps.

        Works in place on the buffers it creates, takes the parameter-only tensors from :meth:`_folded`, picks the
        cheaper kernel for each dilated convolution (on maps of at most 256 positions, one merged depthwise
        convolution for all four), and folds the tail layer norm into the tail convolution: with ``y`` centred over
        channels and ``r = 1/std`` per position, ``W ((y r) g + b) + c = (W diag(g) y) r + (W b + c)``, so the
        scaling by ``r`` happens after the projection, on ``low_channels`` maps instead of ``4 * group``.
        """
        pre = self.pre_project
        xh = pointwise_conv(xh, pre.weight, pre.bias)
        if xh.shape[2:] != xl.shape[2:]:
            xh = upsample_bilinear(xh, xl.shape[2], xl.shape[3])
        weight, bias, kernel, kernel_bias, head, head_bias, tail_weight, tail_bias = self._folded(xl)
        b, _, height, width = xl.shape
        hs = torch.chunk(xh, 4, dim=1)
        ls = torch.chunk(xl, 4, dim=1)
        z = torch.cat([hs[0], ls[0], mask, hs[1], ls[1], mask, hs[2], ls[2], mask, hs[3], ls[3], mask], dim=1)
        channels = z.shape[1]
        g = channels // 4
        rstd = center_(z.view(b, 4, g, height, width), self.g0[0].eps)  # z * rstd * sqrt(g) is normalised
        z.view(b, 4, g, height, width).mul_(rstd)
        if height * width <= 256 and kernel.numel() > 0:
            # small maps: the four dilated 3x3 convolutions as one depthwise convolution whose kernel holds them
            # all (zeros elsewhere), channels-last: one oneDNN call instead of four, each with layout reorders
            y = torch.addcmul(bias, z, weight, out=torch.empty_like(z, memory_format=torch.channels_last))
            y = F.conv2d(y, kernel, _or_none(kernel_bias), padding=kernel.shape[-1] // 2, groups=channels)
        else:
            torch.addcmul(bias, z, weight, out=z)
            convs = (self.g0[1], self.g1[1], self.g2[1], self.g3[1])
            ys, start = [], 0
            if head.numel() > 0:  # the groups with dilation 1 and 2 as one 5x5 depthwise convolution
                start = head.shape[0] // g
                x = z[:, : head.shape[0]].contiguous(memory_format=torch.channels_last)
                ys.append(F.conv2d(x, head, _or_none(head_bias), padding=head.shape[-1] // 2, groups=head.shape[0]))
            ys += [_dilated(convs[i], z[:, i * g : (i + 1) * g]) for i in range(start, 4)]
            y = torch.cat(ys, dim=1)
        rstd = center_(y.view(b, 1, channels, height, width), self.tail_conv[0].eps).reshape(b, 1, height, width)
        out = channels_last_pointwise(y, tail_weight, None)
        return torch.addcmul(tail_bias, out, rstd, out=out)
