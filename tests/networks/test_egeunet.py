from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DeepSupervisionLoss, DiceCELoss
from monai.networks import eval_mode
from parameterized import parameterized

from monai_egeunet import EGEUNet
from monai_egeunet.networks.nets.egeunet import _upsample_by_products
from tests.utils import fixture_network


# ---- the original computation, operator by operator, reading the weights by the original release's names ----


def _ref_layer_norm(x, p, name, eps=1e-6):
    # the original's channels_first LayerNorm
    u = x.mean(1, keepdim=True)
    s = (x - u).pow(2).mean(1, keepdim=True)
    x = (x - u) / torch.sqrt(s + eps)
    return p[f"{name}.weight"][:, None, None] * x + p[f"{name}.bias"][:, None, None]


def _ref_conv(x, p, name, **kwargs):
    return F.conv2d(x, p[f"{name}.weight"], p[f"{name}.bias"], **kwargs)


def _ref_dw_separable(x, p, name, conv):
    c = x.shape[1]
    x = conv(x, p[f"{name}.0.weight"], p[f"{name}.0.bias"], padding=1, groups=c)
    return conv(F.gelu(x), p[f"{name}.2.weight"], p[f"{name}.2.bias"])


def _ref_ghpa(x, p, name):
    x = _ref_layer_norm(x, p, f"{name}.norm1")
    x1, x2, x3, x4 = torch.chunk(x, 4, dim=1)
    c = x1.shape[1]
    params_xy = F.interpolate(p[f"{name}.params_xy"], size=x1.shape[2:4], mode="bilinear", align_corners=True)
    x1 = x1 * _ref_dw_separable(params_xy, p, f"{name}.conv_xy", F.conv2d)
    x2 = x2.permute(0, 3, 1, 2)
    params_zx = F.interpolate(p[f"{name}.params_zx"], size=x2.shape[2:4], mode="bilinear", align_corners=True)
    x2 = x2 * _ref_dw_separable(params_zx.squeeze(0), p, f"{name}.conv_zx", F.conv1d).unsqueeze(0)
    x2 = x2.permute(0, 2, 3, 1)
    x3 = x3.permute(0, 2, 1, 3)
    params_zy = F.interpolate(p[f"{name}.params_zy"], size=x3.shape[2:4], mode="bilinear", align_corners=True)
    x3 = x3 * _ref_dw_separable(params_zy.squeeze(0), p, f"{name}.conv_zy", F.conv1d).unsqueeze(0)
    x3 = x3.permute(0, 2, 1, 3)
    x4 = _ref_conv(x4, p, f"{name}.dw.0")
    x4 = _ref_conv(F.gelu(x4), p, f"{name}.dw.2", padding=1, groups=c)
    x = _ref_layer_norm(torch.cat([x1, x2, x3, x4], dim=1), p, f"{name}.norm2")
    x = _ref_conv(x, p, f"{name}.ldw.0", padding=1, groups=x.shape[1])
    return _ref_conv(F.gelu(x), p, f"{name}.ldw.2")


def _ref_gab(xh, xl, mask, p, name):
    xh = _ref_conv(xh, p, f"{name}.pre_project")
    xh = F.interpolate(xh, size=[xl.size(2), xl.size(3)], mode="bilinear", align_corners=True)
    xh = torch.chunk(xh, 4, dim=1)
    xl = torch.chunk(xl, 4, dim=1)
    groups = []
    for i, d in enumerate((1, 2, 5, 7)):
        g = _ref_layer_norm(torch.cat((xh[i], xl[i], mask), dim=1), p, f"{name}.g{i}.0")
        groups.append(_ref_conv(g, p, f"{name}.g{i}.1", padding=d, dilation=d, groups=g.shape[1]))
    x = _ref_layer_norm(torch.cat(groups, dim=1), p, f"{name}.tail_conv.0")
    return _ref_conv(x, p, f"{name}.tail_conv.1")


def _ref_egeunet(x, p):
    """The original release's forward in training mode: ``[final, side outputs from the deepest]``, logits."""

    def gn(x, name):
        return F.group_norm(x, 4, p[f"{name}.weight"], p[f"{name}.bias"], eps=1e-5)

    def up(x, factor):
        return F.interpolate(x, scale_factor=(factor, factor), mode="bilinear", align_corners=True)

    t1 = F.gelu(F.max_pool2d(gn(_ref_conv(x, p, "encoder1.0", padding=1), "ebn1"), 2, 2))
    t2 = F.gelu(F.max_pool2d(gn(_ref_conv(t1, p, "encoder2.0", padding=1), "ebn2"), 2, 2))
    t3 = F.gelu(F.max_pool2d(gn(_ref_conv(t2, p, "encoder3.0", padding=1), "ebn3"), 2, 2))
    t4 = F.gelu(F.max_pool2d(gn(_ref_ghpa(t3, p, "encoder4.0"), "ebn4"), 2, 2))
    t5 = F.gelu(F.max_pool2d(gn(_ref_ghpa(t4, p, "encoder5.0"), "ebn5"), 2, 2))
    t6 = F.gelu(_ref_ghpa(t5, p, "encoder6.0"))
    out5 = F.gelu(gn(_ref_ghpa(t6, p, "decoder1.0"), "dbn1"))
    gt5 = _ref_conv(out5, p, "gt_conv1.0")
    t5 = _ref_gab(t6, t5, gt5, p, "GAB5")
    out5 = torch.add(out5, t5)
    out4 = F.gelu(up(gn(_ref_ghpa(out5, p, "decoder2.0"), "dbn2"), 2))
    gt4 = _ref_conv(out4, p, "gt_conv2.0")
    t4 = _ref_gab(t5, t4, gt4, p, "GAB4")
    out4 = torch.add(out4, t4)
    out3 = F.gelu(up(gn(_ref_ghpa(out4, p, "decoder3.0"), "dbn3"), 2))
    gt3 = _ref_conv(out3, p, "gt_conv3.0")
    t3 = _ref_gab(t4, t3, gt3, p, "GAB3")
    out3 = torch.add(out3, t3)
    out2 = F.gelu(up(gn(_ref_conv(out3, p, "decoder4.0", padding=1), "dbn4"), 2))
    gt2 = _ref_conv(out2, p, "gt_conv4.0")
    t2 = _ref_gab(t3, t2, gt2, p, "GAB2")
    out2 = torch.add(out2, t2)
    out1 = F.gelu(up(gn(_ref_conv(out2, p, "decoder5.0", padding=1), "dbn5"), 2))
    gt1 = _ref_conv(out1, p, "gt_conv5.0")
    t1 = _ref_gab(t2, t1, gt1, p, "GAB1")
    out1 = torch.add(out1, t1)
    out0 = up(_ref_conv(out1, p, "final"), 2)
    return [out0] + [up(g, f) for g, f in ((gt5, 32), (gt4, 16), (gt3, 8), (gt2, 4), (gt1, 2))]


