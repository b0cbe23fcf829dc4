from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ChannelLayerNorm", "channel_layer_norm", "channel_layer_norm_across_planes"]


def channel_layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """Layer-normalises each spatial position of a channel-first ``x`` over its channels.

    Args:
        x: a ``(B, C, *spatial)`` tensor.
        weight: per-channel scale, ``C`` values.
        bias: per-channel shift, ``C`` values.
        eps: added to the (biased) variance inside the square root.

    Returns:
        ``(x - mean) / sqrt(var + eps) * weight + bias``, mean and variance over the channels of each position;
        same shape as ``x``.

    Example::

        >>> x = torch.randn(2, 8, 16, 16)
        >>> channel_layer_norm(x, torch.ones(8), torch.zeros(8), 1e-6).mean(1).abs().max() < 1e-5
        tensor(True)
    """
    # F.layer_norm normalises the last axis: the channels, once moved there. On the channels-last maps EGEUNet
    # computes with, the moved view is contiguous and the whole norm, forward and backward, is one fused kernel
    last = x.dim() - 1
    to_last = [0] + list(range(2, last + 1)) + [1]
    to_first = [0, last] + list(range(1, last))
    return F.layer_norm(x.permute(to_last), [weight.shape[0]], weight, bias, eps).permute(to_first)


def channel_layer_norm_across_planes(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> torch.Tensor:
    """:func:`channel_layer_norm` computed by reductions across the channel planes, for few channels.

    With fewer channels than a SIMD vector holds (8 floats), ``F.layer_norm``'s kernel, which works one row of
    channels at a time, is slow; means over the channel axis are vectorised over positions instead. It is also the
    form exported to ONNX: ONNX's ``LayerNormalization`` normalises trailing axes only, so the channel-last form
    exports as two ``Transpose`` nodes around it at every norm, which cost ONNX Runtime more than these reductions
    over axis 1, with or without its blocked (NCHWc) convolution layout. Its shapes come from Python ints, so the
    export computes none of them at run time.

    Args:
        x: a ``(B, C, *spatial)`` tensor.
        weight: per-channel scale, ``C`` values.
        bias: per-channel shift, ``C`` values.
        eps: added to the (biased) variance inside the square root.

    Returns:
        The same values as :func:`channel_layer_norm` (up to rounding).

    Example::

        >>> x, w, b = torch.randn(2, 5, 16, 16), torch.rand(5), torch.randn(5)
        >>> y = channel_layer_norm_across_planes(x, w, b, 1e-6)
        >>> torch.allclose(y, channel_layer_norm(x, w, b, 1e-6), atol=1e-5)
        True
    """
    shape = [-1] + [1] * (x.dim() - 2)
    z = x - x.mean(1, keepdim=True)
    z = z * torch.rsqrt(z.square().mean(1, keepdim=True) + eps)
    return torch.addcmul(bias.view(shape), z, weight.view(shape))


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
        if self.num_channels < 8:
            return channel_layer_norm_across_planes(x, self.weight, self.bias, self.eps)
        if not torch.jit.is_scripting():  # TorchScript cannot compile the exporter's flag
            if torch.onnx.is_in_onnx_export():
                return channel_layer_norm_across_planes(x, self.weight, self.bias, self.eps)
        return channel_layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}"
