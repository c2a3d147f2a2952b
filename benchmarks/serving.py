"""Latency and throughput of a cover model served by `genre serve` on loopback (MLflow's scoring app under uvicorn,
behind genre's request limits), beside the network's own forward rate, measured in the same run.

Usage, from the project root with the package installed::

    python benchmarks/serving.py [--model efficientnet_lite0] [--image-size 256] [--seconds 20]

The script makes its covers and its model as benchmarks/predict.py does (random weights, 10 genres, logged as
`genre train` logs a model, to a SQLite store in a temporary folder), then:

- in this process, before the server starts: the network's forward rate on a pre-decoded batch of 32 covers
  (`CoverClassifier.probabilities`), and the model's whole `predict` on 32 encoded covers (a DataFrame of JPEG bytes,
  as the server hands it over) with its covers decoded in 1 thread and in one thread per usable core, round-robin;
- starts `genre serve`'s command line (uvicorn with MLflow's scoring app behind `RequestLimits`, 1 worker) on
  127.0.0.1 and waits for /ping;
- for each case (1 cover or 32 covers per request; 1 or 8 concurrent clients, each with its own keep-alive
  connection), sends requests for `--seconds` (after 2 unmeasured ones per client): the JSON bodies
  (`dataframe_split` of base64 JPEGs) are made beforehand, so the clients spend little CPU.

- after the server has stopped, the network's forward rate again, `--repeats` times.

The server runs three times: as `genre serve` runs it (the network as oneDNN's fused inference graph,
`genre.models.fused`), with `GENRE_ONEDNN_FUSION=0` (the plain hybridized graph, what it ran before issue 27), and
serving the same network logged with an INT8 copy (`genre train --quantize`, calibrated on the 32 covers); "vs
unfused" divides a case's throughput by its unfused twin's.

Latency percentiles are over every request of a case (p99 of fewer than 100 requests is near the slowest);
throughput is covers answered per second of the case's wall time, an average over the case, so "vs forward" divides
it by the network's median rate over every forward measured before and after the server ran, not by its best: on a
shared VM the same forward took 1.06-1.92 s from one minute to the next (docs/benchmarks.md). The in-process table
compares best with best. The server and the clients share the machine.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from machine import load_average, markdown_table  # benchmarks/machine.py
from predict import add_model_arguments, logged_model, machine_lines  # benchmarks/predict.py
from prepare import make_covers  # benchmarks/prepare.py

HOST = "127.0.0.1"


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def request_body(covers: list[bytes]) -> bytes:
    rows = [[base64.b64encode(cover).decode()] for cover in covers]
    return json.dumps({"dataframe_split": {"columns": ["image"], "data": rows}}).encode()


def post(connection: http.client.HTTPConnection, body: bytes, count: int) -> float:
    """Seconds for one request on a kept-alive connection (made again when the server closed it: uvicorn closes a
    connection idle for 5 s); fails loudly on anything but 200 with `count` rows."""
    started = time.perf_counter()
    try:
        connection.request("POST", "/invocations", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
    except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
        connection.close()
        started = time.perf_counter()
        connection.request("POST", "/invocations", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
    answer = response.read()
    seconds = time.perf_counter() - started
    if response.status != 200 or len(json.loads(answer)["predictions"]) != count:
        raise SystemExit(f"the server answered {response.status}: {answer[:500]!r}")
    return seconds


def load(port: int, body: bytes, count: int, clients: int, seconds: float) -> tuple[list[float], float]:
    """Every request's latency and the wall time of `clients` threads posting `body` for `seconds`."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at: list[float] = []
    start = threading.Barrier(clients + 1, action=lambda: stop_at.append(time.perf_counter() + seconds))

    def client() -> None:
        connection = http.client.HTTPConnection(HOST, port, timeout=600)
        for _ in range(2):  # connect and warm up, unmeasured
            post(connection, body, count)
        start.wait()
        while time.perf_counter() < stop_at[0]:
            latency = post(connection, body, count)
            with lock:
                latencies.append(latency)
        connection.close()

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client) for _ in range(clients)]
        start.wait()  # every client is warm; the barrier's action sets when they stop
        began = time.perf_counter()
        for future in futures:
            future.result()
        wall = time.perf_counter() - began
    return latencies, wall


