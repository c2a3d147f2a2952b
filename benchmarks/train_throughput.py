"""Training-step throughput of the project's networks on the CPU, beside the same networks in PyTorch.

Usage, from the project root with the package importable (and PyTorch 2 for CPU installed for its rows)::

    python benchmarks/train_throughput.py [--quick] [--batch-size 64] [--image-size 64] [--repeats 5] [--seconds 2.5]
                                          [--wait-idle SECONDS]   # on a machine shared with other work

What it measures, each case in a fresh subprocess (MXNet and PyTorch never share a process or an OpenMP pool):

- images/s of a training step: forward, softmax cross-entropy, backward and an SGD update (learning rate 0.02,
  momentum 0.9, weight decay 1e-4: `genre train`'s defaults) on random uint8 `(N, H, W, 3)` images already in
  memory. The step includes the uint8 -> normalised float32 `(N, 3, H, W)` conversion on both sides (MXNet through
  `genre.models.inputs.network_input`, PyTorch the same arithmetic written out, in the model's memory layout).
- the default conv net (`NetworkSpec()`) at 32 px (the bundled digits) and at `--image-size`, and resnet18_v1b at
  `--image-size`. MXNet builds them with `build_network` (hybridized, static_alloc); PyTorch runs in eager mode the
  same layers written here: the conv net layer for layer from the layout the MXNet run reports, and a
  torchvision-style ResNet-18 (BasicBlock, stride in the first 3x3 conv) with resnet18_v1b's shapes, once in NCHW
  and once in channels_last (PyTorch's faster CPU layout for conv nets). The trainable parameter counts of each
  pair are checked equal.
- threads: MXNet with the project's setting (`genre.runtime`: OMP_NUM_THREADS = usable cores, unless already
  set) and, for comparison, with OMP_NUM_THREADS unset (MXNet's own default: half the logical CPUs); PyTorch with
  `torch.set_num_threads` at the same count as the project's MXNet. "CPU busy" is the process's CPU time over wall
  time during the timed windows (2.0 = two cores busy), "others" the cores the machine's other processes took
  meanwhile (from /proc/stat): on a shared machine, a row is only worth its numbers when that is near 0.
- float32 2048x2048 matrix multiply in numpy, MXNet (`nd.dot`, its bundled OpenBLAS) and PyTorch (`torch.mm`),
  and through oneDNN (MXNet's `FullyConnected`), which JIT-compiles for the CPU's widest SIMD where an older BLAS
  may not (numpy 1.23's OpenBLAS runs AVX2 kernels on AVX-512 CPUs it does not know); each step's achieved GFLOP/s
  (conv and dense layers counted analytically, 2 FLOPs per multiply-add, training step = 3 x forward) and its
  share of the numpy and the oneDNN rates.
- one epoch of `genre.training.loop.train_one_epoch` (default conv net, 32 px, no augmentation) over a synthetic
  in-memory `Pack` read through `ChunkedIterator`, against the very same batches preloaded as NDArrays on the
  context; rounds alternate which goes first. The pair runs again with MXNET_CPU_PARALLEL_SIZE raised so that MXNet
  copies host arrays without OpenMP: a chunk's copy then starts no OpenMP team in the prefetch thread (an extra
  team on a 2-core machine throttles libgomp's spin-waiting, which slows every step of the epoch).

A throughput is the median over `--repeats` timed windows of about `--seconds` each, after a warm-up; MXNet is
synchronised on the loss every 20 steps (as the training loop does) and with `nd.waitall()` at both edges of each
window. The default run takes about 4 minutes, `--quick` about 1. Progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import TypeVar

import genre  # noqa: F401  (first: sets OMP_NUM_THREADS before any OpenMP runtime loads)

# isort: split
import numpy as np
from machine import cpu_model, machine_busy_seconds, markdown_table, ram_gib, wait_until_idle  # benchmarks/machine.py

from genre.runtime import usable_cores

CLASSES = 10
SYNC_EVERY = 20  # steps between host syncs, as genre.training.loop does
BATCH_POOL = 8  # distinct random batches each step cycles through
MATMUL_SIDE = 2048
SERIAL_COPY = 10**9  # MXNET_CPU_PARALLEL_SIZE above any array here: MXNet copies without OpenMP
LEARNING_RATE, MOMENTUM, WEIGHT_DECAY = 0.02, 0.9, 1e-4
MEAN = (0.485, 0.456, 0.406)  # genre.models.inputs' (read here without importing mxnet)
STD = (0.229, 0.224, 0.225)
FULL = {"repeats": 5, "seconds": 2.5, "warmup": 5, "epoch_rounds": 5}
QUICK = {"repeats": 3, "seconds": 0.75, "warmup": 2, "epoch_rounds": 2}
T = TypeVar("T")
SIMD = {"avx512f": "AVX-512", "avx2": "AVX2", "avx": "AVX"}  # widest first


# ---------------------------------------------------------------- timing, shared by both frameworks' workers


def time_steps(
    step: Callable[[], object],
    loss_value: Callable[[object], float],
    drain: Callable[[object], float],
    batch: int,
    warmup: int,
    seconds: float,
    repeats: int,
) -> dict:
    """Warm up, size a window to about `seconds`, then time `repeats` windows; images/s and CPU busy of each."""
    last = None
    for _ in range(warmup):
        last = step()
    drain(last)
    calibration, started = 0, time.perf_counter()
    while calibration < 3 or time.perf_counter() - started < min(1.0, seconds / 2):
        last = step()
        loss_value(last)
        calibration += 1
    per_step = (time.perf_counter() - started) / calibration
    steps = max(3, math.ceil(seconds / per_step))
    rates, busy, others, loss = [], [], [], float("nan")
    for _ in range(repeats):
        drain(last)
        wall, cpu, machine = time.perf_counter(), time.process_time(), machine_busy_seconds()
        for index in range(steps):
            last = step()
            if (index + 1) % SYNC_EVERY == 0:
                loss_value(last)
        loss = drain(last)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        rates.append(steps * batch / wall)
        busy.append(cpu / wall)
        others.append(max(0.0, machine_busy_seconds() - machine - cpu) / wall)
    if not math.isfinite(loss):
        raise SystemExit(f"the training loss became {loss}: the step is broken, its timing meaningless")
    return {"rates": rates, "busy": busy, "others": others, "steps": steps, "final_loss": loss}


def matmul_gflops(multiply: Callable[[], object], repeats: int = 5) -> float:
    """Median GFLOP/s of `multiply`, a MATMUL_SIDE square float32 product that returns when done."""
    multiply()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        multiply()
        times.append(time.perf_counter() - started)
    return 2 * MATMUL_SIDE**3 / statistics.median(times) / 1e9


def random_batches(batch: int, size: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8) for _ in range(BATCH_POOL)]
    labels = [rng.integers(0, CLASSES, batch) for _ in range(BATCH_POOL)]
    return images, labels


# ---------------------------------------------------------------- MXNet workers


def import_mxnet(default_threads: bool):
    """mxnet, imported with the thread setting asked for and gluoncv able to load beside torch."""
    if default_threads:
        os.environ.pop("OMP_NUM_THREADS", None)  # genre set it at import; MXNet reads it when it loads
    # gluoncv 0.10 raises RuntimeError (not ImportError) at import when torch >= 2 is installed; hide torch here.
    sys.modules["torch"] = None  # type: ignore[assignment]
    import mxnet as mx

    return mx


def copy_in_passing_thread(copy: Callable[[], T]) -> T:
    """Run `copy` (host -> NDArray copies) in a thread that then ends, and wait for the copies.

    MXNet copies arrays of MXNET_CPU_PARALLEL_SIZE (200,000) elements or more with an OpenMP loop in the calling
    thread, which gives that thread an OpenMP team of its own for as long as it lives. With more OpenMP threads
    than cores, libgomp shortens its spin-waits, and every training step after that runs slower (here about 8%
    on the 64 px batches). A thread that ends takes its team with it.
    """
    import mxnet as mx

    made: list[T] = []
    thread = threading.Thread(target=lambda: made.append(copy()), name="copy-in")
    thread.start()
    thread.join()
    mx.nd.waitall()
    return made[0]


def mxnet_step_worker(job: dict) -> dict:
    threads_env = "unset" if job["default_threads"] else os.environ.get("OMP_NUM_THREADS", "unset")
    mx = import_mxnet(job["default_threads"])
    from mxnet import autograd, gluon, nd

    from genre.models.inputs import network_input
    from genre.models.networks import NetworkSpec, build_network, conv_blocks, dense_layers

    ctx = mx.cpu()
    mx.random.seed(0)
    spec = NetworkSpec(model=job["model"])
    net = build_network(spec, CLASSES, [ctx], job["image_size"])
    trainable = {name: p for name, p in net.collect_params().items() if p.grad_req != "null"}
    trainer = gluon.Trainer(
        trainable, "sgd", {"learning_rate": LEARNING_RATE, "momentum": MOMENTUM, "wd": WEIGHT_DECAY}
    )
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    host_images, host_labels = random_batches(job["batch"], job["image_size"])
    images, labels = copy_in_passing_thread(
        lambda: (
            [nd.array(x, ctx=ctx, dtype="uint8") for x in host_images],
            [nd.array(y.astype(np.float32), ctx=ctx) for y in host_labels],
        )
    )
    counter = itertools.count()

    def step():
        k = next(counter) % BATCH_POOL
        with autograd.record():
            loss = loss_fn(net(network_input(images[k])), labels[k])
        loss.backward()
        trainer.step(job["batch"])
        return loss

    def drain(loss) -> float:
        nd.waitall()
        return float(loss.mean().asscalar())

    result = time_steps(
        step,
        lambda loss: float(loss.mean().asscalar()),
        drain,
        job["batch"],
        job["warmup"],
        job["seconds"],
        job["repeats"],
    )
    result["parameters"] = int(sum(p.data(ctx).size for p in trainable.values()))
    result["forward_flops"] = mxnet_forward_flops(net, job["image_size"])
    result["threads"] = f"OMP_NUM_THREADS={threads_env}"
    if job["model"] == "convnet":
        result["layout"] = {
            "blocks": conv_blocks(spec),
            "dense": list(dense_layers(spec)),
            "pool": spec.pool,
            "batch_norm": spec.batch_norm,
            "dropout": spec.dropout,
        }
    if job.get("matmul"):
        rng = np.random.default_rng(1)
        a, b = (nd.array(rng.standard_normal((MATMUL_SIDE, MATMUL_SIDE), dtype=np.float32), ctx=ctx) for _ in "ab")
        result["matmul_gflops"] = matmul_gflops(lambda: nd.dot(a, b).wait_to_read())

        def inner_product() -> None:  # oneDNN's, JIT-compiled for the CPU's widest SIMD
            nd.FullyConnected(a, b, no_bias=True, num_hidden=MATMUL_SIDE).wait_to_read()

        result["onednn_gflops"] = matmul_gflops(inner_product)
    return result


def mxnet_forward_flops(net, size: int) -> int:
    """FLOPs of one image's forward pass through the Convolution and FullyConnected nodes of `net`'s graph."""
    import mxnet as mx

    graph = net(mx.sym.var("data"))
    internals = graph.get_internals()
    arg_shapes, out_shapes, _ = internals.infer_shape(data=(1, 3, size, size))
    shapes = dict(zip(internals.list_outputs(), out_shapes, strict=True))
    shapes.update(zip(internals.list_arguments(), arg_shapes, strict=True))
    nodes = json.loads(graph.tojson())["nodes"]
    total = 0
    for node in nodes:
        if node["op"] in ("Convolution", "FullyConnected"):
            weight = nodes[node["inputs"][1][0]]["name"]  # (out, in / groups, *kernel) or (units, in)
            total += 2 * math.prod(shapes[f"{node['name']}_output"]) * math.prod(shapes[weight][1:])
    return total


class PreloadedBatches:
    """The batches of one epoch, already on the context: what `train_one_epoch` reads from a `ChunkedIterator`."""

    def __init__(self, batches: list, contexts: list) -> None:
        self.batches = batches
        self.contexts = contexts

    def __len__(self) -> int:
        return len(self.batches)

    def epoch(self, epoch: int = 0):
        return iter(self.batches)


def mxnet_epoch_worker(job: dict) -> dict:
    mx = import_mxnet(False)
    from mxnet import gluon, nd

    from genre.data.iterator import Batch, ChunkedIterator
    from genre.data.pack import Pack
    from genre.data.transforms import AugmentSpec
    from genre.models.networks import NetworkSpec, build_network
    from genre.training.loop import train_one_epoch

    ctx = mx.cpu()
    mx.random.seed(0)
    rng = np.random.default_rng(2)
    size, count, batch = job["image_size"], job["images"], job["batch"]
    pack = Pack(
        images=rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8),
        labels=rng.integers(0, CLASSES, count).astype(np.int32),
        genres=[f"genre-{k}" for k in range(CLASSES)],
        files=[],
    )
    net = build_network(NetworkSpec(), CLASSES, [ctx], size)
    trainable = {name: p for name, p in net.collect_params().items() if p.grad_req != "null"}
    trainer = gluon.Trainer(
        trainable, "sgd", {"learning_rate": LEARNING_RATE, "momentum": MOMENTUM, "wd": WEIGHT_DECAY}
    )
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    no_augment = AugmentSpec(random_crop_area=1.0, flip=False, color_jitter=0.0)
    chunked = ChunkedIterator(pack, batch, job["chunk_size"], [ctx], shuffle=True, seed=0)

    def preload(epoch: int) -> PreloadedBatches:
        batches = [Batch([(x.copy(), y.copy()) for x, y in b.shards], b.size) for b in chunked.epoch(epoch)]
        nd.waitall()
        return PreloadedBatches(batches, [ctx])

    others: list[float] = []

    def timed_epoch(batches, epoch: int) -> float:
        nd.waitall()
        started, cpu, machine = time.perf_counter(), time.process_time(), machine_busy_seconds()
        stats = train_one_epoch(net, trainer, batches, epoch, no_augment, 0, loss_fn)
        nd.waitall()
        if stats.images != count:
            raise SystemExit(f"an epoch trained {stats.images} images, expected {count}")
        seconds = time.perf_counter() - started
        others.append(max(0.0, machine_busy_seconds() - machine - (time.process_time() - cpu)) / seconds)
        return seconds

    timed_epoch(chunked, 0)  # warm-up: graph building, the partial last batch's shape, allocator
    timed_epoch(preload(0), 0)
    others.clear()
    chunked_s, preloaded_s = [], []
    for round_ in range(job["rounds"]):
        epoch = round_ + 1
        preloaded = preload(epoch)  # the same order and batches as the chunked epoch of this number
        if round_ % 2 == 0:
            chunked_s.append(timed_epoch(chunked, epoch))
            preloaded_s.append(timed_epoch(preloaded, epoch))
        else:
            preloaded_s.append(timed_epoch(preloaded, epoch))
            chunked_s.append(timed_epoch(chunked, epoch))
        del preloaded
    first_batch = []
    for _ in range(3):
        nd.waitall()
        started = time.perf_counter()
        iterator = chunked.epoch(0)
        next(iterator)
        first_batch.append(time.perf_counter() - started)
        iterator.close()
    return {
        "chunked_s": chunked_s,
        "preloaded_s": preloaded_s,
        "batches": len(chunked),
        "chunks": chunked.chunk_count,
        "first_batch_s": statistics.median(first_batch),
        "others": statistics.median(others),
        "threads": f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
    }


# ---------------------------------------------------------------- PyTorch worker


def torch_convnet(layout: dict, size: int):
    """The conv net of `genre.models.networks._convnet_layers`, layer for layer, from the layout MXNet reported."""
    from torch import nn

    layers: list = []
    channels, side = 3, size
    for filters, kernel in layout["blocks"]:
        layers.append(nn.Conv2d(channels, filters, kernel, padding=kernel // 2, bias=not layout["batch_norm"]))
        if layout["batch_norm"]:
            layers.append(nn.BatchNorm2d(filters))  # eps 1e-5, momentum 0.1 = MXNet's 0.9
        layers.append(nn.ReLU())
        if layout["pool"] != "none":
            layers.append(nn.MaxPool2d(2, 2) if layout["pool"] == "max" else nn.AvgPool2d(2, 2))
            side //= 2
        channels = filters
    layers.append(nn.Flatten())
    features = channels * side * side
    for units in layout["dense"]:
        if layout["dropout"] > 0:
            layers.append(nn.Dropout(layout["dropout"]))
        layers += [nn.Linear(features, units), nn.ReLU()]
        features = units
    if layout["dropout"] > 0:
        layers.append(nn.Dropout(layout["dropout"]))
    layers.append(nn.Linear(features, CLASSES))
    return nn.Sequential(*layers)


def torch_resnet18():
    """ResNet-18 in torchvision's layout, with the layer shapes of GluonCV's resnet18_v1b."""
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, inplanes: int, planes: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = None
            if stride != 1 or inplanes != planes:
                self.downsample = nn.Sequential(
                    nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
                )

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + identity)

    class ResNet18(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            stages, inplanes = [], 64
            for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
                stages.append(nn.Sequential(BasicBlock(inplanes, planes, stride), BasicBlock(planes, planes, 1)))
                inplanes = planes
            self.layer1, self.layer2, self.layer3, self.layer4 = stages
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(512, CLASSES)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(self.avgpool(x).flatten(1))

    return ResNet18()


def forward_flops(model, size: int) -> int:
    """FLOPs of one image's forward pass through the conv and dense layers (2 per multiply-add)."""
    import torch
    from torch import nn

    total = 0

    def count(module, inputs, output) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        else:
            per_output = module.in_features
        total += 2 * output.numel() * per_output

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    model.train()
    for hook in hooks:
        hook.remove()
    return total


