"""Inference speed and memory of EGE-UNet on the CPU, beside MONAI's UNet as a yardstick, in one run.

    python benchmarks/bench_network.py [--repeats 11] [--batches 1 8] [--threads N] [--no-onnx]

What it measures, all at 3 x 256 x 256 inputs:

* eval-mode forward under ``torch.inference_mode()`` of ``EGEUNet()`` and of the yardstick
  ``monai.networks.nets.UNet(2, 3, 1, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2)``, and EGE-UNet exported
  to ONNX (TorchScript-based exporter, dynamic batch/height/width) run by ONNX Runtime's CPU provider. The runtimes
  take turns on the same input (interleaved rounds after a warm-up), so a load change on the machine hits them alike;
  ONNX Runtime, which has its own thread pool, is timed in a block of its own right after. The table gives median
  milliseconds per batch, images per second and the ratio to UNet (median of the per-round ratios; for ONNX Runtime
  the ratio of medians).
* peak memory: the increase of the process's peak resident set size (``VmHWM``, reset after loading the model) over
  the resident set before the forward passes, each runtime in its own fresh child process (so: activations and
  workspace, not weights or libraries).
* the reference check: EGE-UNet in float64 with the original release's perturbed weights against the original's
  outputs (``../shared/fixtures/egeunet_reference.pt``, skipped with a message when ``../shared`` is absent).

On a shared machine compare only the ratios of one run; the load average is printed with the table.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EGEUNET_SHARED", REPO.parent / "shared"))
FIXTURE = SHARED / "fixtures" / "egeunet_reference.pt"
SIZE = 256


def _ege() -> torch.nn.Module:
    from monai_egeunet import EGEUNet

    torch.manual_seed(0)
    return EGEUNet(spatial_dims=2, in_channels=3, out_channels=1).eval()


def _unet() -> torch.nn.Module:
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    return UNet(2, 3, 1, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2).eval()


def _export_onnx(net: torch.nn.Module, path: Path) -> None:
    # the TorchScript-based exporter takes seconds; the dynamo one (tested in tests/networks) takes minutes here.
    # Tracing runs the network's plain path, so the graph computes GHPA's attention maps for any input size.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.rand(1, 3, SIZE, SIZE),),
            str(path),
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={name: {0: "batch", 2: "height", 3: "width"} for name in ("image", "logits")},
        )


def _ort_runner(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    # ONNX Runtime's worker threads spin after each run by default, taking the second core from whatever runs next
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.numpy()})[0]


def _torch_runner(net: torch.nn.Module):
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return net(x)

    return run


def _peak_memory(kind: str, onnx_path: str, batches: list[int], threads: int) -> dict[int, float]:
    """Peak resident set increase (MB) of a forward pass per batch size, measured in a fresh child process."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_peak_child, args=(kind, onnx_path, batches, threads, queue))
    proc.start()
    result = queue.get(timeout=600)
    proc.join()
    return result


