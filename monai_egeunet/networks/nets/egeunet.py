from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Union

import torch
import torch.nn.functional as F
from torch import nn

from monai_egeunet.networks.blocks import GAB, GHPA

__all__ = ["EGEUNet", "EgeUNet", "Egeunet"]


def _upsample(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return F.interpolate(x, size=[height, width], mode="bilinear", align_corners=True)


def _upsample_by_products(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """:func:`_upsample` of a map with few channels (the mask logits) as two matrix products.

    Bilinear resizing is separable: ``Y = A X B^T``, with ``A`` and ``B`` the interpolation matrices of the two axes.
    Each is obtained by resizing an identity matrix along one axis, so its weights are those ``F.interpolate`` uses.
    The values are the same; the backward pass is two more matrix products, where the backward kernel of
    ``F.interpolate`` scatters every output gradient into the few input planes of a mask one element at a time
    (``benchmarks/bench_training.py`` measures the training step).
    """
    rows = torch.eye(x.shape[2], dtype=x.dtype, device=x.device)[None, None]
    cols = torch.eye(x.shape[3], dtype=x.dtype, device=x.device)[None, None]
    a = F.interpolate(rows, size=[height, x.shape[2]], mode="bilinear", align_corners=True)[0, 0]
    b = F.interpolate(cols, size=[width, x.shape[3]], mode="bilinear", align_corners=True)[0, 0]
    return torch.matmul(torch.matmul(a, x), b.t())


def _conv3x3(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=1, padding=1))


class EGEUNet(nn.Module):
    """EGE-UNet: an Efficient Group Enhanced UNet for skin lesion segmentation (Ruan et al., MICCAI 2023).

    A six-stage 2D UNet of about 50 K parameters. The three shallow stages on each side are plain 3x3
    convolutions; the three deep ones are :class:`~monai_egeunet.networks.blocks.GHPA` blocks. Each decoder
    stage predicts a mask from its features (``gt_conv1`` ... ``gt_conv5``, deepest first), and a
    :class:`~monai_egeunet.networks.blocks.GAB` fuses the skip connection with the previous bridge output and
    that mask. All interpolations are bilinear with ``align_corners=True`` as in the original release.

    Compared with the original release, this class follows MONAI's conventions: it returns logits (apply
    sigmoid or softmax yourself, e.g. with ``monai.transforms.Activations``); in eval mode, or with
    ``deep_supervision=False``, it returns one tensor ``(B, out_channels, H, W)``; in training mode with deep
    supervision it returns the list ``[main, side_1, ..., side_5]`` that
    :class:`monai.losses.DeepSupervisionLoss` takes, the side outputs ordered from the finest decoder stage
    (H/2) to the coarsest (H/32) and upsampled to ``(H, W)``. Every flag combination runs. Parameter names and
    initialisation are those of the original release, so its checkpoints load with
    ``load_state_dict(..., strict=True)`` for the default configuration (see
    :func:`monai_egeunet.networks.load_weights`).

    There is one forward pass, the original computation, for training, inference, TorchScript, tracing and
    export; it runs on channels-last feature maps (the same function in another memory layout, faster on the CPU),
    and the side outputs are resized to the input size by two matrix products (the same bilinear interpolation, with
    a cheaper backward pass for training).
    For inference with a trained network, :func:`monai_egeunet.networks.fuse_for_inference` builds an equivalent
    module that computes what depends only on the weights once.

    Args:
        spatial_dims: number of spatial dimensions; only 2 is supported.
        in_channels: number of input channels (>= 1).
        out_channels: number of output channels (classes); 1 for a binary lesion mask with sigmoid, more for
            softmax. With more than one, the decoder masks and side outputs have ``out_channels`` channels too.
        features: channels of the six stages; each a positive multiple of 4. Default: (8, 16, 24, 32, 48, 64).
        deep_supervision: return the five side outputs in training mode.
        bridge: fuse skip connections with GAB; when False, skip connections are added as they are.

    Raises:
        ValueError: for an unsupported ``spatial_dims``, a non-positive channel count, or ``features`` that are
            not six positive multiples of 4; in ``forward``, for a height or width that is not a multiple of 32.

    Example::

        >>> net = EGEUNet(spatial_dims=2, in_channels=3, out_channels=1).eval()
        >>> net(torch.rand(1, 3, 256, 256)).shape
        torch.Size([1, 1, 256, 256])
        >>> len(net.train()(torch.rand(2, 3, 256, 256)))
        6
    """

    #: height and width must be multiples of this: five 2x poolings
    size_divisor = 32

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 1,
        features: Sequence[int] = (8, 16, 24, 32, 48, 64),
        deep_supervision: bool = True,
        bridge: bool = True,
    ) -> None:
        super().__init__()
        if spatial_dims != 2:
            raise ValueError(f"EGEUNet is a 2D network: spatial_dims must be 2, got {spatial_dims}.")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels} and {out_channels}.")
        c = tuple(int(f) for f in features)
        if len(c) != 6 or any(f <= 0 or f % 4 for f in c):
            raise ValueError(f"features must be six positive multiples of 4, got {tuple(features)}.")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.features = c
        self.deep_supervision = deep_supervision
        self.bridge = bridge

        self.encoder1 = _conv3x3(in_channels, c[0])
        self.encoder2 = _conv3x3(c[0], c[1])
        self.encoder3 = _conv3x3(c[1], c[2])
        self.encoder4 = nn.Sequential(GHPA(c[2], c[3]))
        self.encoder5 = nn.Sequential(GHPA(c[3], c[4]))
        self.encoder6 = nn.Sequential(GHPA(c[4], c[5]))

        # GABk bridges stage k: deeper features c[k] into the skip connection c[k-1]
        for k in range(1, 6):
            self.add_module(f"GAB{k}", GAB(c[k], c[k - 1], mask_channels=out_channels))
        # gt_convN predicts the mask of the Nth decoder stage, deepest first
        for n, ch in enumerate((c[4], c[3], c[2], c[1], c[0]), start=1):
            self.add_module(f"gt_conv{n}", nn.Sequential(nn.Conv2d(ch, out_channels, 1)))

        self.decoder1 = nn.Sequential(GHPA(c[5], c[4]))
        self.decoder2 = nn.Sequential(GHPA(c[4], c[3]))
        self.decoder3 = nn.Sequential(GHPA(c[3], c[2]))
        self.decoder4 = _conv3x3(c[2], c[1])
        self.decoder5 = _conv3x3(c[1], c[0])
        for k in range(5):
            self.add_module(f"ebn{k + 1}", nn.GroupNorm(4, c[k]))
            self.add_module(f"dbn{k + 1}", nn.GroupNorm(4, c[4 - k]))
        self.final = nn.Conv2d(c[0], out_channels, kernel_size=1)
        self.apply(self._init_weights)

    def train(self, mode: bool = True) -> EGEUNet:
        """Sets training mode, as ``nn.Module.train``: this module and every submodule get ``training = mode``.

        MONAI's workflows call ``train()`` or ``eval()`` on every iteration (``SupervisedEvaluator`` through
        ``eval_mode``), and ``nn.Module.train``, one recursive call and one ``nn.Module.__setattr__`` per submodule,
        is a noticeable share of a small network's forward pass. This walks the submodules once and sets the flag
        directly; a submodule with a ``train`` of its own (a replaced or wrapped layer) is left to it.

        Args:
            mode: True for training mode, False for evaluation mode.

        Returns:
            This module.

        Raises:
            ValueError: when ``mode`` is not a bool.
        """
        if not isinstance(mode, bool):
            raise ValueError(f"training mode is expected to be boolean, got {mode!r}")
        self.__dict__["training"] = mode
        stack = list(self._modules.values())
        while stack:
            module = stack.pop()
            if module is None:
                continue
            if type(module).train is not nn.Module.train:
                module.train(mode)
                continue
            module.__dict__["training"] = mode
            stack.extend(module._modules.values())
        return self

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # the original release's initialisation (He-normal on fan-out per group); training results depend on it
        if isinstance(m, nn.Conv1d):
            m.weight.data.normal_(0, math.sqrt(2.0 / (m.kernel_size[0] * m.out_channels)))
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                m.bias.data.zero_()

    def _check_size(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"EGEUNet expects a (B, C, H, W) tensor, got shape {list(x.shape)}.")
        h, w = x.shape[2], x.shape[3]
        if h % 32 != 0 or w % 32 != 0 or h == 0 or w == 0:
            raise ValueError(
                f"EGEUNet needs height and width that are multiples of 32, got {h}x{w}: pad the image "
                f"(monai.transforms.DivisiblePad(k=32)), resize it, or use sliding-window inference "
                f"(monai.inferers.SlidingWindowInferer with roi_size (256, 256))."
            )

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, list[torch.Tensor]]:
        """
        Args:
            x: input ``(B, in_channels, H, W)``, H and W multiples of 32.

        Returns:
            Logits ``(B, out_channels, H, W)``; in training mode with deep supervision, the list
            ``[main, side_1, ..., side_5]`` of logits of that shape, side outputs from finest to coarsest.

        Raises:
            ValueError: when the input is not 4D or its height or width is not a multiple of 32.
        """
        self._check_size(x)
        h, w = x.shape[2], x.shape[3]
        # the same function in any memory layout; channels-last, which the convolutions, poolings and layer norms
        # keep, makes them several times faster on the CPU (oneDNN) and the layer norms copy-free
        x = x.contiguous(memory_format=torch.channels_last)
        t1 = F.gelu(F.max_pool2d(self.ebn1(self.encoder1(x)), 2, 2))
        t2 = F.gelu(F.max_pool2d(self.ebn2(self.encoder2(t1)), 2, 2))
        t3 = F.gelu(F.max_pool2d(self.ebn3(self.encoder3(t2)), 2, 2))
        t4 = F.gelu(F.max_pool2d(self.ebn4(self.encoder4(t3)), 2, 2))
        t5 = F.gelu(F.max_pool2d(self.ebn5(self.encoder5(t4)), 2, 2))
        t6 = F.gelu(self.encoder6(t5))

        out5 = F.gelu(self.dbn1(self.decoder1(t6)))
        mask5 = self.gt_conv1(out5)
        if self.bridge:
            t5 = self.GAB5(t6, t5, mask5)
        out5 = out5 + t5

        out4 = F.gelu(_upsample(self.dbn2(self.decoder2(out5)), t4.shape[2], t4.shape[3]))
        mask4 = self.gt_conv2(out4)
        if self.bridge:
            t4 = self.GAB4(t5, t4, mask4)
        out4 = out4 + t4

        out3 = F.gelu(_upsample(self.dbn3(self.decoder3(out4)), t3.shape[2], t3.shape[3]))
        mask3 = self.gt_conv3(out3)
        if self.bridge:
            t3 = self.GAB3(t4, t3, mask3)
        out3 = out3 + t3

        out2 = F.gelu(_upsample(self.dbn4(self.decoder4(out3)), t2.shape[2], t2.shape[3]))
        mask2 = self.gt_conv4(out2)
        if self.bridge:
            t2 = self.GAB2(t3, t2, mask2)
        out2 = out2 + t2

        out1 = F.gelu(_upsample(self.dbn5(self.decoder5(out2)), t1.shape[2], t1.shape[3]))
        mask1 = self.gt_conv5(out1)
        if self.bridge:
            t1 = self.GAB1(t2, t1, mask1)
        out1 = out1 + t1

        out0 = _upsample(self.final(out1), h, w)
        if self.training and self.deep_supervision:
            return [out0] + [_upsample_by_products(m, h, w) for m in (mask1, mask2, mask3, mask4, mask5)]
        return out0


EgeUNet = Egeunet = EGEUNet
