"""Helpers for the inference-only fast paths of EGE-UNet's blocks.

On a 2-core CPU at batch 1 the network is dominated by per-operator costs rather than arithmetic: a few hundred
operators, most on maps of a few thousand values. Two costs matter: the fixed cost of each call (tens of
microseconds for a oneDNN convolution with its layout reorders), and each start of worker threads (an OpenMP
parallel region): a few microseconds on an idle machine, but up to a scheduler time slice (about 8 ms measured here)
when another process holds the second core. The fast paths cut both: fewer operators, folded weights, cached
parameter-only maps, and single-threaded element-wise formulations below PyTorch's grain size (32768 values), where
oneDNN, GEMM, ``F.layer_norm`` and ``F.gelu`` calls would start threads.

They are taken only in inference (see :func:`use_inference_path`); training, autograd, TorchScript, tracing and ONNX
export always run the plain path, which mirrors the original release operator by operator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ParameterSnapshotCache",
    "center_",
    "channels_last_layer_norm",
    "channels_last_pointwise",
    "depthwise_conv3x3",
    "max_pool_2x2",
    "pointwise_conv",
    "rows_linear",
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


def channels_last_layer_norm(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float
) -> torch.Tensor:
    """Layer norm over the last dim of ``x`` ``(B, H, W, C)``; returns a contiguous ``(B, H, W, C)`` tensor.

    ``F.layer_norm`` always starts worker threads; on small maps (below PyTorch's grain size of 32768 values) the
    same arithmetic as single-threaded element-wise operators needs none, which matters on a loaded machine where
    every thread launch may wait for a time slice.
    """
    c = x.shape[-1]
    if x.numel() >= 32768:
        return F.layer_norm(x.contiguous(), (c,), weight, bias, eps)
    z = torch.sub(x, x.mean(-1, keepdim=True), out=torch.empty(x.shape, dtype=x.dtype, device=x.device))
    z.mul_(z.square().mean(-1, keepdim=True).add_(eps).rsqrt_())
    if weight is None:
        return z if bias is None else z.add_(bias)
    return torch.addcmul(bias, z, weight, out=z) if bias is not None else z.mul_(weight)


def _tiny_pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    # a product and a sum over channels: below PyTorch's grain size these run single-threaded, where a GEMM call
    # starts worker threads (which, on a loaded machine, may each wait for a time slice)
    cout, cin = weight.shape[0], weight.shape[1]
    y = (x.unsqueeze(1) * weight.reshape(1, cout, cin, 1, 1)).sum(2)
    return y if bias is None else y.add_(bias.view(1, cout, 1, 1))


def rows_linear(rows: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``rows @ weight_t + bias`` for ``rows`` ``(N, Cin)`` (rows may be strided), ``weight_t`` ``(Cin, Cout)``.

    A matrix product through BLAS, or, when tiny (below PyTorch's grain size), a thread-free product and sum.
    """
    n, cin = rows.shape
    cout = weight_t.shape[1]
    if n * cin * cout < 32768:
        y = (rows.unsqueeze(2) * weight_t).sum(1)
        return y if bias is None else y.add_(bias)
    return torch.mm(rows, weight_t) if bias is None else torch.addmm(bias, rows, weight_t)


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
    if b * cout * cin * h * w < 32768:
        return _tiny_pointwise(x, weight, bias)
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
    if b * cout * cin * h * w < 32768:
        return _tiny_pointwise(x, weight, bias).contiguous()
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
    """A depthwise 3x3 convolution with zero padding ``dilation`` ("same" size), choosing the kernel by size.

    Small maps (below PyTorch's grain size of 32768 values): nine shifted multiply-adds over the valid regions, which
    give the same sums (zero padding contributes nothing) single-threaded, where a oneDNN call starts worker threads
    three times (layout reorders and the convolution). Larger maps: ``F.conv2d``.

    Args:
        x: input ``(B, C, H, W)``.
        weight: ``(C, 1, 3, 3)``.
        bias: ``(C,)`` or None.
        dilation: dilation (and padding) of the convolution.
    """
    b, c, h, w = x.shape
    if x.numel() >= 32768:
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


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 2, 2)`` for even height and width, as two element-wise maxima of strided views.

    Gives the same values (a maximum is exact); the pooling kernel of ``F.max_pool2d`` also computes indices and is
    several times slower on channel-first CPU tensors.
    """
    y = torch.maximum(x[:, :, :, 0::2], x[:, :, :, 1::2])
    return torch.maximum(y[:, :, 0::2], y[:, :, 1::2])


class ParameterSnapshotCache:
    """Tensors derived from a module's parameters, kept for inference and never reused once stale.

    Each entry keeps a private copy of the values of the parameters it was computed from and is reused only while
    they are all element-wise equal (a few hundred numbers per block: cheap next to recomputing). So
    ``load_state_dict``, an optimiser step, an in-place edit through ``.data`` (which does not bump the version
    counter), replacing a parameter, or ``.to()``/``.double()`` can never give stale results. Entries are keyed
    (e.g. by spatial size, dtype and device); the oldest is dropped first.

    Args:
        max_entries: number of entries kept.
    """

    def __init__(self, max_entries: int = 8) -> None:
        self.max_entries = max_entries
        self._entries: dict[tuple, tuple[list[torch.Tensor], tuple[torch.Tensor, ...]]] = {}

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
        if len(snapshot) == len(sources) and all(
            s.shape == p.shape and torch.equal(s, p) for s, p in zip(snapshot, sources)
        ):
            return value
        self._entries.pop(key, None)
        return None

    def put(self, key: tuple, sources: list[torch.Tensor], value: tuple[torch.Tensor, ...]) -> None:
        while key not in self._entries and len(self._entries) >= self.max_entries:
            self._entries.pop(next(iter(self._entries)), None)
        self._entries[key] = ([p.detach().clone() for p in sources], tuple(v.detach() for v in value))
