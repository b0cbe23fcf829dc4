"""The inference form built by ``fuse_for_inference``: same function as the trained network, frozen, parameter-free."""

from __future__ import annotations

import pytest
import torch
from monai.networks import eval_mode
from parameterized import parameterized

from monai_egeunet import EGEUNet, FusedEGEUNet, fuse_for_inference
from monai_egeunet.networks.blocks import GAB
from monai_egeunet.networks.nets.fused import _FusedGAB
from tests.utils import fixture_network


def _trained(seed: int = 0, **kwargs) -> EGEUNet:
    """An EGEUNet whose weights are off their initial values (GHPA's maps start at 1, the norms at 1 and 0)."""
    torch.manual_seed(seed)
    net = EGEUNet(**kwargs)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return net.eval()


def _plain(net: EGEUNet, x: torch.Tensor) -> torch.Tensor:
    with eval_mode(net):
        return net(x)


# (network kwargs, input shape)
CASES = [
    [{}, (1, 3, 256, 256)],
    [{}, (2, 3, 192, 320)],
    [{"in_channels": 1, "out_channels": 3}, (1, 1, 64, 96)],
    [{"features": (4, 8, 12, 16, 20, 24)}, (2, 3, 32, 64)],
    [{"bridge": False}, (1, 3, 96, 64)],
    [{"deep_supervision": False, "out_channels": 2}, (1, 3, 64, 64)],
]


class TestFusedEGEUNet:
    @parameterized.expand(CASES)
    def test_same_function_as_the_network(self, kwargs, shape):
        net = _trained(**kwargs)
        fused = fuse_for_inference(net)
        x = torch.rand(shape, generator=torch.Generator().manual_seed(2))
        out = fused(x)
        assert out.shape == (shape[0], net.out_channels, shape[2], shape[3])
        # float32: another rounding order than the plain network (float64 below is exact to 1e-10)
        torch.testing.assert_close(out, _plain(net, x), rtol=1e-3, atol=1e-3)

    @parameterized.expand([[(1, 3, 256, 256)], [(2, 3, 192, 320)]])
    def test_same_function_in_float64(self, shape):
        net = _trained().double()
        x = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
        # built from the float32 network and cast after: the folded tensors are folded again in float64
        for fused in (fuse_for_inference(net), fuse_for_inference(_trained()).double()):
            torch.testing.assert_close(fused(x), _plain(net, x), rtol=1e-10, atol=1e-10)

    def test_no_trainable_parameters_and_inference_only(self):
        net = _trained()
        fused = fuse_for_inference(net)
        assert isinstance(fused, FusedEGEUNet)
        assert list(fused.parameters()) == []
        assert not any(t.requires_grad for t in fused.buffers())
        # nothing to load into: the folded tensors are derived when it is built
        assert fused.state_dict() == {}
        with pytest.raises(RuntimeError, match="Unexpected key"):
            fused.load_state_dict(net.state_dict())
        assert not fused.training
        with pytest.raises(RuntimeError, match="inference-only"):
            fused.train()
        fused.eval()  # what eval_mode (SupervisedEvaluator) calls, on every iteration
        assert not any(m.training for m in fused.modules()), "built in eval mode throughout"
        assert fused.eval() is fused and not fused.training
        x = torch.rand(1, 3, 64, 64, requires_grad=True)
        with eval_mode(fused):
            assert not fused(x).requires_grad

    def test_changing_the_network_after_fusing_does_not_change_the_fused_form(self):
        net = _trained()
        x = torch.rand(1, 3, 96, 64, generator=torch.Generator().manual_seed(4))
        fused = fuse_for_inference(net, sizes=[(96, 64)])
        before = fused(x).clone()
        # a training step, an in-place edit through .data, and a load_state_dict of other weights
        net.train()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
        sum(o.mean() for o in net(x)).backward()
        opt.step()
        net.encoder4[0].params_xy.data.mul_(3.0)
        net.GAB1.g0[0].weight.data.fill_(2.0)
        with torch.no_grad():
            net.final.bias.add_(1.0)
        assert (_plain(net, x) - before).abs().max() > 0.1  # the network did change
        torch.testing.assert_close(fused(x), before, rtol=0, atol=0)
        net.load_state_dict(_trained(seed=5).state_dict())
        torch.testing.assert_close(fused(x), before, rtol=0, atol=0)
        # and a new size (maps computed after the changes) still follows the network as it was when fused
        y = torch.rand(1, 3, 64, 128)
        reference = fuse_for_inference(_trained())
        torch.testing.assert_close(fused(y), reference(y), rtol=0, atol=0)

    def test_sizes_computed_ahead_and_bounded(self):
        net = _trained()
        fused = FusedEGEUNet(net, sizes=[(256, 256), (64, 96)], max_sizes=2)
        blocks = [*fused.encoder_ghpa, *fused.decoder_ghpa]
        assert all(len(b._maps) == 2 for b in blocks)
        x = torch.rand(1, 3, 32, 32)
        torch.testing.assert_close(fused(x), _plain(net, x), rtol=1e-3, atol=1e-3)
        assert all(len(b._maps) == 2 for b in blocks)  # the oldest size was dropped

    def test_moves_and_casts_like_a_module(self):
        net = _trained()
        fused = fuse_for_inference(net, sizes=[(64, 64)])
        x = torch.rand(1, 3, 64, 64)
        expected = fused(x)
        fused = fused.to("cpu", torch.float64)
        assert all(len(b._maps) == 0 for b in [*fused.encoder_ghpa, *fused.decoder_ghpa])
        # float32 against float64 with perturbed weights: the project's float32 tolerance
        torch.testing.assert_close(fused(x.double()).float(), expected, rtol=1e-3, atol=1e-3)

    def test_unwraps_data_parallel(self):
        net = _trained()
        x = torch.rand(1, 3, 64, 64)
        fused = fuse_for_inference(torch.nn.DataParallel(net))
        torch.testing.assert_close(fused(x), _plain(net, x), rtol=1e-3, atol=1e-3)

    def test_illegal_arguments(self):
        with pytest.raises(TypeError, match="EGEUNet"):
            fuse_for_inference(torch.nn.Conv2d(3, 1, 1))
        with pytest.raises(ValueError, match="multiples of 32"):
            fuse_for_inference(_trained(), sizes=[(256, 250)])
        with pytest.raises(ValueError, match="max_sizes"):
            FusedEGEUNet(_trained(), max_sizes=0)

    @parameterized.expand([[(1, 3, 250, 256)], [(1, 3, 256, 100)], [(3, 256, 256)]])
    def test_bad_input_size(self, shape):
        fused = fuse_for_inference(_trained())
        with pytest.raises(ValueError, match=r"multiples of 32|\(B, C, H, W\)"):
            fused(torch.rand(shape))


