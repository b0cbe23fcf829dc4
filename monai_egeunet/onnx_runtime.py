"""An exported ONNX model run by ONNX Runtime in the bundle's workflows (``configs/inference_onnx.json``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.utils import convert_to_dst_type, optional_import
from torch import nn

__all__ = ["OnnxRuntimeNetwork"]

#: ``graph_optimization_level`` values and ONNX Runtime's ``GraphOptimizationLevel`` members they name
OPTIMIZATION_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


class OnnxRuntimeNetwork(nn.Module):
    """An exported ONNX model run by ONNX Runtime, usable wherever the workflow takes the PyTorch network.

    Takes and returns ``torch.Tensor`` (on the input's device), so MONAI's inferers and evaluators run it as they
    run the network. A model exported with a fixed batch size (``onnx_export``'s default) is fed in chunks of that
    size, so sliding-window batches of any size work.

    Args:
        model_path: the ``.onnx`` file.
        device: where the workflow runs; CUDA uses ONNX Runtime's CUDA provider when it is installed.
        providers: ONNX Runtime execution providers; default from ``device``.
        intra_op_num_threads: ONNX Runtime's thread count; default ``torch.get_num_threads()``, so that both
            runtimes obey the same ``OMP_NUM_THREADS``/``torch.set_num_threads`` setting.
        allow_spinning: let ONNX Runtime's worker threads busy-wait after each run (its own default). Off by
            default: in a workflow, the loading, resizing and saving of each image run between the network's
            calls, and spinning threads take the cores they need.
        graph_optimization_level: ONNX Runtime's graph optimizations, one of ``"disable"``, ``"basic"``,
            ``"extended"``, ``"all"``. Default ``"extended"``: every fusion, without the ``"all"`` level's
            blocked (NCHWc) memory layout, whose conversions before and after each of EGE-UNet's many small layers
            cost more on the CPU than the blocked convolutions save (``benchmarks/bench_network.py`` has a row for
            each of the two).

    Raises:
        FileNotFoundError: when ``model_path`` does not exist (the message says how to export one).
        ValueError: for a ``graph_optimization_level`` that is not one of the four.
        ValueError: (when called) for an input whose height and width a model exported for a fixed size does not
            take; the message says how to export it with dynamic sizes or feed it fixed windows.

    Example::

        >>> net = OnnxRuntimeNetwork("models/model.onnx")  # doctest: +SKIP
        >>> net(torch.rand(2, 3, 256, 256)).shape
        torch.Size([2, 1, 256, 256])
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        device: str | torch.device | None = None,
        providers: Sequence[str] | None = None,
        intra_op_num_threads: int | None = None,
        allow_spinning: bool = False,
        graph_optimization_level: str = "extended",
    ) -> None:
        super().__init__()
        ort, has_ort = optional_import("onnxruntime")
        if not has_ort:
            raise ImportError("ONNX Runtime inference needs onnxruntime: pip install 'monai-egeunet[export]'")
        if graph_optimization_level not in OPTIMIZATION_LEVELS:
            raise ValueError(
                f"graph_optimization_level must be one of {', '.join(map(repr, OPTIMIZATION_LEVELS))}, got "
                f"{graph_optimization_level!r}"
            )
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"no ONNX model at {path}: export one with `python -m monai.bundle onnx_export network_def "
                f"--filepath {path} --ckpt_file models/model.pt --meta_file configs/metadata.json "
                f"--config_file configs/inference.json`, or name it with --onnx_path"
            )
        if providers is None:
            on_cuda = device is not None and torch.device(device).type == "cuda"
            available = ort.get_available_providers()
            providers = ["CUDAExecutionProvider"] if on_cuda and "CUDAExecutionProvider" in available else []
            providers = [*providers, "CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(intra_op_num_threads or torch.get_num_threads())
        if not allow_spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        level = OPTIMIZATION_LEVELS[graph_optimization_level]
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        self.model_path = path
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        batch = model_input.shape[0]
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None
        # a model exported without dynamic height and width takes only the example input's size
        size = tuple(model_input.shape[2:])
        self.fixed_size = size if size and all(isinstance(s, int) and s > 0 for s in size) else None

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``(B, C, H, W)`` input.

        Returns:
            The model's first output, float32, of ``x``'s type (``MetaTensor`` or ``Tensor``) and device.
        """
        if self.fixed_size is not None and tuple(x.shape[2:]) != self.fixed_size:
            raise ValueError(
                f"{self.model_path} takes {'x'.join(map(str, self.fixed_size))} inputs only, got "
                f"{'x'.join(map(str, x.shape[2:]))}: export it with dynamic height and width (onnx_export's "
                f"--converter_kwargs with dynamic_axes, see the README), or feed it fixed windows "
                f"(--roi_size \"[{', '.join(map(str, self.fixed_size))}]\" --pad_to_multiple_of 1)"
            )
        arr = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        n = self.fixed_batch
        if n is None or arr.shape[0] == n:
            out = self._run(arr)
        else:
            chunks = []
            for i in range(0, arr.shape[0], n):
                chunk = arr[i : i + n]
                short = n - chunk.shape[0]
                if short:  # pad the last chunk to the model's batch size, then drop the padding
                    chunk = np.concatenate([chunk, np.repeat(chunk[-1:], short, axis=0)])
                chunks.append(self._run(chunk)[: n - short])
            out = np.concatenate(chunks)
        # a MetaTensor in gives a MetaTensor out, as from the PyTorch network: Invertd needs it
        return convert_to_dst_type(torch.from_numpy(out), dst=x, dtype=torch.float32)[0]

    def extra_repr(self) -> str:
        return f"model_path={str(self.model_path)!r}, providers={self.session.get_providers()}"
