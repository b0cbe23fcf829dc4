"""Helpers for the inference-only fast paths of EGE-UNet's blocks.

On a 2-core CPU at batch 1 the network is dominated by per-operator costs rather than arithmetic: a few hundred
operators, most on maps of a few thousand values, each with a fixed cost of tens of microseconds (more for a oneDNN
convolution with its layout reorders). The fast paths cut the number of operators (folded weights, cached
parameter-only maps, merged kernels, in-place updates) and pick the cheaper kernel or memory layout for the same
arithmetic (GEMMs for 1x1 convolutions, strided maxima for 2x2 max pooling, channels-last where oneDNN or the
bilinear kernel would otherwise copy).

They are taken only in inference (see :func:`use_inference_path`); training, autograd, TorchScript, tracing and ONNX
export always run the plain path, which mirrors the original release operator by operator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CachedInferenceModule",
    "ParameterSnapshotCache",
    "center_",
    "channels_last_pointwise",
    "depthwise_conv3x3",
    "max_pool_2x2",
    "pointwise_conv",
    "upsample_bilinear",
    "use_inference_path",
]


def use_inference_path(module: nn.Module) -> bool:
    """Whether ``module`` may take its inference-only fast path (folded weights, cached maps, in-place updates).

    True in eval mode with autograd off (``torch.no_grad()`` or ``torch.inference_mode()``), and not while tracing,
    exporting (ONNX, ``torch.export``) or compiling: a graph built then must compute everything from the parameters
    and the input, for any input size. With autograd on (training, fine-tuning in eval mode, input gradients of a
    frozen network) the plain path runs, so every gradient is the original computation's.
    """
    if module.training or torch.is_grad_enabled():
        return False
    return not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling())


def center_(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Centres ``x`` in place over dim 2 and returns ``1 / sqrt(n * (var + eps))`` over dim 2 (keepdim).

    The first steps of a layer norm over the ``n`` channels of each group of ``(B, G, n, H, W)``: the normalised
    values are ``x * rstd * sqrt(n)``; callers fold the constant ``sqrt(n)`` into a per-channel weight. Sums instead
    of means, the ``1/n`` folded into the subtraction and ``eps`` scaled by ``n``, save three operators (and their
    thread launches) per call, and only one temporary map of ``x``'s size is allocated (fresh allocations of a few
    MB cost page faults on every call).
    """
    n = x.shape[2]
    x.sub_(x.sum(2, keepdim=True), alpha=1.0 / n)
    return x.square().sum(2, keepdim=True).add_(n * eps).rsqrt_()


def pointwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A 1x1 convolution ``(B, Cin, H, W) -> (B, Cout, H, W)``, as a matrix product when ``x`` is channel-first.

    Same arithmetic as ``F.conv2d(x, weight, bias)`` (up to rounding order); a GEMM call costs far less than a oneDNN
    convolution call on the small maps of this network. Other memory layouts (channels-last) fall back to
    ``F.conv2d``, which handles them without a copy.

    Args:
        x: input ``(B, Cin, H, W)``.
        weight: ``(Cout, Cin, 1, 1)`` or ``(Cout, Cin)``.
        bias: ``(Cout,)`` or None.
    """
    b, cin, h, w = x.shape
    cout = weight.shape[0]
    if not x.is_contiguous():
        return F.conv2d(x, weight.reshape(cout, cin, 1, 1), bias)
    w2 = weight.reshape(cout, cin)
    if b == 1:
        x2 = x.view(cin, h * w)
        y = torch.mm(w2, x2) if bias is None else torch.addmm(bias.view(cout, 1), w2, x2)
    else:
        x3 = x.view(b, cin, h * w)
        w3 = w2.expand(b, cout, cin)
        y = torch.bmm(w3, x3) if bias is None else torch.baddbmm(bias.view(1, cout, 1), w3, x3)
    return y.view(b, cout, h, w)


def channels_last_pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A 1x1 convolution of a channels-last ``x`` that returns a channel-first (contiguous) result.

    Args:
        x: input ``(B, Cin, H, W)``, channels-last (falls back to :func:`pointwise_conv` otherwise).
        weight: ``(Cout, Cin, 1, 1)`` or ``(Cout, Cin)``.
        bias: ``(Cout,)`` or None.
    """
    b, cin, h, w = x.shape
    cout = weight.shape[0]
    if not x.is_contiguous(memory_format=torch.channels_last):
        return pointwise_conv(x, weight, bias)
    w2 = weight.reshape(cout, cin)
    rows = x.permute(0, 2, 3, 1).reshape(b, h * w, cin).transpose(1, 2)  # a view: (B, Cin, HW), Cin contiguous
    if b == 1:
        y = torch.mm(w2, rows[0]) if bias is None else torch.addmm(bias.view(cout, 1), w2, rows[0])
    else:
        w3 = w2.expand(b, cout, cin)
        y = torch.bmm(w3, rows) if bias is None else torch.baddbmm(bias.view(1, cout, 1), w3, rows)
    return y.view(b, cout, h, w)