def _rss_kb() -> tuple[int, int]:
    """(current, peak) resident set size in kB (Linux /proc)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def _peak_child(kind: str, onnx_path: str, batches: list[int], threads: int, queue: mp.Queue) -> None:
    torch.set_num_threads(threads)
    if kind == "ONNX Runtime":
        run = _ort_runner(Path(onnx_path))
    else:
        run = _torch_runner(_ege() if kind == "EGE-UNet" else _unet())
    run(torch.rand(1, 3, 64, 64))  # libraries and kernels loaded
    inputs = {batch: torch.rand(batch, 3, SIZE, SIZE) for batch in batches}
    try:  # reset the peak (VmHWM) to the current resident set: what came before (imports) no longer counts
        Path("/proc/self/clear_refs").write_text("5")
        base = _rss_kb()[0]
        peak = lambda: _rss_kb()[1]  # noqa: E731
    except OSError:  # no /proc or not allowed: the process-lifetime peak, which may hide small increases
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # noqa: E731
    result = {}
    for batch in sorted(batches):  # the peak never decreases: go from the smallest batch up
        run(inputs[batch])
        result[batch] = (peak() - base) / 1024
    queue.put(result)


def _time(runners: dict, x: torch.Tensor, repeats: int, warmup: int = 2) -> dict[str, list[float]]:
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


def _fixture_check() -> str:
    if not FIXTURE.exists():
        return f"reference check skipped: {FIXTURE} is not there (it comes with the project's ../shared folder)"
    from monai_egeunet import EGEUNet

    fixture = torch.load(FIXTURE, weights_only=True)
    net = EGEUNet(in_channels=3, out_channels=1, features=fixture["config"]["c_list"])
    net.load_state_dict(fixture["state_dict"], strict=True)
    net = net.double().eval()
    errors = []
    for case in fixture["cases"]:
        with torch.inference_mode():
            out = torch.sigmoid(net(case["input"].double()))
        errors.append(((tuple(case["input"].shape)), (out - case["output"]).abs().max().item()))
    worst = max(e for _, e in errors)
    detail = ", ".join(f"{'x'.join(map(str, s[2:]))}: {e:.1e}" for s, e in errors)
    verdict = "PASS" if worst <= 1e-8 else "FAIL"
    return (
        f"reference check (float64 vs the original release, eval fast path): max abs error {detail} -> {verdict} "
        "(<= 1e-8)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=11, help="interleaved timed rounds at batch 1 (half at 8)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="intra-op threads")
    parser.add_argument("--no-onnx", action="store_true", help="skip ONNX Runtime")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    ege, unet = _ege(), _unet()
    runners = {"EGE-UNet": _torch_runner(ege), "UNet (yardstick)": _torch_runner(unet)}
    tmp = tempfile.TemporaryDirectory()
    onnx_path = Path(tmp.name) / "egeunet.onnx"
    if not args.no_onnx:
        try:
            import onnxruntime  # noqa: F401

            _export_onnx(ege, onnx_path)
            runners["EGE-UNet, ONNX Runtime"] = _ort_runner(onnx_path)
        except ImportError as e:
            print(f"ONNX Runtime skipped: {e}")

    rows = []
    for batch in args.batches:
        x = torch.rand(batch, 3, SIZE, SIZE)
        repeats = args.repeats if batch == 1 else max(5, args.repeats // 2)
        # the two PyTorch models take turns; ONNX Runtime (its own thread pool) runs in a block of its own after
        times = _time({k: v for k, v in runners.items() if "ONNX" not in k}, x, repeats)
        unet_times = times["UNet (yardstick)"]
        for name in runners:
            if name in times:
                ts = times[name]
                ratio = statistics.median(t / u for t, u in zip(ts, unet_times))
            else:
                ts = _time({name: runners[name]}, x, repeats)[name]
                ratio = statistics.median(ts) / statistics.median(unet_times)
            rows.append((name, batch, statistics.median(ts) * 1e3, batch / statistics.median(ts), ratio))

    memory = {}
    for kind in runners:
        key = "ONNX Runtime" if "ONNX" in kind else ("EGE-UNet" if kind == "EGE-UNet" else "UNet")
        memory[kind] = _peak_memory(key, str(onnx_path), list(args.batches), args.threads)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs "
        f"({platform.machine()}), load average {load:.2f}, input 3x{SIZE}x{SIZE}\n"
    )
    print("| model | batch | ms / batch (median) | images / s | ratio to UNet | peak RSS + (MB) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, batch, ms, ips, ratio in rows:
        print(f"| {name} | {batch} | {ms:.1f} | {ips:.1f} | {ratio:.2f} | {memory[name][batch]:.0f} |")
    print(
        "\npeak RSS +: peak resident set (VmHWM, reset after loading the model) minus the resident set before the "
        "forward passes, in a fresh process per runtime (activations and workspace, not weights or libraries)"
    )
    print(_fixture_check())
    print(f"total time {time.perf_counter() - started:.0f} s")
    tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
