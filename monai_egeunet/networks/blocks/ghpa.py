from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from monai_egeunet.networks.blocks.inference import (
    CachedInferenceModule,
    ParameterSnapshotCache,
    channels_last_pointwise,
    use_inference_path,
)
from monai_egeunet.networks.blocks.layernorm import ChannelLayerNorm

__all__ = ["GHPA", "HadamardAttentionCache"]


def _depthwise_separable(channels: int, conv: type[nn.Module]) -> nn.Sequential:
    """Depthwise 3-wide convolution, GELU, pointwise convolution (``conv`` is ``nn.Conv1d`` or ``nn.Conv2d``)."""
    return nn.Sequential(
        conv(channels, channels, kernel_size=3, padding=1, groups=channels), nn.GELU(), conv(channels, channels, 1)
    )


# (submodule path, parameter name) of every parameter the cached inference tensors are computed from; read through
# the module dictionaries because ``named_parameters()`` costs tens of microseconds per call
_CACHE_SOURCES = (
    *(((), f"params_{axes}") for axes in ("xy", "zx", "zy")),
    *(((f"conv_{axes}", i), n) for axes in ("xy", "zx", "zy") for i in ("0", "2") for n in ("weight", "bias")),
    (("norm1",), "weight"),
    (("norm1",), "bias"),
    (("dw", "0"), "weight"),
    (("dw", "0"), "bias"),
)


class HadamardAttentionCache(ParameterSnapshotCache):
    """Keeps, for inference, what one :class:`GHPA` derives from its parameters, per spatial size, dtype and device.

    An entry holds the attention maps with the first layer norm's scale and shift folded in, and the folded weights
    of the pointwise convolution of the fourth group. It is reused only while every parameter it was computed from
    still holds the same values (see :class:`~monai_egeunet.networks.blocks.inference.ParameterSnapshotCache`).

    Args:
        max_entries: number of spatial sizes kept; the oldest is dropped first.
    """