def depthwise_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int) -> torch.Tensor:
    """A depthwise 3x3 convolution with zero padding ``dilation`` ("same" size), through the cheapest kernel.

    Measured on 2 cores, 5 to 13 channels, 32 x 32 to 128 x 128 maps: oneDNN's depthwise kernel on a channel-first
    tensor pays for two layout reorders; on a channels-last copy it is 25 to 40% faster for dilations 1 and 2, but
    slower than channel-first for larger dilations, where on large maps (64 x 64 and up) nine shifted multiply-adds
    over the valid regions are as fast or faster (0.40 instead of 0.55 ms at 5 x 128 x 128). All give the same sums:
    zero padding contributes nothing.

    Args:
        x: input ``(B, C, H, W)``.
        weight: ``(C, 1, 3, 3)``.
        bias: ``(C,)`` or None.
        dilation: dilation (and padding) of the convolution.
    """
    b, c, h, w = x.shape
    if dilation <= 2:
        x = x.contiguous(memory_format=torch.channels_last)
        return F.conv2d(x, weight, bias, padding=dilation, dilation=dilation, groups=c)
    if h * w < 4096:
        return F.conv2d(x, weight, bias, padding=dilation, dilation=dilation, groups=c)
    taps = weight.reshape(c, 9)
    centre = taps[:, 4].view(1, c, 1, 1)
    out = x * centre if bias is None else torch.addcmul(bias.view(1, c, 1, 1), x, centre)
    for i in (-1, 0, 1):
        for j in (-1, 0, 1):
            di, dj = i * dilation, j * dilation
            if (i == 0 and j == 0) or abs(di) >= h or abs(dj) >= w:
                continue
            # out[y, x] += k[i, j] * in[y + di, x + dj] wherever the input position is inside the map
            target = out[:, :, max(0, -di) : h - max(0, di), max(0, -dj) : w - max(0, dj)]
            source = x[:, :, max(0, di) : h - max(0, -di), max(0, dj) : w - max(0, -dj)]
            target.addcmul_(source, taps[:, (i + 1) * 3 + (j + 1)].view(1, c, 1, 1))
    return out


