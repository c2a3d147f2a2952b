"""Throughput of `genre predict` over a folder of covers, beside the network's own forward rate on pre-decoded
batches, measured in the same run.

Usage, from the project root with the package installed::

    python benchmarks/predict.py [--model efficientnet_lite0] [--image-size 256] [--images 480] [--repeats 2]
    python benchmarks/predict.py --covers ../shared/data/covers-dev    # real covers (350x350) instead


The script makes its own covers (the cover-like 500x500 JPEGs of benchmarks/prepare.py) and its own model: the
network `--model` with random weights (speed does not depend on them) for 10 genres, at the input `genre train` would
give it for covers packed at `--image-size` (efficientnet_lite0: 224-px centre crops of 256-px covers, the cover
recipe of experiments/finetune-lite0-covers.yaml), logged as the cover model a training run logs, to a SQLite store
in a temporary folder. Then, round-robin, `--repeats` times:

- the network's forward rate: `CoverClassifier.probabilities` on batches of `--batch-size` covers decoded beforehand
  (uint8 to the normalised input, forward, softmax), in this process;
- `decode_image` of every file, one core, in this process (for scale);
- the whole `genre predict --output CSV` work (`genre.stages.predict.predict_files`: decoding in worker processes,
  batches through the network, the CSV written), with 1 worker and with one per usable core.

The model is loaded three times: as `genre` loads it (the network as oneDNN's fused inference graph,
`genre.models.fused`), with `GENRE_ONEDNN_FUSION=0` (the plain hybridized graph, what `genre` ran before issue 27),
and quantized as `genre predict --quantize` does (an INT8 copy, `genre.models.quantized`, calibrated on 256 of the
covers); the forward and the whole-predict rows run with each. Rates use the best time of each row; "vs forward" is
each row's rate over the fused forward rate of the same run, "vs unfused" a row's rate over its unfused twin's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from machine import cpu_model, load_average, markdown_table, ram_gib  # benchmarks/machine.py
from PIL import Image
from prepare import make_covers  # benchmarks/prepare.py

GENRES = [f"genre-{n}" for n in range(10)]
CALIBRATION_COVERS = 256  # what `genre predict --quantize` calibrates on by default


def machine_lines() -> list[str]:
    import platform

    import mxnet as mx

    from genre.runtime import usable_cores

    return [
        f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs, {usable_cores()} usable by this process)",
        f"RAM: {ram_gib()}",
        f"OS: {platform.platform()}",
        f"Python: {platform.python_version()}; MXNet {mx.__version__}; "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}",
    ]


def logged_model(
    folder: Path, model: str, image_size: int, crop_size: int, example: bytes, calibration: np.ndarray | None = None
) -> str:
    """Log `model` (random weights, 10 genres) as a cover model to a SQLite store in `folder` (with an INT8 copy
    calibrated on `calibration`, uint8 covers, when given: `genre train --quantize`); its runs:/ URI. Sets
    MLFLOW_TRACKING_URI to that store for this process and its children."""
    import mlflow
    import mxnet as mx

    from genre.cover_model import log_cover_model
    from genre.models.networks import build_network, input_for
    from genre.models.spec import NetworkSpec

    network = input_for(model, crop_size, image_size)
    mx.random.seed(2015)
    net = build_network(NetworkSpec(model=model), len(GENRES), [mx.cpu()], network.size)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    found = mlflow.get_experiment_by_name("benchmark")
    experiment = (
        found.experiment_id
        if found
        else mlflow.create_experiment("benchmark", artifact_location=(folder / "artifacts").as_uri())
    )
    with mlflow.start_run(experiment_id=experiment) as run:
        log_cover_model(net, GENRES, image_size, example, network=network, calibration=calibration)
    return f"runs:/{run.info.run_id}/model"


def forward(classifier, batches: list[np.ndarray]) -> float:
    """Seconds for the network alone over pre-decoded batches."""
    started = time.perf_counter()
    for batch in batches:
        classifier.probabilities(batch)
    return time.perf_counter() - started


def decode_each(paths: list[Path], size: int) -> float:
    from genre.data.images import decode_image

    started = time.perf_counter()
    for path in paths:
        decode_image(path, size)
    return time.perf_counter() - started


def predict_folder(model, classifier, folder: Path, scratch: Path, batch_size: int, workers: int, count: int) -> float:
    """Seconds of the whole `genre predict --output CSV` work on `folder` (the model loaded beforehand)."""
    from genre.command_config import PredictConfig
    from genre.data.cover_files import find_cover_files
    from genre.stages.predict import predict_files

    output = scratch / f"predictions-{workers}.csv"
    config = PredictConfig(output=str(output), batch_size=batch_size, workers=workers)
    files = find_cover_files([folder])
    started = time.perf_counter()
    outcome = predict_files(model, classifier, files, config, output)
    seconds = time.perf_counter() - started
    if outcome.predicted != count or outcome.unreadable:
        raise SystemExit(f"predicted {outcome.predicted} of {count} covers; unreadable: {outcome.unreadable[:3]}")
    output.unlink()
    return seconds


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model a benchmark makes: the network, the side covers are decoded to, and the network's input side."""
    parser.add_argument("--model", default="efficientnet_lite0", help="network (any `genre train --model`)")
    parser.add_argument("--image-size", type=int, default=256, help="side the covers are decoded to (the pack's)")
    parser.add_argument("--crop-size", type=int, default=0, help="the network's input side (0: as train picks it)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n", 1)[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    add_model_arguments(parser)
    parser.add_argument("--images", type=int, default=480, help="covers to make and predict")
    parser.add_argument("--size", type=int, default=500, help="side of the source JPEGs in pixels")
    parser.add_argument(
        "--covers", type=Path, help="a folder of real covers to predict instead (all of it; --images, --size unused)"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="covers per pass through the network")
    parser.add_argument("--repeats", type=int, default=2, help="times each measurement is run")
    args = parser.parse_args(argv)

    from genre.cover_model import load_cover_model
    from genre.data.images import decode_image
    from genre.models.fused import SWITCH
    from genre.models.quantized import calibration_covers
    from genre.runtime import usable_cores

    cores = usable_cores()
    print("\n".join(machine_lines()))
    print(f"Load average (1, 5, 15 min) at start: {load_average()}")
    with tempfile.TemporaryDirectory(prefix="genre-bench-predict-") as tmp:
        scratch = Path(tmp)
        if args.covers:
            from genre.data.cover_files import find_cover_files

            folder = args.covers.resolve()
            paths = find_cover_files([folder]).paths
            if not paths:
                raise SystemExit(f"no cover files in {folder}")
            with Image.open(paths[0]) as first:
                described = f"{len(paths)} covers from {folder} (the first {first.size[0]}x{first.size[1]})"
        else:
            folder = scratch / "bench-covers"
            paths = make_covers(folder, args.images, args.size, seed=2015)
            described = f"{len(paths)} JPEGs {args.size}x{args.size} in {folder}"
        uri = logged_model(scratch, args.model, args.image_size, args.crop_size, paths[0].read_bytes())
        model = load_cover_model(uri)
        classifier = model.unwrap_python_model()
        os.environ[SWITCH] = "0"  # read when a model loads: this one runs the unfused graph
        unfused_model = load_cover_model(uri)
        del os.environ[SWITCH]
        unfused = unfused_model.unwrap_python_model()
        int8_model = load_cover_model(uri)
        if not classifier.graph.fused or unfused.graph.fused:
            raise SystemExit("oneDNN fusion did not run in this MXNet build: nothing to compare")
        pixels = np.stack([decode_image(path, args.image_size) for path in paths])
        batches = [pixels[start : start + args.batch_size] for start in range(0, len(pixels), args.batch_size)]
        int8 = int8_model.unwrap_python_model()
        int8.quantize(calibration_covers(pixels, CALIBRATION_COVERS))
        print(
            f"Model: {args.model}, covers decoded to {args.image_size} px, network input {classifier.network.size} px,"
            f" {len(GENRES)} genres, random weights; batch {args.batch_size}"
        )
        print(f"Data: {described}; {args.repeats} repeats round-robin\n")

        pipeline = "genre predict --output CSV (whole)"
        forward_name = "network forward, pre-decoded batches"
        steps: list[tuple[str, str, str, Callable[[], float]]] = [
            (forward_name, "fused", "in-process", lambda: forward(classifier, batches)),
            (forward_name, "unfused", "in-process", lambda: forward(unfused, batches)),
            (forward_name, "int8", "in-process", lambda: forward(int8, batches)),
            ("decode_image, one core", "", "in-process", lambda: decode_each(paths, args.image_size)),
        ]
        for workers in sorted({1, cores}):
            for graph, loaded in (("fused", model), ("unfused", unfused_model), ("int8", int8_model)):
                steps.append(
                    (
                        pipeline,
                        graph,
                        str(workers),
                        lambda loaded=loaded, workers=workers: predict_folder(
                            loaded, loaded.unwrap_python_model(), folder, scratch, args.batch_size, workers, len(paths)
                        ),
                    )
                )
        forward(classifier, batches[:1])  # the first pass allocates MXNet's memory (and builds the fused graph)
        forward(unfused, batches[:1])
        forward(int8, batches[:1])
        times: list[list[float]] = [[] for _ in steps]
        for _ in range(args.repeats):
            for index, (*_, measure) in enumerate(steps):
                times[index].append(measure())

    best = [min(seconds) for seconds in times]
    forward_rate = len(paths) / best[0]
    rates = {
        (name, graph, workers): len(paths) / fastest
        for (name, graph, workers, _), fastest in zip(steps, best, strict=True)
    }
    rows = []
    for (name, graph, workers, _), seconds, fastest in zip(steps, times, best, strict=True):
        rate = len(paths) / fastest
        twin = rates.get((name, "unfused", workers)) if graph in ("fused", "int8") else None
        rows.append(
            [
                name,
                graph,
                workers,
                f"{fastest:.2f}",
                f"{statistics.median(seconds):.2f}",
                f"{rate:.1f}",
                f"{rate / forward_rate:.2f}x",
                f"{rate / twin:.2f}x" if twin else "",
            ]
        )
    header = ["step", "graph", "decode workers", "best s", "median s", "covers/s", "vs forward", "vs unfused"]
    print(markdown_table(header, rows))
    print(f"\nLoad average (1, 5, 15 min) at the end: {load_average()}")


if __name__ == "__main__":
    sys.exit(main())
