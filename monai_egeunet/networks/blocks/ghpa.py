from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from monai_egeunet.networks.blocks.layernorm import ChannelLayerNorm

__all__ = ["GHPA", "HadamardAttentionCache"]


def _depthwise_separable(channels: int, conv: type[nn.Module]) -> nn.Sequential:
    """Depthwise 3-wide convolution, GELU, pointwise convolution (``conv`` is ``nn.Conv1d`` or ``nn.Conv2d``)."""
    return nn.Sequential(
        conv(channels, channels, kernel_size=3, padding=1, groups=channels), nn.GELU(), conv(channels, channels, 1)
    )


def _should_cache(module: nn.Module) -> bool:
    """Inference-only reuse: never while training, building a graph, tracing or exporting."""
    if module.training or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling():
        return False
    # with autograd recording, a cached (detached) map would cut the gradient to the parameters
    return not (torch.is_grad_enabled() and any(p.requires_grad for p in module.parameters()))


class HadamardAttentionCache:
    """Keeps the attention maps of one :class:`GHPA` per spatial size, dtype and device, for inference.

    An entry is reused only while every parameter it was computed from still holds the same values (compared
    element-wise against a private copy, which costs a few hundred numbers per block). So a ``load_state_dict``, an
    optimiser step, an in-place edit through ``.data``, or a ``.to()``/``.double()`` can never give stale maps.

    Args:
        max_entries: number of spatial sizes kept; the oldest is dropped first.
    """

    def __init__(self, max_entries: int = 8) -> None:
        self.max_entries = max_entries
        self._entries: dict[tuple, tuple[list[torch.Tensor], torch.Tensor]] = {}

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple, sources: list[torch.Tensor]) -> torch.Tensor | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        snapshot, value = entry
        if len(snapshot) == len(sources) and all(
            s.shape == p.shape and torch.equal(s, p) for s, p in zip(snapshot, sources)
        ):
            return value
        del self._entries[key]
        return None

    def put(self, key: tuple, sources: list[torch.Tensor], value: torch.Tensor) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.pop(next(iter(self._entries)))
        self._entries[key] = ([p.detach().clone() for p in sources], value.detach())


class GHPA(nn.Module):
    """Group multi-axis Hadamard Product Attention (GHPA) block of EGE-UNet.

    The input is layer-normalised over channels and split into four channel groups. The first three are multiplied
    element-wise (Hadamard product) by learnable attention maps on the height-width, channel-height and
    channel-width axes: a small learnable tensor, bilinearly resized to the feature map and refined by a depthwise
    separable convolution. The fourth group goes through a depthwise separable convolution only. The groups are
    concatenated, normalised again and mixed by a depthwise 3x3 convolution, GELU and a pointwise convolution
    that maps to ``out_channels``.

    The attention maps depend only on the parameters and the spatial size, not on the image, so in inference
    (eval mode, no autograd) they are computed once per size and reused; see :class:`HadamardAttentionCache`.

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
    def _attention_maybe_cached(self, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
        if not _should_cache(self):
            return self.attention(height, width)
        sources = [p for n, p in self.named_parameters() if n.startswith(("params_", "conv_"))]
        key = (height, width, like.dtype, like.device)
        maps = self.cache.get(key, sources)
        if maps is None:
            maps = self.attention(height, width)
            self.cache.put(key, sources, maps)
        return maps

    def train(self, mode: bool = True) -> GHPA:
        self.cache.clear()
        return super().train(mode)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        # .to()/.double()/.cuda() make new tensors: drop maps of the old ones rather than hold their memory
        self.cache.clear()
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        height, width = x.shape[2], x.shape[3]
        if torch.jit.is_scripting():
            maps = self.attention(height, width)
        else:
            maps = self._attention_maybe_cached(height, width, x)
        split = 3 * self.group_channels
        x = torch.cat([x[:, :split] * maps, self.dw(x[:, split:])], dim=1)
        return self.ldw(self.norm2(x))
