"""Export of the bundle's network (TorchScript, ONNX) with MONAI's bundle scripts, from the plain ``network_def``;
inference through ONNX Runtime with the ``configs/inference_onnx.json`` overlay."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from monai.bundle import ckpt_export, onnx_export, verify_net_in_out
from monai.data import load_net_with_metadata
from PIL import Image

from monai_egeunet import EGEUNet
from monai_egeunet.onnx_runtime import OnnxRuntimeNetwork
from tests.bundle.conftest import CONFIGS, INFERENCE, META, inference_workflow, lesion_image

INFERENCE_ONNX = [str(INFERENCE), str(CONFIGS / "inference_onnx.json")]

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

#: what to add to `onnx_export` for batch, height and width chosen at run time (see the bundle's README)
DYNAMIC = {
    "input_names": ["image"],
    "output_names": ["pred"],
    "dynamic_axes": {"image": {0: "batch", 2: "height", 3: "width"}, "pred": {0: "batch", 2: "height", 3: "width"}},
}


def _eager(checkpoint) -> EGEUNet:
    net = EGEUNet().eval()
    net.load_state_dict(torch.load(checkpoint, weights_only=True))
    return net


def _assert_norms_without_transposes(path) -> None:
    # the channel layer norms export as reductions over axis 1, not as a LayerNormalization between Transposes
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "ReduceMean" in ops and not ops & {"Transpose", "LayerNormalization"}


#: ONNX operators that compute on shapes (what a Shape node's output may pass through before it is used)
SHAPE_OPS = {"Gather", "Slice", "Cast", "Concat", "Unsqueeze", "Squeeze"}


#: where a computed shape may end: the sizes of a Resize (to a feature map's size), the target of a Reshape (the
#: group norms' way back to their input's shape)
SHAPE_USES = {("Resize", 3), ("Reshape", 1)}


def _assert_shapes_only_for_resizes(path) -> None:
    # with dynamic height and width, only resizing to a feature map's size needs its shape at run time: the channel
    # splits and the layer norms' weights have theirs fixed in the graph (no Shape -> Gather -> Div -> Slice chains)
    nodes = onnx.load(str(path)).graph.node
    consumers: dict[str, list] = {}
    for node in nodes:
        for index, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, index))
    shape_nodes = [node for node in nodes if node.op_type == "Shape"]
    assert any(node.op_type == "Resize" for node in nodes) and shape_nodes
    for start in shape_nodes:
        stack, seen = list(start.output), set()
        while stack:
            for node, index in consumers.get(stack.pop(), []):
                if (node.op_type, index) in SHAPE_USES:
                    continue
                assert node.op_type in SHAPE_OPS, f"{start.name} feeds input {index} of {node.op_type} {node.name}"
                if node.name not in seen:
                    seen.add(node.name)
                    stack.extend(node.output)


def _level(ort_net: OnnxRuntimeNetwork):
    return ort_net.session.get_session_options().graph_optimization_level


def _inputs() -> list[torch.Tensor]:
    torch.manual_seed(1)
    return [torch.rand(1, 3, 256, 256), torch.rand(2, 3, 192, 320)]


def test_verify_net_in_out():
    verify_net_in_out("network_def", meta_file=str(META), config_file=str(INFERENCE))


def test_torchscript_export(tmp_path, checkpoint):
    ts = tmp_path / "model.ts"
    ckpt_export("network_def", filepath=str(ts), ckpt_file=str(checkpoint), meta_file=str(META),
                config_file=str(INFERENCE))
    net, meta, extra = load_net_with_metadata(str(ts), more_extra_files=["inference.json"])
    assert meta["version"] and "inference.json" in extra
    eager = _eager(checkpoint)
    for x in _inputs():
        with torch.no_grad():
            torch.testing.assert_close(net(x), eager(x), rtol=1e-5, atol=1e-5)


def test_onnx_export_and_onnx_runtime_inference(tmp_path, checkpoint):
    path = tmp_path / "model.onnx"
    # the TorchScript-based exporter takes seconds; the default (dynamo) one minutes: see test_onnx_export_dynamo
    onnx_export("network_def", filepath=str(path), ckpt_file=str(checkpoint), meta_file=str(META),
                config_file=str(INFERENCE), use_trace=True, converter_kwargs={"dynamo": False, **DYNAMIC})
    _assert_norms_without_transposes(path)
    _assert_shapes_only_for_resizes(path)
    ort_net, eager = OnnxRuntimeNetwork(path), _eager(checkpoint)
    # the blocked layout of the highest level is a choice, not the default (see OnnxRuntimeNetwork)
    ort_all = OnnxRuntimeNetwork(path, graph_optimization_level="all")
    assert _level(ort_net) == ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    assert _level(ort_all) == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with torch.no_grad():
        for x in _inputs():
            torch.testing.assert_close(ort_net(x), eager(x), rtol=1e-3, atol=1e-3)
            torch.testing.assert_close(ort_all(x), eager(x), rtol=1e-3, atol=1e-3)

    (tmp_path / "in").mkdir()
    Image.fromarray(lesion_image(180, 300)).save(tmp_path / "in" / "a.png")
    Image.fromarray(lesion_image(300, 280, seed=1)).save(tmp_path / "in" / "b.jpg")
    probs = []
    for use_onnx in (False, True):
        out = tmp_path / f"out_{use_onnx}"
        runtime = {"config_file": INFERENCE_ONNX, "onnx_path": str(path)} if use_onnx else {"ckpt_path": str(checkpoint)}
        wf = inference_workflow(dataset_dir=str(tmp_path / "in"), output_dir=str(out), save_probabilities=True,
                                **runtime)
        network = wf.parser.get_parsed_content("network")
        assert isinstance(network, OnnxRuntimeNetwork) == use_onnx
        if use_onnx:
            assert _level(network) == ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        wf.run()
        wf.finalize()
        probs.append([np.asarray(Image.open(out / f"{n}_prob.png"), dtype=int) for n in ("a", "b")])
        report = json.loads((out / "inference_report.json").read_text())
        assert report["weights"]["path"] == str(path if use_onnx else checkpoint)
    for eager_prob, onnx_prob in zip(*probs):
        assert eager_prob.shape == onnx_prob.shape
        assert np.abs(eager_prob - onnx_prob).max() <= 1


def test_onnx_fixed_batch_model_takes_any_batch(tmp_path, checkpoint):
    # onnx_export's defaults give a model for one 256x256 image; sliding-window batches are fed one by one
    path = tmp_path / "static.onnx"
    onnx_export("network_def", filepath=str(path), ckpt_file=str(checkpoint), meta_file=str(META),
                config_file=str(INFERENCE), use_trace=True, converter_kwargs={"dynamo": False})
    ort_net = OnnxRuntimeNetwork(path)
    assert ort_net.fixed_batch == 1
    # idle worker threads sleep by default: the workflow's own steps run between the network's calls
    assert _spinning(ort_net) == "0"
    assert _spinning(OnnxRuntimeNetwork(path, allow_spinning=True)) is None
    x = torch.rand(3, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(ort_net(x), _eager(checkpoint)(x), rtol=1e-3, atol=1e-3)
    # the inference workflow's default window is the whole image: a fixed-size model says what to do instead
    with pytest.raises(ValueError, match=r"takes 256x256 inputs only, got 352x256.*dynamic height and width"):
        ort_net(torch.rand(1, 3, 352, 256))


def _spinning(ort_net: OnnxRuntimeNetwork) -> str | None:
    options = ort_net.session.get_session_options()
    try:
        return options.get_session_config_entry("session.intra_op.allow_spinning")
    except RuntimeError:  # ONNX Runtime raises for a key that was never set: its default (spinning) applies
        return None


def test_onnx_optimization_level_from_the_config(tmp_path, checkpoint):
    path = tmp_path / "model.onnx"
    onnx_export("network_def", filepath=str(path), ckpt_file=str(checkpoint), meta_file=str(META),
                config_file=str(INFERENCE), use_trace=True, converter_kwargs={"dynamo": False})
    (tmp_path / "in").mkdir()
    Image.fromarray(lesion_image(64, 64)).save(tmp_path / "in" / "a.png")
    wf = inference_workflow(dataset_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "out"),
                            config_file=INFERENCE_ONNX,
                            onnx_path=str(path), onnx_optimization_level="basic")
    assert _level(wf.parser.get_parsed_content("network")) == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    with pytest.raises(ValueError, match=r"graph_optimization_level must be one of .*'extended'.*got 'fastest'"):
        OnnxRuntimeNetwork(path, graph_optimization_level="fastest")


def test_missing_onnx_model_says_how_to_export(tmp_path):
    with pytest.raises(FileNotFoundError, match="onnx_export"):
        OnnxRuntimeNetwork(tmp_path / "none.onnx")


@pytest.mark.skipif(not os.environ.get("MONAI_EGEUNET_SLOW_TESTS"),
                    reason="minutes on a CPU: set MONAI_EGEUNET_SLOW_TESTS=1")
def test_onnx_export_dynamo(tmp_path, checkpoint):
    """The command the README gives, with torch's default (dynamo) exporter."""
    path = tmp_path / "model.onnx"
    onnx_export("network_def", filepath=str(path), ckpt_file=str(checkpoint), meta_file=str(META),
                config_file=str(INFERENCE), converter_kwargs=DYNAMIC)
    _assert_norms_without_transposes(path)
    ort_net, eager = OnnxRuntimeNetwork(path), _eager(checkpoint)
    with torch.no_grad():
        for x in _inputs():
            torch.testing.assert_close(ort_net(x), eager(x), rtol=1e-3, atol=1e-3)