class GHPA(CachedInferenceModule):
    """Group multi-axis Hadamard Product Attention (GHPA) block of EGE-UNet.

    The input is layer-normalised over channels and split into four channel groups. The first three are multiplied
    element-wise (Hadamard product) by learnable attention maps on the height-width, channel-height and
    channel-width axes: a small learnable tensor, bilinearly resized to the feature map and refined by a depthwise
    separable convolution. The fourth group goes through a depthwise separable convolution only. The groups are
    concatenated, normalised again and mixed by a depthwise 3x3 convolution, GELU and a pointwise convolution
    that maps to ``out_channels``.

    The attention maps depend only on the parameters and the spatial size, not on the image, so in inference
    (eval mode, autograd off) they are computed once per size, with ``norm1``'s affine folded in, and reused while
    the parameters keep their values (see :class:`HadamardAttentionCache` and :meth:`_forward_inference`); training,
    autograd, TorchScript and exports run the original computation.

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

    # the cache is an eager-mode inference aid: scripted modules always compute the maps
    __jit_ignored_attributes__ = ["cache"]

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
        self.cache = HadamardAttentionCache()

    def attention(self, height: int, width: int) -> torch.Tensor:
        """Attention maps for the first three groups at a given spatial size.

        Args:
            height: feature-map height.
            width: feature-map width.

        Returns:
            A ``(1, 3 * C/4, height, width)`` tensor: the height-width, channel-height and channel-width maps
            stacked along channels.
        """
        c = self.group_channels
        a_xy = self.conv_xy(F.interpolate(self.params_xy, size=[height, width], mode="bilinear", align_corners=True))
        # resizing (1, 1, C, n) to (C, L) keeps the channel axis as is, so a 1D resize of (1, C, n) is the same map
        a_zx = self.conv_zx(F.interpolate(self.params_zx[0], size=[height], mode="linear", align_corners=True))
        a_zy = self.conv_zy(F.interpolate(self.params_zy[0], size=[width], mode="linear", align_corners=True))
        a_zx = a_zx.view(1, c, height, 1).expand(1, c, height, width)
        a_zy = a_zy.view(1, c, 1, width).expand(1, c, height, width)
        return torch.cat([a_xy, a_zx, a_zy], dim=1)

    @torch.jit.unused
    def _cache_sources(self) -> list[torch.Tensor]:
        """The parameters :meth:`_folded` depends on, looked up afresh (a replaced parameter is seen)."""
        sources = []
        for path, name in _CACHE_SOURCES:
            module: nn.Module = self
            for part in path:
                module = module._modules[part]  # type: ignore[assignment]
            sources.append(module._parameters[name])
        return sources  # type: ignore[return-value]

    @torch.jit.unused
    def _folded(self, height: int, width: int, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per-size inference tensors ``(scale, shift, weight, bias)``, computed once and cached.

        ``norm1``'s affine ``z * g + b`` followed by the product with the maps ``m`` is ``z * (g m) + (b m)``: one
        multiply-add with ``scale = g m`` and ``shift = b m`` (stored channels-last, ``(1, H, W, 3C/4)``). For the
        fourth group, ``norm1``'s affine followed by the pointwise convolution ``W (z * g + b) + c`` is one matrix
        product with weight ``W diag(g)`` (stored transposed, ``(C/4, C/4)``) and bias ``W b + c``.
        """
        sources = self._cache_sources()
        key = (height, width, like.dtype, like.device)
        entry = self.cache.get(key, sources)
        if entry is None:
            split = 3 * self.group_channels
            g, b = self.norm1.weight, self.norm1.bias
            maps = self.attention(height, width)[0].permute(1, 2, 0)  # (H, W, 3C/4)
            w = self.dw[0].weight.flatten(1)
            entry = (
                (maps * g[:split]).unsqueeze(0).contiguous(),
                (maps * b[:split]).unsqueeze(0).contiguous(),
                (w * g[split:]).t().contiguous(),
                torch.addmv(self.dw[0].bias, w, b[split:]),
            )
            self.cache.put(key, sources, entry)
        return entry

    @torch.jit.unused
    def _forward_inference(self, x: torch.Tensor) -> torch.Tensor:
        """Same function as :meth:`_forward_plain`, computed channels-last with fewer, cheaper operators.

        With the channels of each position contiguous, each layer norm is one ``F.layer_norm`` call, the pointwise
        convolutions are matrix products without copies, and the depthwise convolutions skip oneDNN's layout
        reorders. ``norm1``'s affine is folded into the attention maps and the fourth group's pointwise convolution
        (:meth:`_folded`). Returns a channel-first ``(B, out_channels, H, W)`` tensor.
        """
        b, channels, height, width = x.shape
        c = self.group_channels
        split = 3 * c
        scale, shift, w1, b1 = self._folded(height, width, x)
        z = F.layer_norm(x.permute(0, 2, 3, 1), (channels,), None, None, self.norm1.eps)  # (B, H, W, C)
        att = torch.addcmul(shift, z[..., :split], scale)
        d = torch.addmm(b1, z.view(-1, channels)[:, split:], w1).view(b, height, width, c)
        dw = self.dw[2]
        d = F.conv2d(F.gelu(d).permute(0, 3, 1, 2), dw.weight, dw.bias, padding=1, groups=c)
        y = torch.cat([att, d.permute(0, 2, 3, 1)], dim=3)
        y = F.layer_norm(y, (channels,), self.norm2.weight, self.norm2.bias, self.norm2.eps)
        ldw, proj = self.ldw[0], self.ldw[2]
        y = F.gelu(F.conv2d(y.permute(0, 3, 1, 2), ldw.weight, ldw.bias, padding=1, groups=channels))
        return channels_last_pointwise(y, proj.weight, proj.bias)

    @torch.jit.unused
    def _forward_eager(self, x: torch.Tensor) -> torch.Tensor:
        if use_inference_path(self):
            return self._forward_inference(x)
        return self._forward_plain(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return self._forward_plain(x)
        return self._forward_eager(x)

    def _forward_plain(self, x: torch.Tensor) -> torch.Tensor:
        """The original release's computation, operator by operator (training, autograd, scripting, export)."""
        x = self.norm1(x)
        maps = self.attention(x.shape[2], x.shape[3])
        split = 3 * self.group_channels
        x = torch.cat([x[:, :split] * maps, self.dw(x[:, split:])], dim=1)
        return self.ldw(self.norm2(x))