def torch_step_worker(job: dict) -> dict:
    import torch
    import torch.nn.functional as F  # noqa: N812

    threads = int(os.environ["OMP_NUM_THREADS"])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    size, batch = job["image_size"], job["batch"]
    model = torch_resnet18() if job["model"] == "resnet18_v1b" else torch_convnet(job["layout"], size)
    layout = torch.channels_last if job.get("channels_last") else torch.contiguous_format
    model = model.to(memory_format=layout)
    flops = forward_flops(model, size)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    host_images, host_labels = random_batches(batch, size)
    images = [torch.from_numpy(x) for x in host_images]
    labels = [torch.from_numpy(y.astype(np.int64)) for y in host_labels]
    mean = torch.tensor(MEAN).reshape(1, 3, 1, 1)
    std = torch.tensor(STD).reshape(1, 3, 1, 1)
    counter = itertools.count()

    def step():
        k = next(counter) % BATCH_POOL
        x = images[k].permute(0, 3, 1, 2).to(torch.float32, memory_format=layout)
        x = (x / 255.0 - mean) / std
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), labels[k])
        loss.backward()
        optimizer.step()
        return loss

    result = time_steps(
        step,
        lambda loss: loss.item(),
        lambda loss: loss.item(),
        batch,
        job["warmup"],
        job["seconds"],
        job["repeats"],
    )
    result["parameters"] = int(sum(p.numel() for p in model.parameters() if p.requires_grad))
    result["forward_flops"] = flops
    result["threads"] = f"torch.set_num_threads({torch.get_num_threads()})"
    if job.get("matmul"):
        a, b = torch.randn(MATMUL_SIDE, MATMUL_SIDE), torch.randn(MATMUL_SIDE, MATMUL_SIDE)
        result["matmul_gflops"] = matmul_gflops(lambda: torch.mm(a, b))
    return result


