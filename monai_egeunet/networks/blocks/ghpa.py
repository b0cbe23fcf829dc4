from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from monai_egeunet.networks.blocks.layernorm import ChannelLayerNorm

__all__ = ["GHPA"]


def _depthwise_separable(channels: int, conv: type[nn.Module]) -> nn.Sequential:
    """Depthwise 3-wide convolution, GELU, pointwise convolution (``conv`` is ``nn.Conv1d`` or ``nn.Conv2d``)."""
    return nn.Sequential(
        conv(channels, channels, kernel_size=3, padding=1, groups=channels), nn.GELU(), conv(channels, channels, 1)
    )


class GHPA(nn.Module):
    """Group multi-axis Hadamard Product Attention (GHPA) block of EGE-UNet.

    The input is layer-normalised over channels and split into four channel groups. The first three are multiplied
    element-wise (Hadamard product) by learnable attention maps on the height-width, channel-height and
    channel-width axes: a small learnable tensor, bilinearly resized to the feature map and refined by a depthwise
    separable convolution (:meth:`attention`). The fourth group goes through a pointwise convolution, GELU and a
    depthwise convolution. The groups are concatenated, normalised again and mixed by a depthwise 3x3 convolution,
    GELU and a pointwise convolution that maps to ``out_channels``.

    The attention maps depend on the parameters and the spatial size only, not on the image:
    :func:`monai_egeunet.networks.fuse_for_inference` computes them ahead for a trained network.

    Parameter names follow the original release (``params_xy``, ``conv_zx``, ``dw``, ``norm1``, ``ldw``...).

    Args:
        in_channels: input channels; divisible by 4.
        out_channels: output channels.
        param_size: height and width of the learnable attention tensors before resizing (8 in the paper).

    Raises:
        ValueError: when ``in_channels`` is not a positive multiple of 4.

    Example::

        >>> block = GHPA(24, 32)
        >>> block(torch.randn(1, 24, 32, 32)).shape
        torch.Size([1, 32, 32, 32])
    """

    def __init__(self, in_channels: int, out_channels: int, param_size: tuple[int, int] = (8, 8)) -> None:
        super().__init__()
        if in_channels <= 0 or in_channels % 4:
            raise ValueError(f"GHPA in_channels must be a positive multiple of 4, got {in_channels}.")
        c = in_channels // 4
        px, py = param_size
        self.group_channels = c
        self.params_xy = nn.Parameter(torch.ones(1, c, px, py))
        self.conv_xy = _depthwise_separable(c, nn.Conv2d)
        self.params_zx = nn.Parameter(torch.ones(1, 1, c, px))
        self.conv_zx = _depthwise_separable(c, nn.Conv1d)
        self.params_zy = nn.Parameter(torch.ones(1, 1, c, py))
        self.conv_zy = _depthwise_separable(c, nn.Conv1d)
        self.dw = nn.Sequential(nn.Conv2d(c, c, 1), nn.GELU(), nn.Conv2d(c, c, kernel_size=3, padding=1, groups=c))
        self.norm1 = ChannelLayerNorm(in_channels)
        self.norm2 = ChannelLayerNorm(in_channels)
        self.ldw = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, kernel_size=3, padding=1, groups=in_channels),
            nn.GELU(),
            nn.Conv2d(in_channels, out_channels, 1),
        )

    def attention(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The attention maps of the first three groups at a given spatial size.

        Args:
            height: feature-map height.
            width: feature-map width.

        Returns:
            The height-width map ``(1, C/4, height, width)``, the channel-height map ``(1, C/4, height, 1)`` and the
            channel-width map ``(1, C/4, 1, width)``; the last two broadcast over the axis they do not span.
        """
        c = self.group_channels
        a_xy = self.conv_xy(F.interpolate(self.params_xy, size=[height, width], mode="bilinear", align_corners=True))
        # (1, 1, C, n) resized to (C, L) is a 1D signal of C channels for the depthwise separable Conv1d
        p_zx = F.interpolate(self.params_zx, size=[c, height], mode="bilinear", align_corners=True)
        p_zy = F.interpolate(self.params_zy, size=[c, width], mode="bilinear", align_corners=True)
        a_zx = self.conv_zx(p_zx[0]).unsqueeze(3)
        a_zy = self.conv_zy(p_zy[0]).unsqueeze(2)
        return a_xy, a_zx, a_zy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: input ``(B, in_channels, H, W)``.

        Returns:
            ``(B, out_channels, H, W)``.
        """
        x1, x2, x3, x4 = torch.split(self.norm1(x), self.group_channels, dim=1)
        a_xy, a_zx, a_zy = self.attention(x.shape[2], x.shape[3])
        x = torch.cat([x1 * a_xy, x2 * a_zx, x3 * a_zy, self.dw(x4)], dim=1)
        return self.ldw(self.norm2(x))
