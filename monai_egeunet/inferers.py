"""Test-time augmentation by flips for any MONAI inferer (``SlidingWindowInferer`` in the bundle)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.inferers import Inferer

__all__ = ["FlipTTAInferer"]


class FlipTTAInferer(Inferer):
    """Runs ``inferer`` on the image and on its flips, and averages the sigmoid probabilities.

    Each flipped prediction is flipped back before averaging. The result is returned as logits (the logit of the
    mean probability), so the workflow's postprocessing (sigmoid, threshold) stays the same whether test-time
    augmentation is on or off. MONAI's ``TestTimeAugmentation`` runs random transforms through the whole data
    pipeline and reports their spread; a fixed set of flips around the inferer is all a 2D binary segmentation
    needs, and each flip costs one more pass of ``inferer``.

    Args:
        inferer: the inferer to augment, e.g. ``SlidingWindowInferer``.
        spatial_axes: the flips, each a tuple of spatial axes (0 is the first spatial axis); default horizontal,
            vertical and both.
        enabled: False runs ``inferer`` alone (the option's off position in a bundle config).
        eps: probabilities are clamped to ``[eps, 1 - eps]`` before the logit.

    Raises:
        ValueError: for an empty flip or an axis that is not a spatial axis of the input.

    Example::

        >>> inferer = FlipTTAInferer(SlidingWindowInferer(roi_size=(256, 256)))  # doctest: +SKIP
        >>> logits = inferer(images, network)
    """

    def __init__(
        self,
        inferer: Inferer | Callable[..., torch.Tensor],
        spatial_axes: Sequence[Sequence[int]] = ((0,), (1,), (0, 1)),
        enabled: bool = True,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.inferer = inferer
        self.spatial_axes = [tuple(int(a) for a in axes) for axes in spatial_axes]
        if any(not axes for axes in self.spatial_axes):
            raise ValueError(f"each flip needs at least one axis, got {spatial_axes}")
        self.enabled = enabled
        self.eps = eps

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        """
        Args:
            inputs: ``(B, C, *spatial)`` batch.
            network: the network (or any callable) the inner inferer runs.
            args, kwargs: passed to the inner inferer.

        Returns:
            Logits of the shape the inner inferer gives.
        """
        logits = self.inferer(inputs, network, *args, **kwargs)
        if not self.enabled or not self.spatial_axes:
            return logits
        n_spatial = inputs.ndim - 2
        for axes in self.spatial_axes:
            if any(not 0 <= a < n_spatial for a in axes):
                raise ValueError(f"flip axes {axes} are not spatial axes of a {n_spatial}D input")
        prob = torch.sigmoid(logits.float())
        for axes in self.spatial_axes:
            dims = [a + 2 for a in axes]
            flipped = self.inferer(torch.flip(inputs, dims), network, *args, **kwargs)
            prob += torch.sigmoid(torch.flip(flipped, dims).float())
        prob /= 1 + len(self.spatial_axes)
        return torch.logit(prob, eps=self.eps).to(logits.dtype)
