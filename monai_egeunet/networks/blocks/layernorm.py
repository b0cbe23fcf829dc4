from __future__ import annotations

import torch
from torch import nn

__all__ = ["ChannelLayerNorm", "channel_layer_norm", "channel_standardize"]


def channel_standardize(x: torch.Tensor, eps: float, groups: int = 1) -> torch.Tensor:
    """:func:`channel_layer_norm` without the per-channel scale and shift (those are folded elsewhere).

    Args:
        x: a ``(B, C, H, W)`` tensor.
        eps: added to the variance.
        groups: number of equal channel groups normalised independently.

    Returns:
        ``(x - mean) / sqrt(var + eps)`` over the channels of each group at each position, same shape as ``x``.
    """
    b, c, h, w = x.shape
    # a reduction over a short channel axis beats F.layer_norm (and var_mean) here: their kernels are slow for rows of
    # 5 to 50 values strided by H * W
    z = x.reshape(b, groups, c // groups, h, w)
    z = z - z.mean(2, keepdim=True)
    z = z * torch.rsqrt(z.square().mean(2, keepdim=True) + eps)
    return z.view(b, c, h, w)


def channel_layer_norm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, groups: int = 1
) -> torch.Tensor:
    """Layer-normalises each spatial position of ``x`` over its channels, separately in ``groups`` channel groups.

    Args:
        x: a ``(B, C, H, W)`` tensor.
        weight: per-channel scale, ``C`` values.
        bias: per-channel shift, ``C`` values.
        eps: added to the variance.
        groups: number of equal channel groups normalised independently (one GAB normalises its 4 groups at once).

    Returns:
        The normalised tensor, same shape as ``x``.
    """
    c = x.shape[1]
    z = channel_standardize(x, eps, groups)
    return torch.addcmul(bias.view(1, c, 1, 1), z, weight.view(1, c, 1, 1))


class ChannelLayerNorm(nn.Module):
    """Layer normalisation over the channel axis of a channel-first tensor ``(B, C, *spatial)``.

    Each spatial position is normalised across its ``C`` channels (biased variance, ``eps`` inside the square root),
    then scaled and shifted per channel. This is the ``channels_first`` ``LayerNorm`` used by EGE-UNet (and ConvNeXt);
    the parameter names ``weight`` and ``bias`` match the original release so its checkpoints load unchanged.

    Args:
        num_channels: number of channels ``C``.
        eps: added to the variance for numerical stability; the original release uses 1e-6.

    Example::

        >>> norm = ChannelLayerNorm(8)
        >>> norm(torch.randn(2, 8, 16, 16)).shape
        torch.Size([2, 8, 16, 16])
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}"