def _perturbed_net(seed: int = 0) -> EGEUNet:
    """The default EGEUNet with every parameter moved off its initial value (GHPA's maps start at 1, norms at 1/0)."""
    torch.manual_seed(seed)
    net = EGEUNet()
    with torch.no_grad():
        for p in net.parameters():
            scale = max(p.std().item(), 0.1) if p.numel() > 1 else 0.1
            p.add_(torch.randn_like(p) * 0.1 * scale)
    return net

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

    def test_train_and_eval_set_every_submodule_as_nn_module_does(self):
        class KeepsEval(torch.nn.GroupNorm):
            # a replaced layer with a train() of its own (e.g. frozen statistics): it decides for itself
            def train(self, mode: bool = True):
                return super().train(False)

        net, twin = EGEUNet(), EGEUNet()
        net.dbn2 = KeepsEval(4, 32)
        twin.dbn2 = KeepsEval(4, 32)
        for mode in (False, True, False, True):
            assert net.train(mode) is net
            torch.nn.Module.train(twin, mode)
            flags = {name: m.training for name, m in net.named_modules()}
            assert flags == {name: m.training for name, m in twin.named_modules()}
            assert set(flags.values()) == {True, False} if mode else set(flags.values()) == {False}
        assert not net.dbn2.training
        net.eval()
        assert not any(m.training for m in net.modules())
        with pytest.raises(ValueError, match="boolean"):
            net.train("yes")

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


class TestGradients:
    def test_float64_outputs_and_gradients_match_the_original_computation(self):
        """The training path's outputs and every parameter's gradient, against the original written op by op."""
        net = _perturbed_net().double().train()
        x = torch.randn(2, 3, 64, 96, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        weights = [torch.rand(2, 1, 64, 96, dtype=torch.float64) for _ in range(6)]
        outputs = net(x)
        loss = sum((o * w).sum() for o, w in zip(outputs, weights))
        grads = torch.autograd.grad(loss, list(net.parameters()))

        params = {n: p.detach().clone().requires_grad_() for n, p in net.named_parameters()}
        ref = _ref_egeunet(x, params)
        # ours: [main, finest side, ..., coarsest]; the reference lists the side outputs deepest first
        ref = [ref[0]] + ref[:0:-1]
        ref_loss = sum((o * w).sum() for o, w in zip(ref, weights))
        ref_grads = torch.autograd.grad(ref_loss, list(params.values()))
        for ours, theirs in zip(outputs, ref):
            torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
        for name, g, r in zip(params, grads, ref_grads):
            torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-10, msg=lambda m, name=name: f"{name}: {m}")

    @parameterized.expand(
        [((1, 1), (32, 32)), ((2, 3), (64, 96)), ((8, 8), (256, 256)), ((7, 4), (7, 4)), ((5, 9), (3, 2))]
    )
    def test_side_output_resize_is_bilinear_interpolation(self, size, target):
        # the side outputs' resize by matrix products: values and gradients of F.interpolate's bilinear resize
        x = torch.randn(2, 2, *size, dtype=torch.float64, requires_grad=True)
        weight = torch.randn(2, 2, *target, dtype=torch.float64)
        ours = _upsample_by_products(x, *target)
        theirs = F.interpolate(x, size=list(target), mode="bilinear", align_corners=True)
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
        (g_ours,) = torch.autograd.grad((ours * weight).sum(), x)
        (g_theirs,) = torch.autograd.grad((theirs * weight).sum(), x)
        torch.testing.assert_close(g_ours, g_theirs, rtol=1e-12, atol=1e-12)

    def test_gradients_reach_the_input(self):
        # e.g. saliency maps of a frozen network in eval mode
        net = _perturbed_net().eval()
        x = torch.rand(1, 3, 64, 64, requires_grad=True)
        net(x).sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0


class TestOriginalCompatibility:
    """The fixture holds the original release's float64 outputs for perturbed weights (see ../shared/README.md)."""

    def _net(self):
        return fixture_network()

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