WORKERS = {"mxnet-step": mxnet_step_worker, "mxnet-epoch": mxnet_epoch_worker, "torch-step": torch_step_worker}


# ---------------------------------------------------------------- the orchestrating process


def run_worker(job: dict, wait_idle: float) -> dict:
    """Run one job in a fresh interpreter; its result is the last line of its stdout, as JSON."""
    if wait_idle > 0:
        wait_until_idle(wait_idle, indent="  ")
    print(f"  {job['label']} ...", file=sys.stderr, flush=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **job.get("env", {})})
    if done.returncode != 0:
        raise SystemExit(f"{job['label']} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def widest_simd() -> str:
    """The CPU's widest SIMD extension, from /proc/cpuinfo's flags."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return next((label for flag, label in SIMD.items() if flag in flags), "unknown")


def numpy_blas() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "BLAS unknown"
    for pool in threadpool_info():
        if pool.get("user_api") == "blas":
            kernel = f", {pool['architecture']} kernels" if pool.get("architecture") else ""
            return f"{pool['internal_api']} {pool['version']}{kernel}, {pool['num_threads']} threads"
    return "BLAS unknown"


def machine_description() -> list[str]:
    return [
        f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs, {usable_cores()} usable by this process; "
        f"widest SIMD {widest_simd()})",
        f"RAM: {ram_gib()}",
        f"OS: {platform.platform()}",
        f"Python: {platform.python_version()}",
        f"mxnet {version('mxnet')}, gluoncv {version('gluoncv')}, torch {version('torch')}, "
        f"numpy {np.__version__} ({numpy_blas()})",
        "Load average (1, 5, 15 min) at start: " + ", ".join(f"{load:.2f}" for load in os.getloadavg()),
    ]


def case_rows(
    model: str, size: int, results: list[tuple[str, dict]], numpy_rate: float, onednn_rate: float | None
) -> list[list[str]]:
    """Table rows of one network and image size; MXNet rows compare with the fastest PyTorch row."""
    flops = next((r["forward_flops"] for _, r in results if "forward_flops" in r), None)
    step_gflop = 3 * flops / 1e9 if flops else None
    torch_rates = [statistics.median(r["rates"]) for framework, r in results if framework.startswith("PyTorch")]
    best_torch = max(torch_rates, default=None)
    rows = []
    for framework, result in results:
        rate = statistics.median(result["rates"])
        achieved = rate * step_gflop if step_gflop else None
        rows.append(
            [
                model,
                str(size),
                framework,
                result["threads"],
                f"{rate:.0f}",
                f"{min(result['rates']):.0f}-{max(result['rates']):.0f}",
                f"{statistics.median(result['busy']):.2f}",
                f"{statistics.median(result['others']):.2f}",
                f"{step_gflop:.3f}" if step_gflop else "-",
                f"{achieved:.1f}" if achieved else "-",
                f"{achieved / numpy_rate:.0%}" if achieved else "-",
                f"{achieved / onednn_rate:.0%}" if achieved and onednn_rate else "-",
                f"{rate / best_torch:.2f}x" if best_torch and framework.startswith("MXNet") else "",
            ]
        )
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n", 1)[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--batch-size", type=int, default=64, help="images per training step")
    parser.add_argument(
        "--image-size", type=int, default=64, help="image side in pixels (the conv net also runs at 32)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=argparse.SUPPRESS,
        help="timed windows per case, the median reported (5; --quick 3)",
    )
    parser.add_argument(
        "--seconds", type=float, default=argparse.SUPPRESS, help="length of each timed window (2.5; --quick 0.75)"
    )
    parser.add_argument(
        "--warmup", type=int, default=argparse.SUPPRESS, help="untimed steps before timing (5; --quick 2)"
    )
    parser.add_argument("--pack-images", type=int, default=2000, help="images of the synthetic pack (epoch test)")
    parser.add_argument("--chunk-size", type=int, default=512, help="ChunkedIterator chunk size (epoch test)")
    parser.add_argument(
        "--epoch-rounds",
        type=int,
        default=argparse.SUPPRESS,
        help="chunked/in-memory epoch pairs to time (5; --quick 2)",
    )
    parser.add_argument("--no-default-threads", action="store_true", help="skip MXNet with OMP_NUM_THREADS unset")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        help="before each case, wait up to this many seconds for other processes to leave the CPU (shared machines)",
    )
    parser.add_argument("--quick", action="store_true", help="a short run: the --quick values above")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if not hasattr(args, name):  # a value given on the command line wins over --quick
            setattr(args, name, value)
    if min(args.batch_size, args.image_size, args.repeats, args.pack_images, args.chunk_size, args.epoch_rounds) < 1:
        parser.error("sizes, counts and repeats must be at least 1")
    if args.seconds <= 0 or args.warmup < 0:
        parser.error("--seconds must be above 0 and --warmup at least 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        job = json.loads(args.worker)
        print(json.dumps(WORKERS[job["kind"]](job)))
        return

    threads = int(os.environ["OMP_NUM_THREADS"])  # what genre.runtime put in force
    have_torch = version("torch") != "not installed"
    print("\n".join(machine_description()))
    print(
        f"Threads: MXNet OMP_NUM_THREADS={threads} (genre.runtime; usable cores {usable_cores()}); "
        f"PyTorch torch.set_num_threads({threads}); 'MXNet default' = OMP_NUM_THREADS unset "
        f"(MXNet then uses half the logical CPUs: {max(1, (os.cpu_count() or 2) // 2)})"
    )
    print(
        f"Step: batch {args.batch_size}, {CLASSES} classes, SGD lr {LEARNING_RATE} momentum {MOMENTUM} "
        f"wd {WEIGHT_DECAY}; uint8 -> normalised float32 NCHW included; median of {args.repeats} windows "
        f"of ~{args.seconds:g} s after {args.warmup} warm-up steps\n"
    )
    print("progress:", file=sys.stderr)

    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal((MATMUL_SIDE, MATMUL_SIDE), dtype=np.float32) for _ in "ab")
    if args.wait_idle > 0:
        wait_until_idle(args.wait_idle, indent="  ")
    numpy_rate = matmul_gflops(lambda: a @ b)

    common = {"batch": args.batch_size, "warmup": args.warmup, "seconds": args.seconds, "repeats": args.repeats}
    sizes = [("convnet", 32), ("convnet", args.image_size), ("resnet18_v1b", args.image_size)]
    cases = list(dict.fromkeys(sizes))
    rows, notes, matmul = [], [], {"numpy": numpy_rate}
    for index, (model, size) in enumerate(cases):
        base = {**common, "model": model, "image_size": size, "matmul": index == 0}
        name = f"{model} {size}px"
        mx_job = {**base, "kind": "mxnet-step", "default_threads": False, "label": f"MXNet {name}"}
        mx_result = run_worker(mx_job, args.wait_idle)
        results = [("MXNet", mx_result)]
        if have_torch:
            torch_job = {**base, "kind": "torch-step", "layout": mx_result.get("layout"), "channels_last": False}
            results.append(("PyTorch", run_worker({**torch_job, "label": f"PyTorch {name}"}, args.wait_idle)))
            last_job = {**torch_job, "channels_last": True, "matmul": False, "label": f"PyTorch channels_last {name}"}
            results.append(("PyTorch channels_last", run_worker(last_job, args.wait_idle)))
            for framework, result in results[1:]:
                for key, what in (("parameters", "trainable parameters"), ("forward_flops", "forward FLOPs")):
                    if result[key] != mx_result[key]:
                        raise SystemExit(
                            f"{name}: {framework} has {result[key]:,} {what}, MXNet {mx_result[key]:,}; "
                            "the two networks differ, so their timings do not compare"
                        )
            notes.append(
                f"{name}: {mx_result['parameters']:,} trainable parameters and "
                f"{mx_result['forward_flops'] / 1e6:.1f} forward MFLOP/image in both frameworks"
            )
        if not args.no_default_threads and size == args.image_size:
            default_job = {**base, "kind": "mxnet-step", "default_threads": True, "matmul": False}
            default_job["label"] = f"MXNet default threads {name}"
            results.append(("MXNet default", run_worker(default_job, args.wait_idle)))
        matmul.update({framework: r["matmul_gflops"] for framework, r in results if "matmul_gflops" in r})
        matmul.update({f"{framework} oneDNN": r["onednn_gflops"] for framework, r in results if "onednn_gflops" in r})
        rows += case_rows(model, size, results, numpy_rate, matmul.get("MXNet oneDNN"))

    print(
        f"Matrix multiply, float32 {MATMUL_SIDE}x{MATMUL_SIDE} (median of 5): "
        + ", ".join(
            f"{label} {rate:.0f} GFLOP/s"
            for label, rate in (
                ("numpy", matmul["numpy"]),
                ("MXNet nd.dot", matmul.get("MXNet")),
                ("PyTorch torch.mm", matmul.get("PyTorch")),
                ("MXNet FullyConnected (oneDNN)", matmul.get("MXNet oneDNN")),
            )
            if rate
        )
    )
    print()
    header = [
        "network",
        "px",
        "framework",
        "threads",
        "img/s",
        "range",
        "CPU busy",
        "others",
        "GFLOP/img",
        "GFLOP/s",
        "of numpy mm",
        "of oneDNN mm",
        "MXNet / best PyTorch",
    ]
    print(markdown_table(header, rows))
    print(
        "\nimg/s: median of the windows, range: slowest-fastest window; CPU busy: cores this process kept busy; "
        "others: cores other processes of the machine took meanwhile (trust a row only when near 0); "
        "GFLOP/img: conv + dense layers of one training step (3 x forward, 2 FLOPs per multiply-add); "
        "'of numpy mm', 'of oneDNN mm': achieved GFLOP/s over that matmul rate; "
        "'MXNet / best PyTorch': over the faster PyTorch row (NCHW or channels_last). " + "; ".join(notes) + "."
    )

    epoch_job = {
        "kind": "mxnet-epoch",
        "batch": args.batch_size,
        "image_size": 32,
        "images": args.pack_images,
        "chunk_size": args.chunk_size,
        "rounds": args.epoch_rounds,
    }
    epoch = run_worker({**epoch_job, "label": "chunked vs in-memory epochs"}, args.wait_idle)
    serial_env = {"MXNET_CPU_PARALLEL_SIZE": str(SERIAL_COPY)}
    serial = run_worker({**epoch_job, "env": serial_env, "label": "the same, no OpenMP copies"}, args.wait_idle)
    print(
        f"\nOne epoch of train_one_epoch, default conv net at 32 px, {args.pack_images} images, batch "
        f"{args.batch_size} ({epoch['batches']} batches), no augmentation, {epoch['threads']}; "
        f"median of {args.epoch_rounds} alternating rounds:\n"
    )
    epoch_rows, ratios = [], []
    for setting, result in (("as the project runs", epoch), (f"MXNET_CPU_PARALLEL_SIZE={SERIAL_COPY}", serial)):
        chunked, preloaded = statistics.median(result["chunked_s"]), statistics.median(result["preloaded_s"])
        ratios.append(chunked / preloaded)
        for source, seconds in (
            (f"ChunkedIterator (chunk {args.chunk_size}, {result['chunks']} chunks, prefetch)", result["chunked_s"]),
            ("the same batches preloaded as NDArrays", result["preloaded_s"]),
        ):
            epoch_rows.append(
                [
                    setting,
                    source,
                    f"{statistics.median(seconds):.3f}",
                    f"{min(seconds):.3f}-{max(seconds):.3f}",
                    f"{args.pack_images / statistics.median(seconds):.0f}",
                    f"{result['others']:.2f}",
                    f"{chunked / preloaded:.3f}" if seconds is result["chunked_s"] else "",
                ]
            )
    print(markdown_table(["MXNet setting", "batches from", "epoch s", "range", "img/s", "others", "ratio"], epoch_rows))
    verdict = "within" if ratios[0] <= 1.05 else "NOT within"
    print(
        f"\nChunked / in-memory as the project runs: {ratios[0]:.3f}, {verdict} the 5% goal (per-round ratios "
        + ", ".join(f"{c / p:.3f}" for c, p in zip(epoch["chunked_s"], epoch["preloaded_s"], strict=True))
        + f"); with serial copies: {ratios[1]:.3f}. Time to the first batch of a chunked epoch: "
        f"{epoch['first_batch_s'] * 1000:.1f} ms."
    )
    print("Load average (1, 5, 15 min) at the end: " + ", ".join(f"{load:.2f}" for load in os.getloadavg()))


if __name__ == "__main__":
    main()