def upsample_bilinear(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``F.interpolate(x, size=[height, width], mode="bilinear", align_corners=True)``, through the cheaper layout.

    PyTorch's CPU bilinear kernel works channels-last: on a channel-first input it makes two layout copies. From 16
    channels on, copying to channels-last once and keeping the channels-last result is 2 to 3 times faster (0.14
    instead of 0.36 ms for 16 x 32 x 32 to 64 x 64); below, the channel-first path is faster. Same values.
    """
    if x.shape[1] >= 16:
        x = x.contiguous(memory_format=torch.channels_last)
    return F.interpolate(x, size=[height, width], mode="bilinear", align_corners=True)


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 2, 2)`` for even height and width, as two element-wise maxima of strided views.

    Gives the same values (a maximum is exact); the pooling kernel of ``F.max_pool2d`` also computes indices and is
    several times slower on channel-first CPU tensors.
    """
    y = torch.maximum(x[:, :, :, 0::2], x[:, :, :, 1::2])
    return torch.maximum(y[:, :, 0::2], y[:, :, 1::2])


class _Snapshot:
    """The values some parameters had, and a cheap way to tell whether they still have them.

    ``views`` are flat views sharing the parameters' memory, so every in-place change (an optimiser step,
    ``load_state_dict``, an edit through ``.data``, which does not bump the version counter) shows through them;
    ``values`` is a private copy taken at snapshot time. The parameters are unchanged when each is still backed by
    the same memory with the same shape (else it was replaced, e.g. ``load_state_dict(..., assign=True)``) and the
    views still read the copied values: one concatenation and one comparison instead of one per parameter.
    """

    def __init__(self, sources: list[torch.Tensor]) -> None:
        self.identity = [(p.data_ptr(), p.shape, p.dtype) for p in sources]
        self.aliased = all(p.is_contiguous() for p in sources)
        if self.aliased:
            self.views = [p.detach().view(-1) for p in sources]
            self.values = torch.cat(self.views)  # a copy
        else:  # views would not alias: keep copies and compare each
            self.views = [p.detach().clone() for p in sources]
            self.values = torch.empty(0)

    def matches(self, sources: list[torch.Tensor]) -> bool:
        if len(sources) != len(self.identity):
            return False
        for p, (ptr, shape, dtype) in zip(sources, self.identity):
            if p.data_ptr() != ptr or p.shape != shape or p.dtype != dtype:
                return False
        if self.aliased:
            return torch.equal(torch.cat(self.views), self.values)
        return all(torch.equal(s, p) for s, p in zip(self.views, sources))


class ParameterSnapshotCache:
    """Tensors derived from a module's parameters, kept for inference and never reused once stale.

    Each entry keeps a snapshot of the values of the parameters it was computed from and is reused only while they
    are all element-wise equal to it (a few hundred numbers per block: cheap next to recomputing). So
    ``load_state_dict``, an optimiser step, an in-place edit through ``.data`` (which does not bump the version
    counter), replacing a parameter, or ``.to()``/``.double()`` can never give stale results. Entries are keyed
    (e.g. by spatial size, dtype and device); the oldest is dropped first.

    Args:
        max_entries: number of entries kept.
    """

    def __init__(self, max_entries: int = 8) -> None:
        self.max_entries = max_entries
        self._entries: dict[tuple, tuple[_Snapshot, tuple[torch.Tensor, ...]]] = {}

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple, sources: list[torch.Tensor]) -> tuple[torch.Tensor, ...] | None:
        """The entry for ``key`` if it was computed from parameters equal to ``sources`` now, else None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        snapshot, value = entry
        if snapshot.matches(sources):
            return value
        self._entries.pop(key, None)
        return None

    def put(self, key: tuple, sources: list[torch.Tensor], value: tuple[torch.Tensor, ...]) -> None:
        while key not in self._entries and len(self._entries) >= self.max_entries:
            self._entries.pop(next(iter(self._entries)), None)
        self._entries[key] = (_Snapshot(sources), tuple(v.detach() for v in value))


class CachedInferenceModule(nn.Module):
    """A module whose inference fast path keeps parameter-derived tensors in ``self.cache``
    (a :class:`ParameterSnapshotCache`, set by the subclass).

    The cache is dropped on a train/eval switch and whenever ``.to()``/``.double()``/``.cuda()`` replace the
    parameters, so it never holds on to tensors derived from the old ones.
    """

    cache: ParameterSnapshotCache

    def train(self, mode: bool = True):  # type: ignore[no-untyped-def]
        self.cache.clear()
        return super().train(mode)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        self.cache.clear()
        return super()._apply(fn, recurse)
