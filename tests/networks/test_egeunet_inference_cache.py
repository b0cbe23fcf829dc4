"""The inference-only fast path of EGEUNet (cached GHPA attention maps, folded weights) never goes stale.

Every check compares the eval output of a network whose caches were filled before a change with the output of a
freshly constructed network loaded with the same state dict, and (where it matters) with the plain, uncached path.
"""

from __future__ import annotations

import copy
import os
import tempfile
import unittest
from pathlib import Path

import torch
from parameterized import parameterized

from monai_egeunet import EGEUNet
from monai_egeunet.networks.blocks import GAB, GHPA

QUICK = os.environ.get("QUICKTEST", "").lower() == "true"
# a narrow network keeps these tests quick; the caches work the same for any width
SMALL = (4, 8, 12, 16, 20, 24)


def _perturbed(seed: int = 0, features=SMALL) -> EGEUNet:
    """A network whose every parameter (GHPA attention tensors, layer norms...) is away from its initial value."""
    torch.manual_seed(seed)
    net = EGEUNet(features=features)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


def _fresh_output(net: EGEUNet, x: torch.Tensor) -> torch.Tensor:
    """Eval output of a new network built from scratch with ``net``'s state dict, dtype and memory."""
    fresh = EGEUNet(
        in_channels=net.in_channels,
        out_channels=net.out_channels,
        features=net.features,
        deep_supervision=net.deep_supervision,
        bridge=net.bridge,
    )
    fresh.load_state_dict(net.state_dict(), strict=True)
    fresh = fresh.to(dtype=next(net.parameters()).dtype).eval()
    with torch.no_grad():
        return fresh(x)


def _plain_output(net: EGEUNet, x: torch.Tensor) -> torch.Tensor:
    """Eval output of ``net`` through its plain path: with autograd recording nothing is cached or folded."""
    with torch.enable_grad():
        return net(x).detach()


def _eval_output(net: EGEUNet, x: torch.Tensor) -> torch.Tensor:
    net.eval()
    with torch.no_grad():
        return net(x)


def _ghpas(net: EGEUNet) -> list[GHPA]:
    return [m for m in net.modules() if isinstance(m, GHPA)]


def _cached_blocks(net: EGEUNet) -> list:
    return [m for m in net.modules() if isinstance(m, (GHPA, GAB))]


def _assert_same(test: unittest.TestCase, actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-6) -> None:
    test.assertEqual(actual.dtype, expected.dtype)
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


def _assert_close_to_scale(test: unittest.TestCase, actual: torch.Tensor, expected: torch.Tensor, tol: float) -> None:
    """Max abs difference within ``tol`` times the output's magnitude. The logits reach 20 to 40 here, and the
    perturbed weights amplify float32 rounding: kernels that sum in another order (channels-last oneDNN, ONNX
    Runtime) differ by 1e-5 to 3e-4 of that, also in the plain path. Exactness is checked in float64."""
    test.assertEqual(actual.shape, expected.shape)
    scale = max(1.0, expected.abs().max().item())
    test.assertLessEqual((actual - expected).abs().max().item(), tol * scale)


def _load_other_weights(net: EGEUNet) -> None:
    net.load_state_dict(_perturbed(seed=1).state_dict(), strict=True)


def _load_other_weights_assign(net: EGEUNet) -> None:
    # assign=True replaces the parameter objects instead of copying into them
    net.load_state_dict(_perturbed(seed=2).state_dict(), strict=True, assign=True)


def _optimizer_step(net: EGEUNet) -> None:
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x = torch.rand(2, 3, 64, 64)
    target = (torch.rand(2, 1, 64, 64) > 0.5).float()
    loss = sum(torch.nn.functional.binary_cross_entropy_with_logits(o, target) for o in net(x))
    loss.backward()
    opt.step()
    net.eval()


def _edit_attention_tensor_via_data(net: EGEUNet) -> None:
    # .data edits do not bump the version counter: only comparing values can see them
    net.encoder5[0].params_xy.data.mul_(1.5).add_(0.1)


def _edit_attention_conv_via_data(net: EGEUNet) -> None:
    net.decoder2[0].conv_zy[0].weight.data.add_(0.2)


def _edit_folded_norm_via_data(net: EGEUNet) -> None:
    # norm1's affine and dw[0] are folded into cached tensors too
    net.encoder4[0].norm1.weight.data.mul_(-0.7)
    net.decoder1[0].dw[0].bias.data.add_(0.3)


def _edit_gab_norm_via_data(net: EGEUNet) -> None:
    net.GAB3.tail_conv[0].weight.data.mul_(1.3)
    net.GAB2.g1[0].bias.data.add_(0.2)