class TestFusedBridge:
    """The inference form of one GAB, whose dilated depthwise convolutions are shifted multiply-adds."""

    # (dilations, kernel size, mask channels, height and width of the low-level map); at 4 x 6 the taps of
    # dilation 7 fall wholly on the zero border and are skipped
    @parameterized.expand(
        [
            [(1, 2, 5, 7), 3, 1, (16, 24)],
            [(2, 1, 5, 1), 3, 1, (16, 24)],
            [(5, 1, 1, 7), 5, 2, (16, 24)],
            [(7, 5, 3, 4), 3, 1, (4, 6)],
            [(1, 2, 5, 7), 3, 1, (1, 1)],
        ]
    )
    def test_same_function_as_the_bridge(self, dilations, kernel_size, mask_channels, size):
        torch.manual_seed(0)
        bridge = GAB(16, 8, mask_channels=mask_channels, dilations=dilations, kernel_size=kernel_size).double()
        with torch.no_grad():
            for p in bridge.parameters():
                p.add_(torch.randn_like(p) * 0.2)
        fused = _FusedGAB(bridge)
        assert len(fused.taps) == 2 * (kernel_size**2 - 1)  # per pair of groups; the four centre taps in one
        g = torch.Generator().manual_seed(4)
        h, w = size
        xh = torch.rand(2, 16, max(h // 2, 1), max(w // 2, 1), generator=g).double()
        xl = torch.rand(2, 8, h, w, generator=g).double()
        mask = torch.rand(2, mask_channels, h, w, generator=g).double()
        with torch.no_grad():
            torch.testing.assert_close(fused(xh, xl, mask), bridge(xh, xl, mask), rtol=1e-10, atol=1e-10)


class TestFusedOriginalCompatibility:
    """Against the original release's float64 outputs (``../shared/fixtures/egeunet_reference.pt``)."""

    def _net(self):
        return fixture_network()

    def test_float64_matches_original(self):
        net, cases = self._net()
        fused = fuse_for_inference(net.double())
        for case in cases:
            out = torch.sigmoid(fused(case["input"].double()))
            assert (out - case["output"]).abs().max().item() <= 1e-8, tuple(case["input"].shape)

    def test_float32_matches_original(self):
        net, cases = self._net()
        fused = fuse_for_inference(net, sizes=[tuple(c["input"].shape[2:]) for c in cases])
        for case in cases:
            out = torch.sigmoid(fused(case["input"])).double()
            assert (out - case["output"]).abs().max().item() <= 1e-3, tuple(case["input"].shape)
