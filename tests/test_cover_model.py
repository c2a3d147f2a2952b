"""The network logged as an MLflow pyfunc model: loaded where `genre` is not importable, fed covers as a
client sends them, scored through `mlflow models predict`, and calibrated by a temperature, in a real SQLite tracking
store."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlflow
import mxnet as mx
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.pyfunc.scoring_server import infer_and_parse_data
from mlflow.tracking._tracking_service.utils import _use_tracking_uri
from mxnet import nd
from PIL import Image, ImageFile

from genre.cover_model import (
    FORMAT_VERSION,
    SERVER_MODEL_PATH,
    load_cover_model,
    log_calibrated_model,
    log_cover_model,
)
from genre.data.images import decode_image
from genre.models import fused
from genre.models.inputs import network_input
from genre.models.quantized import calibration_covers, quantization_settings
from tests.conftest import PROJECT_ROOT, jpeg_bytes, use_store
from tests.models.test_fused import needs_onednn, randomised

GENRES = ["folk", "jazz", "metal"]
SIZE = 16
COLUMNS = ["genre", "p_folk", "p_jazz", "p_metal"]


def png_bytes(seed: int, size: tuple[int, int] = (40, 30)) -> bytes:
    """A real PNG of smooth random colour, not square (so decoding crops and resizes)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(3, 3, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(small).resize(size, Image.Resampling.BILINEAR).save(buffer, "PNG")
    return buffer.getvalue()


COVERS = [png_bytes(1), jpeg_bytes((48, 64), seed=2), png_bytes(3, (20, 20))]


def tiny_net() -> mx.gluon.HybridBlock:
    mx.random.seed(2015)
    net = mx.gluon.nn.HybridSequential()
    net.add(mx.gluon.nn.Conv2D(4, 3), mx.gluon.nn.GlobalAvgPool2D(), mx.gluon.nn.Flatten(), mx.gluon.nn.Dense(3))
    net.initialize(mx.init.Xavier(magnitude=3))
    net.hybridize()
    net(nd.zeros((1, 3, SIZE, SIZE)))
    return net


def expected_probabilities(net: mx.gluon.HybridBlock, covers: list[bytes]) -> np.ndarray:
    """What the in-process network says about the covers, decoded as in training."""
    pixels = np.stack([decode_image(cover, SIZE) for cover in covers])
    return nd.softmax(net(network_input(nd.array(pixels, dtype="uint8"))), axis=1).asnumpy()


def expected_logits(net: mx.gluon.HybridBlock, covers: list[bytes]) -> np.ndarray:
    pixels = np.stack([decode_image(cover, SIZE) for cover in covers])
    return net(network_input(nd.array(pixels, dtype="uint8"))).asnumpy().astype(np.float64)


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def sharpened(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities raised to 1 / temperature and renormalised: softmax(logits / temperature) of their logits."""
    powered = probabilities.astype(np.float64) ** (1 / temperature)
    return powered / powered.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class Logged:
    net: mx.gluon.HybridBlock
    run_id: str
    model_uri: str
    tracking_uri: str
    folder: Path
    experiment_id: str

    @property
    def runs_uri(self) -> str:
        return f"runs:/{self.run_id}/model"

    def env(self) -> dict[str, str]:
        """A user's shell: the tracking store set, the project not on the Python path."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("MLFLOW_RUN")}
        return env | {"MLFLOW_TRACKING_URI": self.tracking_uri, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Logged]:
    """The tiny network logged once, in its own SQLite store, with a real PNG as the input example."""
    folder = tmp_path_factory.mktemp("cover-model")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch, _use_tracking_uri(uri):
        use_store(patch, uri, folder)  # MLflow's default artifact root is ./mlruns
        net = tiny_net()
        experiment_id = mlflow.MlflowClient(uri).create_experiment("covers")  # not MLflow's global active one
        with mlflow.start_run(experiment_id=experiment_id) as run:
            info = log_cover_model(net, GENRES, SIZE, example=COVERS[0])
        yield Logged(net, run.info.run_id, info.model_uri, uri, folder, experiment_id)


@pytest.fixture(scope="module")
def model(logged: Logged) -> mlflow.pyfunc.PyFuncModel:
    with _use_tracking_uri(logged.tracking_uri):
        return load_cover_model(logged.runs_uri)


@pytest.mark.slow
def test_a_fresh_process_without_the_project_loads_the_model_and_agrees_with_the_network(logged: Logged) -> None:
    for n, cover in enumerate(COVERS):
        (logged.folder / f"cover{n}.bin").write_bytes(cover)
    script = f"""
import json, sys
from pathlib import Path
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model({logged.runs_uri!r})
covers = [Path(f"cover{{n}}.bin").read_bytes() for n in range({len(COVERS)})]
result = model.predict(pd.DataFrame({{"image": covers}}))
print(json.dumps({{"genre_from": sys.modules["genre"].__file__, "result": result.to_dict(orient="split")}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=logged.folder, env=logged.env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    genre_from = Path(answer["genre_from"])
    assert PROJECT_ROOT not in genre_from.parents and genre_from.parts[-3:] == ("code", "genre", "__init__.py")

    result = pd.DataFrame(answer["result"]["data"], columns=answer["result"]["columns"])
    expected = expected_probabilities(logged.net, COVERS)
    assert list(result.columns) == COLUMNS
    np.testing.assert_allclose(result[COLUMNS[1:]].to_numpy(), expected, atol=1e-5)
    assert list(result["genre"]) == [GENRES[label] for label in expected.argmax(axis=1)]


def test_the_logged_model_declares_a_binary_image_or_a_path_in_and_genre_with_probabilities_out(
    logged: Logged,
) -> None:
    local = Path(mlflow.artifacts.download_artifacts(logged.model_uri, tracking_uri=logged.tracking_uri))
    signature = mlflow.models.Model.load(local).signature
    assert signature.inputs.to_dict() == [
        {"type": "binary", "name": "image", "required": False},
        {"type": "string", "name": "path", "required": False},
    ]
    assert [(c["name"], c["type"]) for c in signature.outputs.to_dict()] == [
        ("genre", "string"),
        ("p_folk", "double"),
        ("p_jazz", "double"),
        ("p_metal", "double"),
    ]
    serving = json.loads((local / "serving_input_example.json").read_text())["dataframe_split"]
    assert serving["columns"] == ["image"]
    assert base64.b64decode("".join(serving["data"][0][0].split())) == COVERS[0]
    assert json.loads((local / "artifacts" / "classifier.json").read_text())["genres"] == GENRES
    requirements = (local / "requirements.txt").read_text().split()
    assert {"mxnet==1.9.1", "numpy==1.23.5", "pillow==13.0.0", "mlflow==3.17.2"} <= set(requirements)


def test_bytes_base64_text_and_pixels_give_the_same_answers_in_input_order(
    logged: Logged, model: mlflow.pyfunc.PyFuncModel
) -> None:
    order = [2, 0, 1, 0]
    covers = [COVERS[n] for n in order]
    expected = expected_probabilities(logged.net, covers)

    from_bytes = model.predict(pd.DataFrame({"image": covers}, index=[10, 11, 12, 13]))
    assert list(from_bytes.columns) == COLUMNS and list(from_bytes.index) == [10, 11, 12, 13]
    np.testing.assert_allclose(from_bytes[COLUMNS[1:]].to_numpy(), expected, atol=1e-5)
    assert list(from_bytes["genre"]) == [GENRES[label] for label in expected.argmax(axis=1)]
    np.testing.assert_allclose(from_bytes[COLUMNS[1:]].sum(axis=1), 1.0, atol=1e-6)

    # What a client writes by hand, and what MLflow's own encoder writes (line breaks every 76 characters).
    text = [base64.b64encode(cover).decode() for cover in covers[:2]]
    text += [base64.encodebytes(cover).decode() for cover in covers[2:]]
    pd.testing.assert_frame_equal(model.predict(pd.DataFrame({"image": text}, index=from_bytes.index)), from_bytes)

    # Decoded pixels, at the model's size or larger (cropped and resized as decoding does: same for a PNG).
    pixels = np.stack([decode_image(cover, SIZE) for cover in covers])
    classifier = model.unwrap_python_model()
    direct = classifier.predict(None, pixels)
    np.testing.assert_allclose(direct[COLUMNS[1:]].to_numpy(), expected, atol=1e-5)
    full_size = [np.asarray(Image.open(io.BytesIO(COVERS[0])).convert("RGB")), pixels[0]]
    cells = model.predict(pd.DataFrame({"image": full_size}))
    np.testing.assert_allclose(cells[COLUMNS[1:]].to_numpy(), expected[[1, 0]], atol=1e-5)


@pytest.mark.parametrize(
    "request_body",
    [
        {"dataframe_split": {"columns": ["image"], "data": [["<cover>"]]}},
        {"dataframe_records": [{"image": "<cover>"}]},
        {"inputs": {"image": ["<cover>"]}},
        {"instances": [{"image": "<cover>"}]},
    ],
    ids=lambda body: next(iter(body)),
)
def test_every_json_format_of_the_scoring_protocol_delivers_the_cover(
    logged: Logged, model: mlflow.pyfunc.PyFuncModel, request_body: dict
) -> None:
    """MLflow decodes base64 for `dataframe_*` and hands `inputs`/`instances` on as ASCII bytes; both work."""
    text = base64.b64encode(COVERS[1]).decode()
    body = json.loads(json.dumps(request_body).replace("<cover>", text))
    result = model.predict(infer_and_parse_data(body, model.metadata.get_input_schema()))
    np.testing.assert_allclose(
        result[COLUMNS[1:]].to_numpy(), expected_probabilities(logged.net, [COVERS[1]]), atol=1e-5
    )


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (b"%PDF-1.4 a booklet, not a cover", "not an image (Pillow cannot identify the format)"),
        (COVERS[0][: len(COVERS[0]) // 2], "truncated image data"),
        ("not base64 at all!", "not an image (text that is not base64"),
        (None, "no image (empty cell)"),
    ],
)
def test_a_row_that_is_not_an_image_is_a_400_naming_the_row(
    model: mlflow.pyfunc.PyFuncModel, row: object, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Importing gluoncv (the zoo tests do) sets Pillow's global LOAD_TRUNCATED_IMAGES; a serving process does not.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)
    with pytest.raises(MlflowException) as raised:
        model.predict(pd.DataFrame({"image": [COVERS[0], COVERS[1], COVERS[2], row]}))
    assert raised.value.error_code == "INVALID_PARAMETER_VALUE" and raised.value.get_http_status_code() == 400
    assert raised.value.message.startswith(f"row 3: {reason}")


def test_pixels_of_the_wrong_kind_are_refused_with_what_was_expected(model: mlflow.pyfunc.PyFuncModel) -> None:
    classifier = model.unwrap_python_model()
    with pytest.raises(MlflowException, match=r"expected uint8 pixels of shape \(N, H, W, 3\), got float32"):
        classifier.predict(None, np.zeros((2, SIZE, SIZE, 3), np.float32))
    with pytest.raises(MlflowException, match=r"row 0: not an image \(expected \(H, W, 3\) uint8 pixels"):
        model.predict(pd.DataFrame({"image": [np.zeros((SIZE, SIZE), np.uint8)]}))


def test_a_path_column_reads_the_files_and_agrees_with_their_bytes(
    model: mlflow.pyfunc.PyFuncModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    names = ["c0.png", "sub/c1.jpg", "c2.png"]
    for name, cover in zip(names, COVERS, strict=True):
        Path(name).parent.mkdir(exist_ok=True)
        Path(name).write_bytes(cover)
    by_bytes = model.predict(pd.DataFrame({"image": COVERS}))
    pd.testing.assert_frame_equal(model.predict(pd.DataFrame({"path": names})), by_bytes)
    # A row with an image uses it; a row without one, its path.
    mixed = model.predict(pd.DataFrame({"image": [COVERS[0], None, COVERS[2]], "path": [None, names[1], "gone.jpg"]}))
    pd.testing.assert_frame_equal(mixed, by_bytes)

    Path("notes.txt").write_text("not a cover")
    with pytest.raises(MlflowException) as raised:
        model.predict(pd.DataFrame({"path": [names[0], "gone.jpg", "notes.txt"]}))
    assert raised.value.message == "row 1: gone.jpg cannot be read (No such file or directory)"
    with pytest.raises(MlflowException) as raised:
        model.predict(pd.DataFrame({"path": ["notes.txt"]}))
    assert raised.value.message == "row 0: notes.txt is not an image (PIL: cannot identify image file)"


def test_a_served_model_reads_no_file_a_request_names(
    model: mlflow.pyfunc.PyFuncModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.pyfunc import scoring_server

    assert SERVER_MODEL_PATH == scoring_server._SERVER_MODEL_PATH  # what `mlflow models serve` sets for its server
    monkeypatch.setenv(SERVER_MODEL_PATH, "file:///somewhere/model")
    with pytest.raises(MlflowException) as raised:
        model.predict(pd.DataFrame({"path": ["/etc/hostname"]}))
    assert raised.value.get_http_status_code() == 400
    assert raised.value.message.startswith("a served model reads no files named in a request (the 'path' column)")
    assert model.predict(pd.DataFrame({"image": [COVERS[1]]}))["genre"].iloc[0] in GENRES


def test_a_request_goes_through_the_network_in_one_pass_per_64_covers(
    model: mlflow.pyfunc.PyFuncModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    classifier = model.unwrap_python_model()
    network = classifier.graph
    passes: list[int] = []

    def counted(batch: nd.NDArray) -> nd.NDArray:
        passes.append(batch.shape[0])
        return network(batch)

    monkeypatch.setattr(classifier, "graph", counted)
    thirty_two = model.predict(pd.DataFrame({"image": [COVERS[n % 3] for n in range(32)]}))
    assert passes == [32]
    passes.clear()
    hundred = model.predict(pd.DataFrame({"image": [COVERS[n % 3] for n in range(100)]}))
    assert passes == [64, 36]
    pd.testing.assert_frame_equal(hundred.iloc[:32], thirty_two)
    # Decoded side by side, the first bad row is the one named.
    with pytest.raises(MlflowException, match=r"^row 1: not an image"):
        model.predict(pd.DataFrame({"image": [COVERS[0], b"%PDF junk", COVERS[1], b"junk"]}))


@pytest.mark.slow
def test_mlflow_models_predict_reads_a_csv_of_paths(logged: Logged) -> None:
    names = [f"paths/cover{n}.img" for n in range(len(COVERS))]
    (logged.folder / "paths").mkdir(exist_ok=True)
    for name, cover in zip(names, COVERS, strict=True):
        (logged.folder / name).write_bytes(cover)
    (logged.folder / "paths.csv").write_text("path\n" + "\n".join(names) + "\n")
    mlflow_cli = Path(sys.executable).parent / "mlflow"
    command = [str(mlflow_cli), "models", "predict", "-m", logged.runs_uri, "-i", "paths.csv", "-t", "csv"]
    done = subprocess.run(
        [*command, "--env-manager", "local", "-o", "predictions.json"],
        cwd=logged.folder,
        env=logged.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    predictions = pd.DataFrame(json.loads((logged.folder / "predictions.json").read_text())["predictions"])
    expected = expected_probabilities(logged.net, COVERS)
    assert list(predictions["genre"]) == [GENRES[label] for label in expected.argmax(axis=1)]
    np.testing.assert_allclose(predictions[COLUMNS[1:]].to_numpy(), expected, atol=1e-5)


@pytest.mark.slow
def test_mlflow_models_predict_prints_the_genre_and_probabilities(logged: Logged) -> None:
    request = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(COVERS[1]).decode()]]}}
    (logged.folder / "input.json").write_text(json.dumps(request))
    mlflow_cli = Path(sys.executable).parent / "mlflow"
    command = [str(mlflow_cli), "models", "predict", "-m", logged.runs_uri, "-i", "input.json", "-t", "json"]
    done = subprocess.run(
        [*command, "--env-manager", "local"],
        cwd=logged.folder,
        env=logged.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (prediction,) = json.loads(done.stdout.strip().splitlines()[-1])["predictions"]
    expected = expected_probabilities(logged.net, [COVERS[1]])[0]
    assert prediction["genre"] == GENRES[expected.argmax()]
    np.testing.assert_allclose([prediction[f"p_{name}"] for name in GENRES], expected, atol=1e-5)


def test_a_network_whose_output_does_not_match_the_genres_is_refused_before_logging() -> None:
    with pytest.raises(ValueError, match=r"scores of shape \(1, 3\) per cover, but 2 genres"):
        log_cover_model(tiny_net(), ["folk", "jazz"], SIZE, example=COVERS[0])
    with pytest.raises(ValueError, match="distinct"):
        log_cover_model(tiny_net(), ["folk", "folk", "metal"], SIZE, example=COVERS[0])


def test_a_network_exported_onto_a_full_disk_is_a_full_disk_not_an_unhybridized_network(
    tracking_store: str, small_disk, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MXNet's writer fails without an errno, or (for files this small) not at all: the export is read back.
    import errno
    import tempfile

    disk = small_disk(64)
    (disk / "filler").write_bytes(bytes(60 * 1024))  # the disk where the export is staged is full
    monkeypatch.setattr(tempfile, "tempdir", str(disk))
    with mlflow.start_run(), pytest.raises(OSError) as caught:
        log_cover_model(tiny_net(), GENRES, SIZE, COVERS[0])
    assert caught.value.errno == errno.ENOSPC
    written = Path(caught.value.filename)
    assert written.name == "network" and written.parent.name.startswith("cover-model-")


@contextmanager
def run_in_store(logged: Logged) -> Iterator[None]:
    """A new run in the logged model's store and experiment."""
    with _use_tracking_uri(logged.tracking_uri), mlflow.start_run(experiment_id=logged.experiment_id):
        yield


def classifier_settings(model_uri: str, tracking_uri: str) -> dict:
    local = Path(mlflow.artifacts.download_artifacts(model_uri, tracking_uri=tracking_uri))
    return json.loads((local / "artifacts" / "classifier.json").read_text())


def test_a_model_logged_with_a_temperature_divides_the_logits_by_it(logged: Logged, model) -> None:
    with run_in_store(logged):
        info = log_cover_model(logged.net, GENRES, SIZE, example=COVERS[0], temperature=2.5)
    with _use_tracking_uri(logged.tracking_uri):
        warm = load_cover_model(info.model_uri).predict(pd.DataFrame({"image": COVERS}))
    assert classifier_settings(info.model_uri, logged.tracking_uri)["temperature"] == 2.5
    assert classifier_settings(logged.model_uri, logged.tracking_uri)["temperature"] == 1.0

    probabilities = warm[COLUMNS[1:]].to_numpy()
    np.testing.assert_allclose(probabilities, softmax(expected_logits(logged.net, COVERS) / 2.5), atol=1e-5)
    plain = model.predict(pd.DataFrame({"image": COVERS}))[COLUMNS[1:]].to_numpy()
    np.testing.assert_allclose(probabilities, sharpened(plain, 2.5), atol=1e-5)
    assert probabilities.max(axis=1).mean() < plain.max(axis=1).mean() - 0.01  # softer, visibly
    assert list(warm["genre"]) == [GENRES[label] for label in plain.argmax(axis=1)]

    with pytest.raises(ValueError, match="positive number, got 0"), run_in_store(logged):
        log_cover_model(logged.net, GENRES, SIZE, example=COVERS[0], temperature=0.0)


def test_a_calibrated_model_is_a_new_version_that_serves_calibrated_probabilities(
    logged: Logged, model: mlflow.pyfunc.PyFuncModel
) -> None:
    plain = model.predict(pd.DataFrame({"image": COVERS}))
    with run_in_store(logged):
        first = log_cover_model(logged.net, GENRES, SIZE, example=COVERS[0], registered_model_name="cover-genres")
        info = log_calibrated_model(
            model, 0.4, example=COVERS[2], name="calibrated", registered_model_name="cover-genres"
        )
    assert (first.registered_model_version, info.registered_model_version) == (1, 2)
    with _use_tracking_uri(logged.tracking_uri):
        calibrated = load_cover_model("models:/cover-genres/2")
        answer = calibrated.predict(pd.DataFrame({"image": COVERS}))
    np.testing.assert_allclose(answer[COLUMNS[1:]].to_numpy(), sharpened(plain[COLUMNS[1:]].to_numpy(), 0.4), atol=1e-5)
    assert list(answer["genre"]) == list(plain["genre"])

    # The same network, genres and signature; the new example; only the temperature (and the format) changed.
    before = classifier_settings(logged.model_uri, logged.tracking_uri)
    after = classifier_settings(info.model_uri, logged.tracking_uri)
    assert after == before | {"temperature": 0.4, "format_version": FORMAT_VERSION}
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri, tracking_uri=logged.tracking_uri))
    assert mlflow.models.Model.load(local).signature == model.metadata.signature
    serving = json.loads((local / "serving_input_example.json").read_text())["dataframe_split"]
    assert base64.b64decode("".join(serving["data"][0][0].split())) == COVERS[2]
    assert (local / "code" / "genre" / "cover_model.py").is_file()

    # Calibrating the calibrated model again composes: 0.4 * 5 = 2.
    with run_in_store(logged):
        again = log_calibrated_model(calibrated, 5.0, example=COVERS[0], name="recalibrated")
    assert classifier_settings(again.model_uri, logged.tracking_uri)["temperature"] == pytest.approx(2.0)
    with _use_tracking_uri(logged.tracking_uri):
        twice = load_cover_model(again.model_uri).predict(pd.DataFrame({"image": COVERS}))
    np.testing.assert_allclose(twice[COLUMNS[1:]].to_numpy(), sharpened(plain[COLUMNS[1:]].to_numpy(), 2.0), atol=1e-5)


