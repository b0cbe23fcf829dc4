"""Inference speed and memory of EGE-UNet beside MONAI's UNet as a yardstick, in one interleaved run.

    python benchmarks/bench_network.py [--repeats 11] [--batches 1 8] [--threads N] [--no-onnx] [--no-memory]

What it measures, all at 3 x 256 x 256 inputs, batch 1 and 8:

* ``EGEUNet (plain, as evaluated)``: the trained network called the way MONAI's ``SupervisedEvaluator`` calls it,
  ``with monai.networks.eval_mode(net): net(x)`` (``.eval()`` then a forward under ``torch.no_grad()``) on every
  iteration;
* ``EGEUNet (fused)``: :func:`monai_egeunet.networks.fuse_for_inference` of it, called the same way;
* ``EGEUNet, ONNX Runtime``: the plain network exported to ONNX (TorchScript-based exporter, dynamic batch, height
  and width) run by ONNX Runtime's CPU provider with as many threads as PyTorch, in the bundle's session
  (:class:`monai_egeunet.onnx_runtime.OnnxRuntimeNetwork`, graph optimizations ``"extended"``); the row with
  ``optimizations 'all'`` runs the same model with ONNX Runtime's highest level, which adds the blocked (NCHWc)
  convolution layout;
* the yardstick ``monai.networks.nets.UNet(2, 3, 1, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2)``,
  called the same way.

The PyTorch runtimes take turns on the same input (interleaved rounds after a warm-up), so a load change on the
machine hits them alike; ONNX Runtime, which has its own thread pool, takes turns with the yardstick alone in a
block of its own right after. The table gives median milliseconds per batch, images per second and the ratio to
the yardstick: the median of the per-round ratios to the yardstick of the same block and, in brackets, the ratio of
the two best rounds (each runtime's fastest round over the yardstick's: the rounds least disturbed by other work on
a shared machine). The exported ONNX graph's node count, before and after ONNX Runtime's optimizations, follows
the table. Where CUDA is available the
PyTorch runtimes are timed on the GPU too (synchronised after each call), in rows of their own; elsewhere the
output says they were skipped.

Peak memory (CPU): the increase of the process's peak resident set size (``VmHWM``, reset after loading the model)
over the resident set before the forward passes, each runtime in its own fresh child process (so: activations and
workspace, not weights or libraries). The reference check runs the plain and the fused network in float64 with the
original release's perturbed weights against the original's outputs (``../shared/fixtures/egeunet_reference.pt``,
skipped with a message when ``../shared`` is absent).

On a shared machine compare only the ratios of one run; the load average is printed with the table.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from _memory import start_peak_tracking

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EGEUNET_SHARED", REPO.parent / "shared"))
FIXTURE = SHARED / "fixtures" / "egeunet_reference.pt"
SIZE = 256
PLAIN, FUSED = "EGEUNet (plain, as evaluated)", "EGEUNet (fused)"
ORT, YARDSTICK = "EGEUNet, ONNX Runtime", "UNet (yardstick)"
ORT_ALL = "EGEUNet, ONNX Runtime, optimizations 'all' (NCHWc)"
#: ONNX Runtime rows and the graph optimization level of each
ORT_LEVELS = {ORT: "extended", ORT_ALL: "all"}


def _ege() -> torch.nn.Module:
    from monai_egeunet import EGEUNet

    torch.manual_seed(0)
    return EGEUNet(spatial_dims=2, in_channels=3, out_channels=1)


def _unet() -> torch.nn.Module:
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    return UNet(2, 3, 1, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2)


def _export_onnx(net: torch.nn.Module, path: Path) -> None:
    # the TorchScript-based exporter takes seconds; the dynamo one (tests/bundle/test_export.py) minutes on a CPU
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net.eval(),
            (torch.rand(1, 3, SIZE, SIZE),),
            str(path),
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={name: {0: "batch", 2: "height", 3: "width"} for name in ("image", "logits")},
        )


def _ort_runner(path: Path, threads: int, level: str) -> Callable[[torch.Tensor], object]:
    from monai_egeunet.onnx_runtime import OnnxRuntimeNetwork

    # the bundle's session (its idle threads sleep rather than spin and take a core from whatever runs next), run
    # on numpy arrays directly: the runtime's own time
    session = OnnxRuntimeNetwork(
        path, device="cpu", intra_op_num_threads=threads, graph_optimization_level=level
    ).session
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.numpy()})[0]


def _evaluator_runner(net: torch.nn.Module, cuda: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """Calls ``net`` as ``SupervisedEvaluator`` does: ``eval_mode`` (``.eval()`` + ``torch.no_grad()``) per call."""
    from monai.networks import eval_mode

    def run(x: torch.Tensor) -> torch.Tensor:
        with eval_mode(net):
            out = net(x)
        if cuda:
            torch.cuda.synchronize()
        return out

    return run


def _runtimes(onnx_path: Path | None, threads: int, device: str = "cpu") -> dict[str, Callable]:
    from monai_egeunet import fuse_for_inference

    cuda = device != "cpu"
    ege, unet = _ege().to(device), _unet().to(device)
    runners = {
        PLAIN: _evaluator_runner(ege, cuda),
        FUSED: _evaluator_runner(fuse_for_inference(ege), cuda),
        YARDSTICK: _evaluator_runner(unet, cuda),
    }
    if onnx_path is not None and not cuda:
        runners.update({name: _ort_runner(onnx_path, threads, level) for name, level in ORT_LEVELS.items()})
    return runners


def _peak_child(kind: str, onnx_path: str, batches: list[int], threads: int, queue: mp.Queue) -> None:
    torch.set_num_threads(threads)
    run = _runtimes(Path(onnx_path) if kind in ORT_LEVELS else None, threads)[kind]
    run(torch.rand(1, 3, 64, 64))  # libraries and kernels loaded
    inputs = {batch: torch.rand(batch, 3, SIZE, SIZE) for batch in batches}
    base, peak = start_peak_tracking()
    result = {}
    for batch in sorted(batches):  # the peak never decreases: go from the smallest batch up
        run(inputs[batch])
        result[batch] = (peak() - base) / 1024
    queue.put(result)


def _peak_memory(kind: str, onnx_path: str, batches: list[int], threads: int) -> dict[int, float]:
    """Peak resident set increase (MB) of a forward pass per batch size, measured in a fresh child process."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_peak_child, args=(kind, onnx_path, batches, threads, queue))
    proc.start()
    result = queue.get(timeout=600)
    proc.join()
    return result


