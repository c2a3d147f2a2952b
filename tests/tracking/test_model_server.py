"""`genre serve` (MLflow's model server) on a trained model, over real HTTP: a cover in, its genre out; garbage
gets a 400. The server is started with the README's own command line, from a shell where the venv is not active."""

from __future__ import annotations

import base64
import io
import json
import os
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genre.cli import main
from genre.data.pack import open_pack
from tests.conftest import PROJECT_ROOT
from tests.tracking.test_tracking_server import free_port


def readme_serve_command() -> list[str]:
    """The README's `genre serve ...` line, as arguments."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    (line,) = [line.split("  #")[0].strip() for line in readme.splitlines() if line.startswith("genre serve ")]
    return shlex.split(line)


def post(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=180) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def served_model(tracking_store: str, tmp_path: Path):
    assert main(["prepare", "-q", "--image-size", "16", "--out", "digits16"]) == 0
    args = ["train", "-q", "--data", "digits16", "--epochs", "2", "--conv-filters", "8", "--dense-units", "32"]
    assert main(args) == 0
    from mlflow.tracking import MlflowClient

    (run,) = MlflowClient(tracking_store).search_runs(["1"], "tags.`genre.stage` = 'train'")
    assert main(["register", "-q", "--run-id", run.info.run_id]) == 0  # genre-classifier@champion, as the README
    port = free_port()
    command = readme_serve_command()
    command[command.index("--port") + 1] = str(port)
    scripts = Path(sys.executable).parent
    command[0] = str(scripts / command[0])  # `.venv/bin/genre`: a shell where the venv is not activated
    path = [folder for folder in os.environ["PATH"].split(os.pathsep) if Path(folder).resolve() != scripts.resolve()]
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_store, "PATH": os.pathsep.join(path)}
    log = tmp_path / "serve.log"
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while True:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2):
                break
        except OSError:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
    yield url, open_pack(Path("digits16"), "full", "test")
    os.killpg(process.pid, 15)
    process.wait(timeout=120)


def jpeg_base64(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels)).resize((64, 64)).save(buffer, "JPEG", quality=95)
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.slow
def test_a_served_model_answers_a_jpeg_with_the_genre_and_probabilities(served_model) -> None:
    url, test = served_model
    rows = [[jpeg_base64(test.images[i])] for i in range(4)]
    status, body = post(f"{url}/invocations", {"dataframe_split": {"columns": ["image"], "data": rows}})
    assert status == 200, body
    predictions = body["predictions"]
    assert len(predictions) == 4
    for row in predictions:
        probabilities = {k: v for k, v in row.items() if k.startswith("p_")}
        assert set(probabilities) == {f"p_{genre}" for genre in test.genres}
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert row["genre"] == max(probabilities, key=probabilities.get).removeprefix("p_")


@pytest.mark.slow
def test_a_non_image_payload_gets_a_400_with_a_clear_message(served_model) -> None:
    url, test = served_model
    text = base64.b64encode(b"this is not an album cover").decode()
    status, body = post(f"{url}/invocations", {"dataframe_split": {"columns": ["image"], "data": [[text]]}})
    assert status == 400
    assert "row 0: not an image" in body["message"] and "Traceback" not in body["message"]


@pytest.mark.slow
def test_a_served_model_opens_no_file_a_request_names(served_model, tmp_path: Path) -> None:
    """`mlflow models predict` reads a CSV of paths; over HTTP, a path would let any client probe the server's files."""
    url, test = served_model
    cover = tmp_path / "cover.jpg"
    cover.write_bytes(base64.b64decode(jpeg_base64(test.images[0])))
    status, body = post(f"{url}/invocations", {"dataframe_split": {"columns": ["path"], "data": [[str(cover)]]}})
    assert status == 400
    assert "a served model reads no files named in a request" in body["message"]


@pytest.mark.slow
def test_an_oversized_or_absurdly_nested_request_is_refused_and_the_server_keeps_answering(served_model) -> None:
    """Issue 25, case 9: no request-size limit (a 200 MB body was read whole) and HTTP 500 for deep nesting."""
    import socket

    url, test = served_model
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as connection:  # declares 200 MB, sends 10 bytes
        connection.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Content-Length: 200000000\r\n\r\n0123456789")  # fmt: skip
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < 100:  # its JSON message
            part = connection.recv(65536)
            if not part:
                break
            answer += part
        answer = answer.decode("latin-1")
    assert answer.startswith("HTTP/1.1 413 "), answer
    assert "larger than this server takes, 67,108,864 bytes" in answer

    nested = b"[" * 200_000 + b"]" * 200_000
    request = urllib.request.Request(f"{url}/invocations", nested, {"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=180)
    assert refused.value.code == 400 and "nested deeper" in json.loads(refused.value.read())["message"]

    cover = jpeg_base64(test.images[0])  # and a good request still gets its answer
    status, body = post(f"{url}/invocations", {"dataframe_split": {"columns": ["image"], "data": [[cover]]}})
    assert status == 200 and len(body["predictions"]) == 1


def test_the_docs_serve_a_model_with_the_readmes_command() -> None:
    assert shlex.join(readme_serve_command()) in (PROJECT_ROOT / "docs" / "serving.md").read_text()


def test_serving_without_a_model_says_which_flag_is_missing(capsys) -> None:
    assert main(["serve"]) == 2
    assert "give --model-uri runs:/<run id>/model" in capsys.readouterr().err