def test_a_model_logged_before_temperatures_loads_uncalibrated_and_can_be_calibrated(
    logged: Logged, tmp_path: Path
) -> None:
    local = Path(
        mlflow.artifacts.download_artifacts(logged.model_uri, tracking_uri=logged.tracking_uri, dst_path=tmp_path)
    )
    settings_file = local / "artifacts" / "classifier.json"
    settings = json.loads(settings_file.read_text())
    del settings["temperature"]
    settings_file.write_text(json.dumps(settings | {"format_version": 2}))

    old = mlflow.pyfunc.load_model(str(local))
    assert old.unwrap_python_model().temperature == 1.0
    answer = old.predict(pd.DataFrame({"image": COVERS}))
    np.testing.assert_allclose(answer[COLUMNS[1:]].to_numpy(), expected_probabilities(logged.net, COVERS), atol=1e-5)

    with run_in_store(logged):
        info = log_calibrated_model(old, 1.5, example=COVERS[0], name="calibrated")
    assert classifier_settings(info.model_uri, logged.tracking_uri) == settings | {
        "format_version": FORMAT_VERSION,
        "temperature": 1.5,
    }


class Constant(mlflow.pyfunc.PythonModel):
    """A pyfunc model that is not a cover model."""

    def predict(self, context: object, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return pd.DataFrame({"genre": ["jazz"] * len(model_input)})


def test_only_a_cover_model_can_be_calibrated(logged: Logged, model: mlflow.pyfunc.PyFuncModel) -> None:
    with run_in_store(logged):
        other = mlflow.pyfunc.log_model(name="constant", python_model=Constant(), pip_requirements=[])
        with _use_tracking_uri(logged.tracking_uri):
            constant = mlflow.pyfunc.load_model(other.model_uri)
        with pytest.raises(ValueError, match="only a cover model .* can be calibrated, not Constant"):
            log_calibrated_model(constant, 2.0, example=COVERS[0], name="calibrated")
        with pytest.raises(ValueError, match="positive number"):
            log_calibrated_model(model, -1.0, example=COVERS[0], name="calibrated")


def batch_norm_net() -> mx.gluon.HybridBlock:
    """Convolution, batch norm (statistics of its own) and ReLU6: what oneDNN folds into one kernel."""
    net = mx.gluon.nn.HybridSequential()
    net.add(mx.gluon.nn.Conv2D(8, 3, in_channels=3), mx.gluon.nn.BatchNorm(in_channels=8))
    net.add(mx.gluon.nn.HybridLambda(lambda F, x: F.clip(x, 0, 6)))
    net.add(mx.gluon.nn.GlobalAvgPool2D(), mx.gluon.nn.Flatten(), mx.gluon.nn.Dense(3, in_units=8))
    net.initialize(mx.init.Xavier(magnitude=3))
    randomised(net)
    net.hybridize()
    net(nd.zeros((1, 3, SIZE, SIZE)))
    return net


@needs_onednn
def test_a_loaded_model_predicts_through_the_fused_graph_what_the_unfused_network_says(
    logged: Logged, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = batch_norm_net()
    with run_in_store(logged):
        info = log_cover_model(net, GENRES, SIZE, example=COVERS[0], name="batch-norm")
    expected = expected_probabilities(net, COVERS)

    fused_model = load_cover_model(info.model_uri)
    monkeypatch.setenv(fused.SWITCH, "0")
    unfused_model = load_cover_model(info.model_uri)  # as a model logged before fusion ran, or MXNet without oneDNN

    assert fused_model.unwrap_python_model().graph.fused and not unfused_model.unwrap_python_model().graph.fused
    for model in (fused_model, unfused_model):
        answer = model.predict(pd.DataFrame({"image": COVERS}))
        np.testing.assert_allclose(answer[COLUMNS[1:]].to_numpy(), expected, rtol=0, atol=1e-4)
        assert list(answer["genre"]) == [GENRES[label] for label in expected.argmax(axis=1)]


def calibration_pixels(count: int) -> np.ndarray:
    """`count` decoded training-like covers, uint8 `(count, SIZE, SIZE, 3)`."""
    return np.stack([decode_image(png_bytes(100 + seed, (24, 24)), SIZE) for seed in range(count)])


@needs_onednn
def test_a_model_logged_with_calibration_covers_scores_through_its_int8_copy_and_falls_back_to_float(
    logged: Logged, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = batch_norm_net()
    with run_in_store(logged):
        info = log_cover_model(net, GENRES, SIZE, example=COVERS[0], name="int8", calibration=calibration_pixels(40))
    expected = expected_probabilities(net, COVERS)
    settings = classifier_settings(info.model_uri, logged.tracking_uri)
    assert settings["format_version"] == FORMAT_VERSION == 5
    assert settings["quantized"] == quantization_settings(40) and settings["quantized"]["mode"] == "naive"

    int8_model = load_cover_model(info.model_uri)
    monkeypatch.setenv(fused.SWITCH, "0")  # a machine where INT8 cannot run: the float network answers
    float_model = load_cover_model(info.model_uri)

    assert int8_model.unwrap_python_model().precision == "int8"
    assert float_model.unwrap_python_model().precision == "float32"
    int8_answer = int8_model.predict(pd.DataFrame({"image": COVERS}))
    float_answer = float_model.predict(pd.DataFrame({"image": COVERS}))
    np.testing.assert_allclose(float_answer[COLUMNS[1:]].to_numpy(), expected, rtol=0, atol=1e-4)
    got = int8_answer[COLUMNS[1:]].to_numpy()
    assert not np.array_equal(got, float_answer[COLUMNS[1:]].to_numpy())  # another graph ran
    np.testing.assert_allclose(got, expected, rtol=0, atol=0.05)  # 8-bit arithmetic, close to the float answer
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)


@needs_onednn
def test_a_float_model_is_quantized_after_loading_and_keeps_float_heatmaps(logged: Logged) -> None:
    with _use_tracking_uri(logged.tracking_uri):
        classifier = load_cover_model(logged.runs_uri).unwrap_python_model()
    pixels = np.stack([decode_image(cover, SIZE) for cover in COVERS])
    before = classifier.predict(None, pixels)
    heatmaps_before = classifier.explainer().heatmaps(pixels, np.zeros(len(pixels), dtype=np.int64))

    classifier.quantize(calibration_pixels(32))

    assert classifier.precision == "int8" and classifier.quantized["covers"] == 32
    after = classifier.predict(None, pixels)
    np.testing.assert_allclose(after[COLUMNS[1:]].to_numpy(), before[COLUMNS[1:]].to_numpy(), rtol=0, atol=0.05)
    heatmaps_after = classifier.explainer().heatmaps(pixels, np.zeros(len(pixels), dtype=np.int64))
    np.testing.assert_array_equal(heatmaps_after, heatmaps_before)  # gradients still come from the float network


def test_calibration_covers_are_spread_evenly_over_the_training_covers() -> None:
    images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1).repeat(3, axis=3)
    assert calibration_covers(images, 4)[:, 0, 0, 0].tolist() == [0, 3, 6, 9]
    assert calibration_covers(images, 50)[:, 0, 0, 0].tolist() == list(range(10))  # all when there are fewer
    with pytest.raises(ValueError, match="at least one cover"):
        calibration_covers(images, 0)


@needs_onednn
def test_calibration_covers_of_the_wrong_size_are_refused_before_logging(logged: Logged) -> None:
    with run_in_store(logged), pytest.raises(ValueError, match=rf"calibration covers must be uint8 \(N, {SIZE}"):
        log_cover_model(tiny_net(), GENRES, SIZE, example=COVERS[0], name="x", calibration=np.zeros((2, 8, 8, 3)))
