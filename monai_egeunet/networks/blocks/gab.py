from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from monai_egeunet.networks.blocks.layernorm import ChannelLayerNorm

__all__ = ["GAB"]


class GAB(nn.Module):
    """Group Aggregation Bridge (GAB) of EGE-UNet: fuses a skip connection with deeper features and a mask.

    The high-level features are projected to the low-level channel count by a pointwise convolution and resized
    bilinearly to the low-level size. Both are split into four channel groups; group ``i`` of each is concatenated
    with the decoder's mask (its logits) and passed through a channel layer norm and a depthwise 3x3 convolution
    with dilation ``dilations[i]`` (``g0`` ... ``g3``), so each group sees a different scale. A final layer norm and
    pointwise convolution (``tail_conv``) mix the four groups.

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
        self.quarter = low_channels // 4  # channels of each of the four groups
        self.pre_project = nn.Conv2d(high_channels, low_channels, 1)
        group = low_channels // 2 + mask_channels
        for i, d in enumerate(dilations):
            pad = (kernel_size + (kernel_size - 1) * (d - 1)) // 2
            conv = nn.Conv2d(group, group, kernel_size, padding=pad, dilation=d, groups=group)
            self.add_module(f"g{i}", nn.Sequential(ChannelLayerNorm(group), conv))
        fused = 4 * group
        self.tail_conv = nn.Sequential(ChannelLayerNorm(fused), nn.Conv2d(fused, low_channels, 1))

    def forward(self, xh: torch.Tensor, xl: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """
        Args:
            xh: high-level features ``(B, high_channels, h, w)``.
            xl: low-level features ``(B, low_channels, H, W)``.
            mask: mask logits ``(B, mask_channels, H, W)``.

        Returns:
            The fused features ``(B, low_channels, H, W)``.
        """
        xh = self.pre_project(xh)
        xh = F.interpolate(xh, size=[xl.shape[2], xl.shape[3]], mode="bilinear", align_corners=True)
        hs = torch.split(xh, self.quarter, dim=1)
        ls = torch.split(xl, self.quarter, dim=1)
        x0 = self.g0(torch.cat([hs[0], ls[0], mask], dim=1))
        x1 = self.g1(torch.cat([hs[1], ls[1], mask], dim=1))
        x2 = self.g2(torch.cat([hs[2], ls[2], mask], dim=1))
        x3 = self.g3(torch.cat([hs[3], ls[3], mask], dim=1))
        return self.tail_conv(torch.cat([x0, x1, x2, x3], dim=1))
