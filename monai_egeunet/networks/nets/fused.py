"""The inference form of a trained EGE-UNet: :func:`fuse_for_inference` and the :class:`FusedEGEUNet` it builds."""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from monai_egeunet.networks.blocks import GAB, GHPA
from monai_egeunet.networks.checkpoint import unwrap
from monai_egeunet.networks.nets.egeunet import EGEUNet

__all__ = ["FusedEGEUNet", "fuse_for_inference"]


def _frozen(module: nn.Module) -> nn.Module:
    """A copy of ``module`` in eval mode whose parameters are buffers: same values, own memory, no gradients.

    The buffers are left out of ``state_dict()``: what is derived from them is computed when the fused form is
    built, so loading other values into them would leave it inconsistent (fuse the network again instead).
    """
    module = copy.deepcopy(module).eval()
    for sub in module.modules():
        for name, p in list(sub._parameters.items()):
            del sub._parameters[name]
            if p is not None:
                sub.register_buffer(name, p.detach().clone(), persistent=False)
    return module


def _upsample(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return F.interpolate(x, size=[height, width], mode="bilinear", align_corners=True)


def _pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A 1x1 convolution of a channels-last ``(B, C, H, W)`` map as one matrix product over its channels."""
    return F.linear(x.permute(0, 2, 3, 1), weight, bias).permute(0, 3, 1, 2)


def _max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 2, 2)`` for even sizes as two maxima of strided views: the same values, without the
    pooling kernel's indices and its slow channels-last path."""
    x = torch.maximum(x[:, :, :, 0::2], x[:, :, :, 1::2])
    return torch.maximum(x[:, :, 0::2], x[:, :, 1::2])


def _add_shifted_taps(
    out: torch.Tensor, padded: torch.Tensor, taps: Sequence[tuple[int, tuple[tuple[int, int], ...], torch.Tensor]],
    pad: int,
) -> torch.Tensor:
    """Adds to ``out`` ``(B, N, G, H, W)`` the off-centre taps of depthwise convolutions of the planes of ``padded``,
    a contiguous ``(B, N, G, H + 2 pad, W + 2 pad)`` tensor (the maps in its interior, zeros on its border), two
    groups a call.

    Each tap is ``(first group i, ((dy, dx) of group i, (dy, dx) of group i + 1), weights (1, 2, G, 1, 1))``: the
    window of group ``j`` shifted by its ``(dy, dx)`` times its weights. The two windows lie a fixed distance apart
    in memory (positive: no shift is wider than the border), so one strided view holds both. Taps whose windows both
    lie wholly on the border add nothing and are skipped.

    Returns:
        ``out``, added to in place.
    """
    b, n, g, hp, wp = padded.shape
    h, w, base = hp - 2 * pad, wp - 2 * pad, padded.storage_offset()
    for i, offsets, weight in taps:
        if all(abs(dy) >= h or abs(dx) >= w for dy, dx in offsets):
            continue
        s0, s1 = (base + (i + j) * g * hp * wp + (pad + dy) * wp + pad + dx for j, (dy, dx) in enumerate(offsets))
        window = padded.as_strided((b, 2, g, h, w), (n * g * hp * wp, s1 - s0, hp * wp, wp, 1), s0)
        out[:, i : i + 2].addcmul_(window, weight)
    return out


class _FusedGHPA(nn.Module):
    """A :class:`GHPA` block with ``norm1``'s affine folded into the attention maps and the fourth group's
    pointwise convolution, and the maps computed once per spatial size."""

    def __init__(self, block: GHPA, max_sizes: int) -> None:
        super().__init__()
        c = block.group_channels
        self.group_channels = c
        self.max_sizes = max_sizes
        # what the maps are computed from: a frozen copy, so later changes to ``block`` cannot reach them
        self.source = _frozen(block)
        self.eps1 = block.norm1.eps
        self.eps2 = block.norm2.eps
        self._maps: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._fold()

    def _fold(self) -> None:
        # (z g + b) a = z (g a) + (b a) for the three attended groups; W (z g + b) + c = (W diag(g)) z + (W b + c)
        split = 3 * self.group_channels
        g, b = self.source.norm1.weight, self.source.norm1.bias
        w = self.source.dw[0].weight.flatten(1)
        self.scale, self.shift = g[:split], b[:split]
        self.pw_weight = w * g[split:]
        self.pw_bias = torch.addmv(self.source.dw[0].bias, w, b[split:])
        self._maps.clear()

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        # fold again from the moved or cast copies: folding before a cast to float64 would keep float32 rounding
        result = super()._apply(fn, recurse)
        self._fold()
        return result

    def maps(self, height: int, width: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scale, shift)`` of the attended groups at a size, ``(height, width, 3 C/4)`` each, computed once."""
        key = (height, width, like.dtype, like.device)
        entry = self._maps.get(key)
        if entry is None:
            c = self.group_channels
            a_xy, a_zx, a_zy = self.source.attention(height, width)
            maps = torch.cat(
                [a_xy, a_zx.expand(1, c, height, width), a_zy.expand(1, c, height, width)], dim=1
            )[0].permute(1, 2, 0)
            entry = ((maps * self.scale).contiguous(), (maps * self.shift).contiguous())
            if len(self._maps) >= self.max_sizes:
                self._maps.popitem(last=False)
            self._maps[key] = entry
        return entry

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels, height, width = x.shape[1], x.shape[2], x.shape[3]
        split = 3 * self.group_channels
        scale, shift = self.maps(height, width, x)
        z = F.layer_norm(x.permute(0, 2, 3, 1), (channels,), None, None, self.eps1)  # (B, H, W, C)
        attended = torch.addcmul(shift, z[..., :split], scale)
        dw = self.source.dw[2]
        d = F.gelu(F.linear(z[..., split:], self.pw_weight, self.pw_bias)).permute(0, 3, 1, 2)
        d = F.conv2d(d, dw.weight, dw.bias, padding=1, groups=self.group_channels).permute(0, 2, 3, 1)
        norm2 = self.source.norm2
        y = F.layer_norm(torch.cat([attended, d], dim=3), (channels,), norm2.weight, norm2.bias, self.eps2)
        ldw, proj = self.source.ldw[0], self.source.ldw[2]
        y = F.gelu(F.conv2d(y.permute(0, 3, 1, 2), ldw.weight, ldw.bias, padding=1, groups=channels))
        return _pointwise(y, proj.weight.flatten(1), proj.bias)


class _FusedGAB(nn.Module):
    """A :class:`GAB` bridge computed on channel-first planes, with its tail layer norm applied after the tail's
    pointwise convolution.

    The four groups ``[xh_i, xl_i, mask]`` are gathered by one concatenation into the interior of a zero-bordered
    ``(B, 4, G, H + 2p, W + 2p)`` map and layer-normalised there in place (reductions across the channel planes,
    vectorised over positions, where ``F.layer_norm`` would run one short row per position). Each group's dilated
    depthwise convolution is then a sum of shifted multiply-adds over those planes, one per kernel tap, the zero
    border standing for the convolution's zero padding; two groups share each multiply-add
    (:func:`_add_shifted_taps`). This spares the layout copies on the way in and out that oneDNN's depthwise
    convolutions, fastest on channels-last maps, would need here, and their fixed cost per call, which the few
    channels of a group do not amortise; ``benchmarks/bench_depthwise.py`` compares the two bridge by bridge.

    For the tail, with ``y`` centred over its channels and ``r = 1 / std``,
    ``W ((y r) g + b) + c = (W diag(g) y) r + (W b + c)``: the projection runs on the centred map and the scaling
    by ``r`` on its ``low_channels`` outputs.
    """

    def __init__(self, block: GAB) -> None:
        super().__init__()
        source = _frozen(block)
        self.pre_project = source.pre_project
        self.groups = nn.ModuleList([source.g0, source.g1, source.g2, source.g3])
        self.tail = source.tail_conv
        self.group_eps = source.g0[0].eps
        self.eps = self.tail[0].eps
        self.pad = max(max(group[1].padding) for group in self.groups)
        self._fold()

    def _fold(self) -> None:
        norms = [group[0] for group in self.groups]
        convs = [group[1] for group in self.groups]
        self.group_weight = torch.stack([n.weight for n in norms]).view(1, 4, -1, 1, 1)
        self.group_bias = torch.stack([n.bias for n in norms]).view(1, 4, -1, 1, 1)
        norm, conv = self.tail[0], self.tail[1]
        w = conv.weight.flatten(1)
        self.tail_weight = w * norm.weight
        self.tail_bias = torch.addmv(conv.bias, w, norm.bias).view(1, -1, 1, 1)
        # each kernel tap but the centre as (first group of a pair, the pair's (row, column) offsets, weights);
        # the centre tap, at the same place in every group (size-keeping odd kernels), of all four groups at once
        self.taps: list[tuple[int, tuple[tuple[int, int], ...], torch.Tensor]] = []
        for i in (0, 2):
            pair = convs[i : i + 2]
            kh, kw = pair[0].kernel_size
            for a in range(kh):
                for b in range(kw):
                    offsets = tuple((a * c.dilation[0] - c.padding[0], b * c.dilation[1] - c.padding[1]) for c in pair)
                    if offsets[0] != (0, 0):
                        weight = torch.stack([c.weight[:, 0, a, b] for c in pair]).view(1, 2, -1, 1, 1)
                        self.taps.append((i, offsets, weight))
        self.centre = torch.stack([c.weight[:, 0, c.kernel_size[0] // 2, c.kernel_size[1] // 2] for c in convs])
        self.centre = self.centre.view(1, 4, -1, 1, 1)
        self.conv_bias = torch.stack([c.bias for c in convs]).view(1, 4, -1, 1, 1)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        result = super()._apply(fn, recurse)
        self._fold()
        return result

    def forward(self, xh: torch.Tensor, xl: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pre = self.pre_project
        xh = _upsample(_pointwise(xh, pre.weight.flatten(1), pre.bias), xl.shape[2], xl.shape[3])
        b, c, h, w = xl.shape
        q, k, p = c // 4, mask.shape[1], self.pad
        padded = xl.new_zeros((b, 4, 2 * q + k, h + 2 * p, w + 2 * p))
        z = padded[..., p : p + h, p : p + w]
        # group i is [xh_i, xl_i, mask], channel-first whatever the inputs' layout
        masks = mask.reshape(b, 1, k, h, w).expand(b, 4, k, h, w)
        torch.cat([xh.reshape(b, 4, q, h, w), xl.reshape(b, 4, q, h, w), masks], dim=2, out=z)
        z.sub_(z.mean(2, keepdim=True))
        z.mul_(z.square().mean(2, keepdim=True).add_(self.group_eps).rsqrt_())
        torch.addcmul(self.group_bias, z, self.group_weight, out=z)
        y = _add_shifted_taps(torch.addcmul(self.conv_bias, z, self.centre), padded, self.taps, p).view(b, -1, h, w)
        y.sub_(y.mean(1, keepdim=True))
        r = (y * y).mean(1, keepdim=True).add_(self.eps).rsqrt_()
        out = torch.matmul(self.tail_weight, y.view(b, y.shape[1], h * w)).view(b, -1, h, w)
        return torch.addcmul(self.tail_bias, out, r, out=torch.empty_like(out, memory_format=torch.channels_last))


class FusedEGEUNet(nn.Module):
    """The inference form of a trained :class:`EGEUNet`: the same function, with what depends only on the weights
    computed ahead.

    Built once by :func:`fuse_for_inference` from a trained network, it computes the same logits
    ``(B, out_channels, H, W)`` as that network in eval mode, for any height and width that are multiples of 32,
    with fewer operators:

    * each GHPA's attention maps, with its first layer norm's scale and shift folded in, are computed once per
      spatial size (on the first input of that size; ``sizes`` computes them at construction) instead of on every
      call; its fourth group's pointwise convolution absorbs that layer norm's affine;
    * each GAB normalises its four groups together on channel-first planes, runs their dilated depthwise
      convolutions as shifted multiply-adds over those planes, and its tail layer norm's affine is folded into the
      tail's pointwise convolution;
    * pointwise convolutions are matrix products over the channels of the channels-last maps, and 2x2 max pooling
      is two element-wise maxima.

    It holds no parameters: every tensor is a buffer copied from the network when it is built (none is in its
    ``state_dict()``), so it cannot go stale and cannot be trained. Changing the network afterwards (training on,
    ``load_state_dict``, in-place edits) does not change this module: fuse again to follow such changes. It moves
    like any module (``.to(device)``, ``.double()``; the per-size maps are then computed again), always runs in
    eval mode without autograd, and gives what the network gives in eval mode: the main output only, never the
    deep-supervision side outputs. Export the plain :class:`EGEUNet` (TorchScript, ONNX), not this module.

    Args:
        net: a trained :class:`EGEUNet` (a ``DataParallel``/``DistributedDataParallel`` wrapper is unwrapped).
        sizes: ``(height, width)`` pairs whose attention maps to compute at construction.
        max_sizes: number of spatial sizes whose maps are kept; the oldest is dropped first.

    Raises:
        TypeError: when ``net`` is not an :class:`EGEUNet`.
        ValueError: when a size in ``sizes`` is not a pair of positive multiples of 32, or ``max_sizes < 1``.

    Example::

        >>> net = EGEUNet(spatial_dims=2, in_channels=3, out_channels=1)  # trained, in practice
        >>> fused = fuse_for_inference(net)
        >>> x = torch.rand(1, 3, 256, 256)
        >>> with torch.no_grad():
        ...     torch.allclose(fused(x), net.eval()(x), rtol=1e-4, atol=1e-3)
        True
    """

    def __init__(self, net: EGEUNet, sizes: Sequence[tuple[int, int]] = (), max_sizes: int = 16) -> None:
        super().__init__()
        net = unwrap(net)
        if not isinstance(net, EGEUNet):
            raise TypeError(f"fuse_for_inference takes an EGEUNet, got {type(net).__name__}.")
        if max_sizes < 1:
            raise ValueError(f"max_sizes must be >= 1, got {max_sizes}.")
        self.in_channels = net.in_channels
        self.out_channels = net.out_channels
        self.features = net.features
        self.bridge = net.bridge
        self.size_divisor = net.size_divisor
        self.encoders = nn.ModuleList([_frozen(getattr(net, f"encoder{k}")[0]) for k in (1, 2, 3)])
        self.encoder_ghpa = nn.ModuleList([_FusedGHPA(getattr(net, f"encoder{k}")[0], max_sizes) for k in (4, 5, 6)])
        self.decoder_ghpa = nn.ModuleList([_FusedGHPA(getattr(net, f"decoder{k}")[0], max_sizes) for k in (1, 2, 3)])
        self.decoders = nn.ModuleList([_frozen(getattr(net, f"decoder{k}")[0]) for k in (4, 5)])
        self.ebn = nn.ModuleList([_frozen(getattr(net, f"ebn{k}")) for k in range(1, 6)])
        self.dbn = nn.ModuleList([_frozen(getattr(net, f"dbn{k}")) for k in range(1, 6)])
        # bridges and mask heads from the deepest decoder stage to the finest
        bridges = [_FusedGAB(getattr(net, f"GAB{k}")) for k in range(5, 0, -1)] if net.bridge else []
        self.bridges = nn.ModuleList(bridges)
        self.mask_heads = nn.ModuleList([_frozen(getattr(net, f"gt_conv{n}")[0]) for n in range(1, 6)])
        self.final = _frozen(net.final)
        nn.Module.train(self, False)
        for height, width in sizes:
            self._check_size(height, width)
            self.prepare(height, width)

    def _check_size(self, height: int, width: int) -> None:
        d = self.size_divisor
        if height <= 0 or width <= 0 or height % d or width % d:
            raise ValueError(
                f"FusedEGEUNet needs height and width that are multiples of {d}, got {height}x{width}: pad the image "
                f"(monai.transforms.DivisiblePad(k={d})), resize it, or use sliding-window inference "
                f"(monai.inferers.SlidingWindowInferer with roi_size (256, 256))."
            )

    def _ghpa_blocks(self) -> list[_FusedGHPA]:
        return [*self.encoder_ghpa, *self.decoder_ghpa]  # type: ignore[list-item]

    @torch.no_grad()
    def prepare(self, height: int, width: int) -> None:
        """Computes the attention maps for inputs of ``height`` x ``width`` now rather than on first use.

        Args:
            height: input height, a multiple of 32.
            width: input width, a multiple of 32.
        """
        like = self.final.weight
        # encoder4-6 run at 1/8, 1/16, 1/32 of the input size, decoder1-3 at 1/32, 1/32, 1/16
        for block, k in zip(self._ghpa_blocks(), (8, 16, 32, 32, 32, 16)):
            block.maps(height // k, width // k, like)

    def train(self, mode: bool = True) -> FusedEGEUNet:
        """Stays in eval mode; ``train(True)`` raises: this form cannot be trained.

        ``train(False)`` (``eval()``) sets only this module's flag: its submodules were put in eval mode when it was
        built and no computation here depends on the mode, while MONAI's evaluators call ``eval()`` on every
        iteration (``eval_mode``), where walking the submodules would cost more than some of the layers.

        Raises:
            RuntimeError: when ``mode`` is True.
        """
        if mode:
            raise RuntimeError(
                "FusedEGEUNet is an inference-only form of a trained EGEUNet: train the EGEUNet and fuse it again."
            )
        self.training = False
        return self

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: input ``(B, in_channels, H, W)``, H and W multiples of 32.

        Returns:
            Logits ``(B, out_channels, H, W)``.

        Raises:
            ValueError: when the input is not 4D or its height or width is not a multiple of 32.
        """
        if x.dim() != 4:
            raise ValueError(f"FusedEGEUNet expects a (B, C, H, W) tensor, got shape {list(x.shape)}.")
        h, w = x.shape[2], x.shape[3]
        self._check_size(h, w)
        x = x.contiguous(memory_format=torch.channels_last)
        skips = []
        for k in range(5):
            block = self.encoders[k] if k < 3 else self.encoder_ghpa[k - 3]
            x = F.gelu(_max_pool_2x2(self.ebn[k](block(x))))
            skips.append(x)
        t = F.gelu(self.encoder_ghpa[2](x))  # t6
        out = t
        for k in range(5):
            block = self.decoder_ghpa[k] if k < 3 else self.decoders[k - 3]
            out = self.dbn[k](block(out))
            skip = skips[4 - k]
            if k > 0:
                out = _upsample(out, skip.shape[2], skip.shape[3])
            out = F.gelu(out)
            if self.bridge:
                head = self.mask_heads[k]
                mask = _pointwise(out, head.weight.flatten(1), head.bias)
                skip = self.bridges[k](t, skip, mask)
            out = out + skip
            t = skip
        return _upsample(_pointwise(out, self.final.weight.flatten(1), self.final.bias), h, w)


def fuse_for_inference(net: EGEUNet, sizes: Sequence[tuple[int, int]] = ()) -> FusedEGEUNet:
    """Builds the inference form of a trained EGE-UNet, an explicit step taken once after training or loading.

    Args:
        net: a trained :class:`EGEUNet` (a ``DataParallel``/``DistributedDataParallel`` wrapper is unwrapped).
        sizes: ``(height, width)`` pairs of the inputs to come whose per-size tensors to compute now (others are
            computed on first use).

    Returns:
        A :class:`FusedEGEUNet`: the same function as ``net`` in eval mode, without trainable parameters, and
        independent of ``net`` from then on.

    Raises:
        TypeError: when ``net`` is not an :class:`EGEUNet`.

    Example::

        >>> net = EGEUNet()
        >>> net.load_state_dict(torch.load("models/model.pt", weights_only=True))  # doctest: +SKIP
        >>> fused = fuse_for_inference(net, sizes=[(256, 256)])
        >>> fused(torch.rand(2, 3, 256, 256)).shape
        torch.Size([2, 1, 256, 256])
    """
    return FusedEGEUNet(net, sizes=sizes)