def _edit_gab_convs_via_data(net: EGEUNet) -> None:
    # GAB5 runs the merged 15x15 kernel (small maps), GAB1 the merged 5x5 one of dilations 1 and 2 (large maps)
    net.GAB5.g3[1].weight.data.mul_(1.5)
    net.GAB1.g1[1].bias.data.add_(0.3)
    net.GAB1.g0[1].weight.data.mul_(-1.0)


def _edit_under_no_grad(net: EGEUNet) -> None:
    with torch.no_grad():
        for ghpa in _ghpas(net):
            ghpa.params_zx.mul_(0.5)


def _replace_parameter(net: EGEUNet) -> None:
    ghpa = net.encoder6[0]
    ghpa.params_zy = torch.nn.Parameter(torch.randn_like(ghpa.params_zy))


def _train_eval_switch(net: EGEUNet) -> None:
    net.train()
    with torch.no_grad():
        net(torch.rand(1, 3, 64, 64))
    net.eval()


MUTATIONS = [
    ["load_state_dict", _load_other_weights],
    ["load_state_dict_assign", _load_other_weights_assign],
    ["optimizer_step", _optimizer_step],
    ["attention_tensor_data", _edit_attention_tensor_via_data],
    ["attention_conv_data", _edit_attention_conv_via_data],
    ["folded_norm_data", _edit_folded_norm_via_data],
    ["gab_norm_data", _edit_gab_norm_via_data],
    ["gab_conv_data", _edit_gab_convs_via_data],
    ["no_grad_in_place", _edit_under_no_grad],
    ["replace_parameter", _replace_parameter],
    ["train_eval_switch", _train_eval_switch],
]