def wait_for_server(process: subprocess.Popen, port: int, log: Path) -> float:
    started = time.monotonic()
    while True:
        if process.poll() is not None:
            raise SystemExit(f"the server stopped:\n{log.read_text()[-3000:]}")
        try:
            connection = http.client.HTTPConnection(HOST, port, timeout=2)
            connection.request("GET", "/ping")
            if connection.getresponse().status == 200:
                return time.monotonic() - started
        except OSError:
            pass
        if time.monotonic() - started > 300:
            raise SystemExit(f"the server did not answer /ping in 300 s:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def in_process(classifier, covers: list[bytes], pixels: np.ndarray, repeats: int) -> dict[str, list[float]]:
    """Seconds of each repeat of the network alone on 32 pre-decoded covers, and of `predict` on 32 encoded covers
    with 1 thread and with the model's own decoding threads."""
    import pandas as pd

    frame = pd.DataFrame({"image": covers})
    threads = classifier.decoder
    one = ThreadPoolExecutor(1)
    seconds: dict[str, list[float]] = {"forward": [], "predict, 1 thread": [], "predict, threads": []}
    classifier.probabilities(pixels)  # the first pass allocates MXNet's memory
    for _ in range(repeats):
        seconds["forward"] += forward_times(classifier, pixels, 1)
        for name, pool in (("predict, 1 thread", one), ("predict, threads", threads)):
            classifier.decoder = pool
            started = time.perf_counter()
            classifier.predict(None, frame)
            seconds[name].append(time.perf_counter() - started)
    classifier.decoder = threads
    one.shutdown()
    return seconds


def forward_times(classifier, pixels: np.ndarray, repeats: int) -> list[float]:
    """Seconds of each of `repeats` passes of the network alone over `pixels`."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        classifier.probabilities(pixels)
        times.append(time.perf_counter() - started)
    return times


def serve_cases(uri: str, covers: list[bytes], graph: str, seconds: float) -> list[list[str]]:
    """Start `genre serve` on `uri` (its network `graph`: "fused", "unfused" with GENRE_ONEDNN_FUSION=0, or "int8" for
    a model logged with an INT8 copy), send each case's requests, stop it; a row per case."""
    from genre.models.fused import SWITCH
    from genre.tracking.config import ServeConfig
    from genre.tracking.model_server import local_model, serve_invocation

    port = free_port()
    command, environment = serve_invocation(ServeConfig(model_uri=uri, port=port), local_model(uri))
    environment = {**environment, SWITCH: "0" if graph == "unfused" else "1"}
    log = Path(tempfile.mkdtemp(prefix="genre-bench-serve-")) / "serve.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            command, env=environment, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    cases = []
    try:
        ready = wait_for_server(server, port, log)
        print(f"\n`{' '.join(command[2:])}` ({graph}) answered /ping after {ready:.1f} s", file=sys.stderr)
        for count in (1, 32):
            body = request_body(covers[:count])
            for clients in (1, 8):
                latencies, wall = load(port, body, count, clients, seconds)
                milliseconds = np.array(latencies) * 1000
                rate = count * len(latencies) / wall
                cases.append(
                    [
                        str(count),
                        str(clients),
                        graph,
                        str(len(latencies)),
                        f"{np.percentile(milliseconds, 50):.0f}",
                        f"{np.percentile(milliseconds, 99):.0f}",
                        f"{rate:.1f}",
                    ]
                )
                print(f"  {graph}: {count} cover(s) x {clients} client(s) done; load {load_average()}", file=sys.stderr)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=60)
    return cases


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n", 1)[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    add_model_arguments(parser)
    parser.add_argument("--size", type=int, default=500, help="side of the source JPEGs in pixels")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long each case sends requests")
    parser.add_argument("--repeats", type=int, default=5, help="times each in-process measurement is run")
    args = parser.parse_args(argv)

    from genre.cover_model import load_cover_model
    from genre.data.images import decode_image
    from genre.runtime import usable_cores

    print("\n".join(machine_lines()))
    print(f"Load average (1, 5, 15 min) at start: {load_average()}")
    with tempfile.TemporaryDirectory(prefix="genre-bench-serving-") as tmp:
        scratch = Path(tmp)
        paths = make_covers(scratch / "bench-covers", 32, args.size, seed=2015)
        covers = [path.read_bytes() for path in paths]
        uri = logged_model(scratch, args.model, args.image_size, args.crop_size, covers[0])
        classifier = load_cover_model(uri).unwrap_python_model()
        pixels = np.stack([decode_image(cover, args.image_size) for cover in covers])
        measured = in_process(classifier, covers, pixels, args.repeats)
        best = {name: min(times) for name, times in measured.items()}
        forward_rate = 32 / best["forward"]
        print(
            f"Model: {args.model}, covers decoded to {args.image_size} px, network input {classifier.network.size} px;"
            f" 32 JPEGs {args.size}x{args.size}, mean {np.mean([len(c) for c in covers]) / 1024:.0f} KiB\n"
        )
        rows = [
            ["network forward, 32 pre-decoded covers", f"{best['forward'] * 1000:.0f}", f"{forward_rate:.1f}", "1.00x"]
        ]
        for name in ("predict, 1 thread", "predict, threads"):
            label = (
                f"model predict, 32 JPEGs, decoded in {1 if name.endswith('1 thread') else usable_cores()} thread(s)"
            )
            rate = 32 / best[name]
            rows.append([label, f"{best[name] * 1000:.0f}", f"{rate:.1f}", f"{rate / forward_rate:.2f}x"])
        print("In this process (best of the repeats):\n")
        print(markdown_table(["step", "ms", "covers/s", "vs forward"], rows))

        int8_uri = logged_model(scratch, args.model, args.image_size, args.crop_size, covers[0], pixels)
        cases = []
        for graph, served in (("fused", uri), ("unfused", uri), ("int8", int8_uri)):
            cases += serve_cases(served, covers, graph, args.seconds)
        forwards = measured["forward"] + forward_times(classifier, pixels, args.repeats)
    typical_rate = 32 / statistics.median(forwards)
    rates = {(case[0], case[1], case[2]): float(case[6]) for case in cases}
    for case in cases:
        case.append(f"{float(case[6]) / typical_rate:.2f}x")
        twin = rates[(case[0], case[1], "unfused")] if case[2] != "unfused" else None
        case.append(f"{float(case[6]) / twin:.2f}x" if twin else "")
    print(
        f"\nThe network on 32 pre-decoded covers, {len(forwards)} times (before and after the server ran):"
        f" best {min(forwards) * 1000:.0f} ms, median {statistics.median(forwards) * 1000:.0f} ms,"
        f" slowest {max(forwards) * 1000:.0f} ms; median rate {typical_rate:.1f} covers/s\n"
    )
    header = ["covers/request", "clients", "graph", "requests", "p50 ms", "p99 ms", "covers/s", "vs median forward"]
    header.append("vs unfused")
    cases.sort(key=lambda case: (int(case[0]), int(case[1]), case[2]))
    print(markdown_table(header, cases))
    print(f"\nLoad average (1, 5, 15 min) at the end: {load_average()}")


if __name__ == "__main__":
    sys.exit(main())
