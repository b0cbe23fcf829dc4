from __future__ import annotations

import io

import pytest
import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss
from monai.networks import eval_mode
from parameterized import parameterized

from monai_egeunet import EGEUNet
from tests.utils import load_fixture

# (kwargs, input shape, expected output shape)
TEST_CASES = [
    [{}, (1, 3, 256, 256), (1, 1, 256, 256)],
    [{"in_channels": 1}, (2, 1, 64, 96), (2, 1, 64, 96)],
    [{"in_channels": 4, "out_channels": 3}, (1, 4, 128, 64), (1, 3, 128, 64)],
    [{"features": (4, 8, 12, 16, 20, 24)}, (2, 3, 32, 32), (2, 1, 32, 32)],
    [{"deep_supervision": False, "bridge": False}, (1, 3, 96, 160), (1, 1, 96, 160)],
    [{"out_channels": 2, "bridge": False}, (1, 3, 64, 64), (1, 2, 64, 64)],
]
FLAGS = [[ds, br] for ds in (True, False) for br in (True, False)]
ILLEGAL = [
    [{"spatial_dims": 3}],
    [{"in_channels": 0}],
    [{"out_channels": 0}],
    [{"features": (8, 16, 24, 32, 48)}],
    [{"features": (8, 16, 24, 30, 48, 64)}],
]


class TestEGEUNet:
    @parameterized.expand(TEST_CASES)
    def test_shape(self, kwargs, input_shape, expected_shape):
        net = EGEUNet(**kwargs)
        with eval_mode(net):
            out = net(torch.randn(input_shape))
        assert isinstance(out, torch.Tensor)
        assert out.shape == expected_shape

    def test_default_parameter_count(self):
        assert sum(p.numel() for p in EGEUNet().parameters()) == 53374

    @parameterized.expand(FLAGS)
    def test_flag_combinations(self, deep_supervision, bridge):
        net = EGEUNet(deep_supervision=deep_supervision, bridge=bridge).train()
        x = torch.randn(2, 3, 64, 64)
        out = net(x)
        if deep_supervision:
            assert isinstance(out, list) and len(out) == 6
            assert all(o.shape == (2, 1, 64, 64) for o in out)
        else:
            assert isinstance(out, torch.Tensor) and out.shape == (2, 1, 64, 64)
        with eval_mode(net):
            assert net(x).shape == (2, 1, 64, 64)

    @parameterized.expand([[1], [3]])
    def test_deep_supervision_loss_and_gradients_reach_every_parameter(self, out_channels):
        torch.manual_seed(0)
        net = EGEUNet(out_channels=out_channels).train()
        x = torch.randn(2, 3, 64, 64)
        if out_channels == 1:
            target = (torch.rand(2, 1, 64, 64) > 0.5).float()
            base = DiceCELoss(sigmoid=True)
        else:
            target = torch.randint(0, out_channels, (2, 1, 64, 64))
            base = DiceCELoss(softmax=True, to_onehot_y=True)
        loss = DeepSupervisionLoss(base, weights=[1.0, 0.5, 0.4, 0.3, 0.2, 0.1])(net(x), target)
        loss.backward()
        missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
        assert not missing, f"no gradient reaches {missing}"

    def test_returns_logits(self):
        net = EGEUNet()
        # init from the original release puts GHPA params at 1: after a few perturbations logits leave [0, 1]
        with torch.no_grad():
            net.final.bias.fill_(-3.0)
        with eval_mode(net):
            out = net(torch.randn(1, 3, 64, 64))
        assert out.min() < 0

    @parameterized.expand([[(1, 3, 250, 256)], [(1, 3, 256, 100)], [(3, 256, 256)]])
    def test_bad_input_size(self, shape):
        net = EGEUNet()
        with pytest.raises(ValueError, match=r"multiples of 32|\(B, C, H, W\)") as err:
            with eval_mode(net):
                net(torch.randn(shape))
        if len(shape) == 4:
            assert f"{shape[2]}x{shape[3]}" in str(err.value)
            assert "sliding-window" in str(err.value)

    @parameterized.expand(ILLEGAL)
    def test_illegal_arguments(self, kwargs):
        with pytest.raises(ValueError):
            EGEUNet(**kwargs)

    def test_script(self):
        net = EGEUNet(out_channels=2)
        x = torch.randn(1, 3, 64, 96)
        scripted = torch.jit.script(net)
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer)
        buffer.seek(0)
        loaded = torch.jit.load(buffer)
        with eval_mode(net), eval_mode(loaded):
            torch.testing.assert_close(loaded(x), net(x), atol=1e-4, rtol=1e-4)
        loaded.train()
        assert len(loaded(x)) == 6


class TestOriginalCompatibility:
    """The fixture holds the original release's float64 outputs for perturbed weights (see ../shared/README.md)."""

    def _net(self):
        fixture = load_fixture()
        net = EGEUNet(in_channels=3, out_channels=1, features=fixture["config"]["c_list"])
        net.load_state_dict(fixture["state_dict"], strict=True)
        return net, fixture["cases"]

    def test_float64_matches_original(self):
        net, cases = self._net()
        net = net.double()
        for case in cases:
            x = case["input"].double()
            with eval_mode(net), torch.no_grad():
                out = torch.sigmoid(net(x))
            assert (out - case["output"]).abs().max().item() <= 1e-8, tuple(x.shape)
            net.train()
            with torch.no_grad():
                sides = net(x)[1:]
            # the fixture lists side outputs deepest first; ours go finest first
            for ours, ref in zip(reversed(sides), case["side_outputs"]):
                assert (torch.sigmoid(ours) - ref).abs().max().item() <= 1e-8

    @parameterized.expand([[torch.contiguous_format], [torch.channels_last]])
    def test_float32_matches_original(self, memory_format):
        net, cases = self._net()
        net = net.to(memory_format=memory_format)
        for case in cases:
            x = case["input"].contiguous(memory_format=memory_format)
            with eval_mode(net):
                out = torch.sigmoid(net(x)).double()
            assert (out - case["output"]).abs().max().item() <= 1e-3