def _time(runners: dict[str, Callable], x: torch.Tensor, repeats: int, warmup: int = 2) -> dict[str, list[float]]:
    for _ in range(warmup):
        for run in runners.values():
            run(x)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run(x)
            times[name].append(time.perf_counter() - start)
    return times


def _rows(runners: dict[str, Callable], batches: list[int], repeats: int, device: str) -> list[tuple]:
    rows = []
    for batch in batches:
        x = torch.rand(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(batch)).to(device)
        n = repeats if batch == 1 else max(5, repeats // 2)
        times = _time({k: v for k, v in runners.items() if k not in ORT_LEVELS}, x, n)
        references = {name: times[YARDSTICK] for name in times}
        for name in ORT_LEVELS:
            if name in runners:
                # its own thread pool: a block of its own right after, taking turns with the yardstick alone
                block = _time({name: runners[name], YARDSTICK: runners[YARDSTICK]}, x, n)
                times[name], references[name] = block[name], block[YARDSTICK]
        for name, ts in times.items():
            ratio = statistics.median(t / u for t, u in zip(ts, references[name]))
            best = min(ts) / min(references[name])
            rows.append((name, device, batch, statistics.median(ts) * 1e3, batch / statistics.median(ts), ratio, best))
    return rows


def _onnx_graph_size(path: Path) -> str:
    """The exported graph's node count, before and after ONNX Runtime's graph optimizations ("extended")."""
    import onnxruntime as ort

    try:
        import onnx
    except ImportError as e:
        return f"ONNX graph size skipped: {e}"

    optimized = path.with_name("optimized.onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(optimized)
    ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    counts = [len(onnx.load(str(p)).graph.node) for p in (path, optimized)]
    return f"ONNX graph (dynamic batch, height and width): {counts[0]} nodes exported, {counts[1]} after optimization"


def _fixture_check() -> str:
    if not FIXTURE.exists():
        return f"reference check skipped: {FIXTURE} is not there (it comes with the project's ../shared folder)"
    from monai_egeunet import EGEUNet, fuse_for_inference

    fixture = torch.load(FIXTURE, weights_only=True)
    net = EGEUNet(in_channels=3, out_channels=1, features=fixture["config"]["c_list"])
    net.load_state_dict(fixture["state_dict"], strict=True)
    net = net.double().eval()
    lines = []
    for name, model in (("plain", net), ("fused", fuse_for_inference(net))):
        errors = []
        for case in fixture["cases"]:
            with torch.no_grad():
                out = torch.sigmoid(model(case["input"].double()))
            errors.append((tuple(case["input"].shape), (out - case["output"]).abs().max().item()))
        worst = max(e for _, e in errors)
        detail = ", ".join(f"{'x'.join(map(str, s[2:]))}: {e:.1e}" for s, e in errors)
        lines.append(f"{name} {detail} -> {'PASS' if worst <= 1e-8 else 'FAIL'}")
    return "reference check (float64 vs the original release, <= 1e-8): " + "; ".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=11, help="interleaved timed rounds at batch 1 (half at 8)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="intra-op threads")
    parser.add_argument("--no-onnx", action="store_true", help="skip ONNX Runtime")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    tmp = tempfile.TemporaryDirectory()
    onnx_path: Path | None = None
    if not args.no_onnx:
        try:
            import onnxruntime  # noqa: F401

            onnx_path = Path(tmp.name) / "egeunet.onnx"
            _export_onnx(_ege(), onnx_path)
        except ImportError as e:
            print(f"ONNX Runtime skipped: {e}")
            onnx_path = None

    runners = _runtimes(onnx_path, args.threads)
    rows = _rows(runners, args.batches, args.repeats, "cpu")
    if torch.cuda.is_available():
        rows += _rows(_runtimes(None, args.threads, "cuda"), args.batches, args.repeats, "cuda")
        cuda_note = f"CUDA rows on {torch.cuda.get_device_name()}"
    else:
        cuda_note = "no CUDA device here: the CUDA rows were skipped (they run where torch.cuda.is_available())"

    memory: dict[str, dict[int, float]] = {}
    if not args.no_memory:
        for kind in runners:
            memory[kind] = _peak_memory(kind, str(onnx_path), list(args.batches), args.threads)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs "
        f"({platform.machine()}), load average {load:.2f}, input 3x{SIZE}x{SIZE}; {cuda_note}\n"
    )
    print("| model | device | batch | ms / batch (median) | images / s | ratio to yardstick (best rounds) "
          "| peak RSS + (MB) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, device, batch, ms, ips, ratio, best in rows:
        mem = f"{memory[name][batch]:.0f}" if device == "cpu" and name in memory else "-"
        print(f"| {name} | {device} | {batch} | {ms:.1f} | {ips:.1f} | {ratio:.2f} ({best:.2f}) | {mem} |")
    if memory:
        print(
            "\npeak RSS +: peak resident set (VmHWM, reset after loading the model) minus the resident set before "
            "the forward passes, in a fresh process per runtime (activations and workspace, not weights or libraries)"
        )
    if onnx_path is not None:
        print(_onnx_graph_size(onnx_path))
    print(_fixture_check())
    print(f"total time {time.perf_counter() - started:.0f} s")
    tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