class TestEGEUNetInferenceCache(unittest.TestCase):
    def test_fast_path_matches_plain_path(self):
        net = _perturbed()
        x = torch.rand(2, 3, 96, 64)
        fast = _eval_output(net, x)
        self.assertTrue(all(len(m.cache) == 1 for m in _cached_blocks(net)), "eval + no_grad should fill the caches")
        _assert_close_to_scale(self, fast, _plain_output(net, x), 1e-4)
        net64 = copy.deepcopy(net).double()
        x64 = x.double()
        torch.testing.assert_close(_eval_output(net64, x64), _plain_output(net64, x64), atol=1e-10, rtol=0)
        with torch.inference_mode():
            torch.testing.assert_close(net(x), fast, atol=1e-6, rtol=0)

    @parameterized.expand(MUTATIONS)
    def test_never_stale(self, _, mutate):
        net = _perturbed()
        x = torch.rand(1, 3, 64, 96)
        before = _eval_output(net, x)  # fills the caches for this size
        with torch.inference_mode():
            net(x)  # and the inference-mode entries
        mutate(net)
        after = _eval_output(net, x)
        _assert_same(self, after, _fresh_output(net, x))
        with torch.inference_mode():
            _assert_same(self, net(x), _fresh_output(net, x))
        if mutate is not _train_eval_switch:
            self.assertGreater((after - before).abs().max().item(), 1e-4, "the change should change the output")

    def test_double(self):
        net = _perturbed()
        x = torch.rand(1, 3, 64, 64)
        _eval_output(net, x)
        net = net.double()
        out = _eval_output(net, x.double())
        _assert_same(self, out, _fresh_output(net, x.double()), atol=1e-12)
        torch.testing.assert_close(out, _plain_output(net, x.double()), atol=1e-10, rtol=0)
        net = net.float()
        _assert_same(self, _eval_output(net, x), _fresh_output(net, x))

    def test_half_precision_round_trip_changes_values(self):
        # .half().float() rounds every parameter: the cached maps of the old values must not survive
        net = _perturbed()
        x = torch.rand(1, 3, 64, 64)
        _eval_output(net, x)
        net = net.half().float()
        _assert_same(self, _eval_output(net, x), _fresh_output(net, x))

    def test_train_eval_switches_keep_outputs(self):
        net = _perturbed()
        x = torch.rand(1, 3, 64, 64)
        expected = _fresh_output(net, x)
        for _ in range(3):
            _assert_same(self, _eval_output(net, x), expected)
            net.train()
            self.assertEqual(len(net(x)), 6)
            net.eval()

    def test_input_sizes_in_a_row(self):
        net = _perturbed()
        sizes = [(64, 64), (96, 64), (64, 64), (32, 96), (32, 32), (64, 128), (96, 64), (128, 32), (32, 64)]
        sizes += [(64, 32), (160, 32), (64, 64)]  # more sizes than a cache keeps: the oldest are dropped
        for batch, (h, w) in enumerate(sizes):
            x = torch.rand(1 + batch % 3, 3, h, w)
            out = _eval_output(net, x)
            self.assertEqual(out.shape, (x.shape[0], 1, h, w))
            _assert_same(self, out, _fresh_output(net, x))
        self.assertTrue(all(len(m.cache) <= m.cache.max_entries for m in _cached_blocks(net)))

    def test_channels_last_input(self):
        net = _perturbed()
        x = torch.rand(2, 3, 64, 96)
        out = _eval_output(net, x.contiguous(memory_format=torch.channels_last))
        _assert_close_to_scale(self, out, _fresh_output(net, x), 1e-3)
        net = net.to(memory_format=torch.channels_last)
        out = _eval_output(net, x.contiguous(memory_format=torch.channels_last))
        _assert_close_to_scale(self, out, _fresh_output(net, x), 1e-3)
        # in float64 rounding is out of the way: the layouts give the same function
        net = net.double()
        out = _eval_output(net, x.double().contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(out, _fresh_output(net, x.double()), atol=1e-10, rtol=0)

    def test_gradients_in_eval_mode_after_cached_inference(self):
        # fine-tuning in eval mode: once autograd records, nothing cached or folded may cut the gradient
        net = _perturbed()
        x = torch.rand(1, 3, 64, 64)
        _eval_output(net, x)
        net.zero_grad()
        net(x).sum().backward()
        missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
        self.assertFalse(missing, f"no gradient reaches {missing}")

    def test_input_gradients_with_frozen_parameters(self):
        # frozen weights and an input that needs a gradient (saliency): the fast path may run, after an
        # inference-mode call filled the caches, and must still give the input gradient of the plain path
        net = _perturbed()
        x = torch.rand(1, 3, 64, 64)
        with torch.inference_mode():
            net(x)
        net.requires_grad_(False)
        xg = x.clone().requires_grad_(True)
        net(xg).sum().backward()
        net.requires_grad_(True)
        xr = x.clone().requires_grad_(True)
        net(xr).sum().backward()  # plain path (parameters record)
        _assert_close_to_scale(self, xg.grad, xr.grad, 1e-6)

    def test_deepcopy_and_state_dict_keys(self):
        net = _perturbed()
        x = torch.rand(1, 3, 64, 64)
        _eval_output(net, x)
        keys = list(net.state_dict())
        self.assertEqual(len(keys), 314)
        self.assertFalse(any("cache" in k for k in keys))
        twin = copy.deepcopy(net)
        _edit_attention_tensor_via_data(twin)
        _assert_same(self, _eval_output(twin, x), _fresh_output(twin, x))
        _assert_same(self, _eval_output(net, x), _fresh_output(net, x))


@unittest.skipIf(QUICK, "ONNX export with dynamic shapes takes a minute or more")
class TestEGEUNetOnnx(unittest.TestCase):
    """Exported graphs compute everything from the input: the eager caches must not be baked in."""

    @classmethod
    def setUpClass(cls):
        try:
            import onnxruntime  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError as e:  # pragma: no cover
            raise unittest.SkipTest(f"ONNX export test needs onnxruntime and onnxscript: {e}") from e
        cls.net = _perturbed(features=(8, 16, 24, 32, 48, 64))
        # fill the caches at one of the sizes checked below, as a deployed model would have
        _eval_output(cls.net, torch.rand(1, 3, 256, 256))
        cls.tmp = tempfile.TemporaryDirectory()
        cls.path = Path(cls.tmp.name) / "egeunet.onnx"
        # batch 2 in the example: torch.export specialises dimensions whose example size is 1
        example = torch.rand(2, 3, 64, 64)
        dims = {0: torch.export.Dim("batch"), 2: 32 * torch.export.Dim("h32"), 3: 32 * torch.export.Dim("w32")}
        program = torch.onnx.export(cls.net, (example,), dynamo=True, dynamic_shapes={"x": dims}, verbose=False)
        program.save(str(cls.path))

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_dynamic_shapes_match_eager(self):
        import onnxruntime as ort

        session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for shape in [(1, 3, 256, 256), (2, 3, 192, 320)]:
            x = torch.rand(shape)
            expected = _eval_output(self.net, x)
            out = torch.from_numpy(session.run(None, {name: x.numpy()})[0])
            self.assertEqual(tuple(out.shape), (shape[0], 1, shape[2], shape[3]))
            # ONNX Runtime's kernels round differently: compare at 1e-4 of the logits' magnitude (about 40)
            _assert_close_to_scale(self, out, expected, 1e-4)


if __name__ == "__main__":
    unittest.main()
