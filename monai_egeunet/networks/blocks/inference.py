"""Helpers for the inference-only fast paths of EGE-UNet's blocks.

On a CPU at batch 1 the network is dominated by per-operator overhead rather than arithmetic: it runs about 150
small operators, many on feature maps of a few thousand values. The fast paths cut the number of operators and
pick cheaper kernels for the same arithmetic. They are taken only in inference (see :func:`use_inference_path`);
training, autograd, TorchScript, tracing and ONNX export always run the plain path, which mirrors the original
release operator by operator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ParameterSnapshotCache", "max_pool_2x2", "pointwise_conv", "use_inference_path"]


def use_inference_path(module: nn.Module) -> bool:
    """Whether ``module`` may take its inference-only fast path (folded weights, cached attention maps).

    True in eval mode when autograd does not record the parameters (``torch.no_grad``, ``torch.inference_mode``, or
    frozen parameters), and not while tracing, exporting (ONNX, ``torch.export``) or compiling: a graph built then
    must compute everything from the parameters and the input, for any input size.
    """
    if module.training:
        return False
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling():
        return False
    # with autograd recording, folded or cached (detached) tensors would cut the gradient to the parameters
    return not (torch.is_grad_enabled() and any(p.requires_grad for p in module.parameters()))


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
        y = torch.matmul(w2, x3) if bias is None else torch.baddbmm(bias.view(1, cout, 1), w2.expand(b, cout, cin), x3)
    return y.view(b, cout, h, w)


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 2, 2)`` for even height and width, as two element-wise maxima of strided views.

    Gives the same values (a maximum is exact); the pooling kernel of ``F.max_pool2d`` also computes indices and is
    several times slower on channel-first CPU tensors.
    """
    y = torch.maximum(x[:, :, :, 0::2], x[:, :, :, 1::2])
    return torch.maximum(y[:, :, 0::2], y[:, :, 1::2])


class ParameterSnapshotCache:
    """Tensors derived from a module's parameters, kept for inference and never reused once stale.

    Each entry remembers a private copy of the values of the parameters it was computed from (one flat tensor) and
    is reused only while they are element-wise equal. So ``load_state_dict``, an optimiser step, an in-place edit
    through ``.data`` (which does not bump the version counter) or ``.to()``/``.double()`` can never give stale
    results. Entries are keyed (e.g. by spatial size, dtype and device); the oldest is dropped first.

    Args:
        max_entries: number of entries kept.
    """

    def __init__(self, max_entries: int = 8) -> None:
        self.max_entries = max_entries
        self._entries: dict[tuple, tuple[torch.Tensor, tuple[torch.Tensor, ...]]] = {}

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _flat(sources: list[torch.Tensor]) -> torch.Tensor:
        # a new tensor (cat copies), so later in-place edits of the parameters cannot reach it
        return torch.cat([p.detach().reshape(-1) for p in sources])

    def get(self, key: tuple, sources: list[torch.Tensor]) -> tuple[torch.Tensor, ...] | None:
        """The entry for ``key`` if it was computed from parameters equal to ``sources`` now, else None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        snapshot, value = entry
        current = self._flat(sources)
        if snapshot.shape == current.shape and torch.equal(snapshot, current):
            return value
        del self._entries[key]
        return None

    def put(self, key: tuple, sources: list[torch.Tensor], value: tuple[torch.Tensor, ...]) -> None:
        if key not in self._entries and len(self._entries) >= self.max_entries:
            self._entries.pop(next(iter(self._entries)))
        self._entries[key] = (self._flat(sources), tuple(v.detach() for v in value))
