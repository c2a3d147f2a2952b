"""The trained network as an `mlflow.pyfunc` model: covers in, genre and per-genre probabilities out.

MLflow 3 has no Gluon flavour, so the model is a `PythonModel` around the exported symbol graph. It ships
the `genre` package itself (`code_paths`), so it loads wherever mxnet is installed, with or without
`genre`, and decodes covers with the same code (`decode_image`, `network_input`) as training did.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import mxnet as mx
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types import ColSpec, DataType, Schema
from mxnet import nd
from mxnet.base import MXNetError

import genre
from genre.data.cover_files import read_cover
from genre.data.images import InvalidImage, base64_image_bytes, decode_image, resized_pixels
from genre.disk import failed_write
from genre.errors import ConfigError
from genre.metrics import apply_temperature
from genre.models.explain import Explainer
from genre.models.forest_arrays import FIELDS, forest_probabilities
from genre.models.fused import InferenceGraph
from genre.models.inputs import NetworkInput, network_input
from genre.models.quantized import (
    Int8Graph,
    int8_copy,
    quantization_settings,
    quantize_network,
    saved_int8_graph,
)
from genre.predictions import PROBABILITY_PREFIX
from genre.runtime import usable_cores
from genre.tracking.store import check_reachable, tracking_uri

IMAGE_COLUMN = "image"
PATH_COLUMN = "path"  # a cover file this process can read: `mlflow models predict -i paths.csv -t csv`
SERVER_MODEL_PATH = "__pyfunc_model_path__"  # set in `mlflow models serve`'s server: scoring_server._SERVER_MODEL_PATH
GENRE_COLUMN = "genre"
BATCH_SIZE = 64
INPUT_NAME = "data"  # what `HybridBlock.export` calls the network's input
FORMAT_VERSION = 5  # 2 added `input_size`: the network's side, cropped from `image_size` covers; 3 `temperature`;
# 4 `head`: "forest" when the network gives features and a random forest (the `forest` artifact) the probabilities;
# 5 `quantized`: the calibration of an INT8 copy of the network (artifacts `int8_symbol`, `int8_params`)
INT8_ARTIFACTS = ("int8_symbol", "int8_params")
BASE64_TEXT = re.compile(rb"[A-Za-z0-9+/=\s]+")  # no image format's bytes are all of these
WHAT_TO_SEND = "send encoded JPEG/PNG bytes (base64 text in JSON) or (H, W, 3) uint8 pixels"


def probability_column(genre_name: str) -> str:
    return f"{PROBABILITY_PREFIX}{genre_name}"


class CoverClassifier(mlflow.pyfunc.PythonModel):
    """Predicts the genre of album covers with an exported Gluon network (logits out), on the CPU.

    Artifacts: `symbol` and `params` (from `HybridBlock.export`) and `classifier` (JSON: `genres`,
    index = label; `image_size`, the side covers are decoded to; `input_size`, the centre crop the network takes
    (absent in format 1: the whole image); `mean`/`std` of the normalisation; `temperature`, what the logits are
    divided by before the softmax, fitted on validation covers to calibrate the probabilities (absent before
    format 3: 1, the network's own softmax); `head`, "forest" when the network outputs features and the `forest`
    artifact (`genre.models.forest_arrays`, an `.npz`) turns them into probabilities; `quantized`, present when the
    artifacts `int8_symbol` and `int8_params` hold an INT8 copy of the network (`genre.models.quantized`), which then
    scores the covers wherever oneDNN runs (`precision` says which graph does).
    """

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.artifacts: dict[str, str] = dict(context.artifacts)  # local paths: `log_calibrated_model` re-logs them
        info = json.loads(Path(context.artifacts["classifier"]).read_text())
        self.genres: list[str] = list(info["genres"])
        self.temperature: float = float(info.get("temperature", 1.0))
        self.image_size: int = int(info["image_size"])
        self.forest: dict[str, np.ndarray] | None = None
        if info.get("head") == "forest":
            with np.load(context.artifacts["forest"]) as arrays:
                self.forest = {name: arrays[name] for name in FIELDS}
        self.network = NetworkInput(
            int(info.get("input_size", self.image_size)), tuple(info["mean"]), tuple(info["std"])
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Cannot decide type", UserWarning)  # the input's dtype comes later
            self.net = mx.gluon.SymbolBlock.imports(
                context.artifacts["symbol"], [INPUT_NAME], context.artifacts["params"], ctx=mx.cpu()
            )
        # Memory planned once and kept between calls (a new batch size plans again): a batch of 64 scored in 0.68x
        # the time for the small conv net at 64 px, 0.91x for ResNet-18 at 128 and 0.86x for Lite0 (docs/benchmarks.md);
        # and oneDNN's fused graph where it runs (`genre.models.fused`).
        self.quantized: dict[str, Any] = info.get("quantized") or {}
        int8 = saved_int8_graph([self.artifacts.get(name, "") for name in INT8_ARTIFACTS]) if self.quantized else None
        self.graph: Any = int8 or InferenceGraph(self.net, mx.cpu())
        self.precision = "int8" if int8 else "float32"
        self.lock = threading.Lock()  # the scoring server predicts from several threads; a cached op is not safe
        # Pillow releases the GIL while it decodes and resizes, so threads decode a request's covers side by side.
        self.decoder = ThreadPoolExecutor(max_workers=usable_cores(), thread_name_prefix="cover-decode")

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext | None,
        model_input: pd.DataFrame,  # or a uint8 array; MLflow warns at import about a union hint here
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Genre and probabilities per cover, in input order (a DataFrame keeps its index).

        `model_input` is a DataFrame with an `image` column whose cells are encoded image bytes, base64 text
        of them (str, or ASCII bytes), or `(H, W, 3)` uint8 pixels, and/or a `path` column naming cover files this
        process reads (for a row whose `image` is empty; refused by a model served over HTTP, which must not open
        files a request names); or a uint8 array `(N, H, W, 3)` when called directly
        (`unwrap_python_model().predict(None, pixels)`: MLflow's signature check refuses arrays).
        Pixels of another size are centre-cropped and resized as decoding does. The result has a `genre`
        column (the top-1 name) and one softmax probability column `p_<genre>` (float64) per genre.

        The rows go through the network `BATCH_SIZE` at a time (a request of up to 64 covers in one pass), each
        batch's covers decoded in parallel threads. A row that cannot be used raises `MlflowException`
        INVALID_PARAMETER_VALUE naming it ("row 3: ...", counted from 0), which the scoring server answers with
        HTTP 400.
        """
        cells = _cells(model_input)
        probabilities = [
            self.probabilities(self._pixels(cells[start : start + BATCH_SIZE], start))
            for start in range(0, len(cells), BATCH_SIZE)
        ]
        table = np.concatenate(probabilities) if probabilities else np.zeros((0, len(self.genres)))
        index = model_input.index if isinstance(model_input, pd.DataFrame) else None
        result = pd.DataFrame(
            {probability_column(name): table[:, label].astype(np.float64) for label, name in enumerate(self.genres)},
            index=index,
        )
        result.insert(0, GENRE_COLUMN, [self.genres[label] for label in table.argmax(axis=1)])
        return result

    def _pixels(self, cells: Sequence[Any], first_row: int) -> np.ndarray:
        """`(n, size, size, 3)` uint8 of the cells of rows `first_row...`; encoded covers are decoded in threads."""
        rows = range(first_row, first_row + len(cells))
        if len(cells) < 2 or all(isinstance(cell, np.ndarray) for cell in cells):
            return np.stack([_row_pixels(row, cell, self.image_size) for row, cell in zip(rows, cells, strict=True)])
        sizes = [self.image_size] * len(cells)
        return np.stack(list(self.decoder.map(_row_pixels, rows, cells, sizes)))  # raises for the first bad row

    def quantize(self, pixels: np.ndarray) -> None:
        """Score covers with an INT8 copy of the network from now on, its ranges calibrated on `pixels`, uint8
        `(N, image_size, image_size, 3)` training covers (`calibration_covers`); nothing changes if the model already
        has one. `QuantizationUnavailable` where INT8 cannot run (no oneDNN)."""
        if self.precision == "int8":
            return
        inputs = network_input(nd.array(pixels, ctx=mx.cpu(), dtype="uint8"), self.network).asnumpy()
        with self.lock:
            self.graph, self.precision = Int8Graph(quantize_network(self.net, inputs)), "int8"
            self.quantized = quantization_settings(len(pixels))

    def explainer(self, maps: str | None = None) -> Explainer:
        """Heatmaps and embeddings of this model's network, sharing its loaded parameters; `maps` names the heatmap's
        layer (default: the last spatial map; see `genre.models.explain.find_layers`). A forest head has no
        gradient and no genre scores in the graph: refused."""
        if self.forest is not None:
            raise ConfigError(
                "this model decides with a random forest on network features, which has no gradient for heatmaps "
                "and no genre scores in its network for cover maps or neighbours: read its mistakes and calibration "
                "alone (genre interpret --heatmaps 0 --cover-map none --neighbours 0), or explain a network"
            )
        return Explainer(mx.sym.load(self.artifacts["symbol"]), self.net.collect_params(), self.network, maps=maps)

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Softmax probabilities `(N, genres)` float32 of `(N, image_size, image_size, 3)` uint8 covers, in one
        pass through the network (the caller picks `N`)."""
        batch = network_input(nd.array(pixels, ctx=mx.cpu(), dtype="uint8"), self.network)
        with self.lock:
            outputs = self.graph(batch)
            if self.forest is None:
                return nd.softmax(outputs / self.temperature, axis=1).asnumpy()
            features = outputs.asnumpy()
        probabilities = forest_probabilities(self.forest, features)
        if self.temperature != 1.0:
            probabilities = apply_temperature(probabilities, self.temperature)
        return probabilities.astype(np.float32)


def _cells(model_input: pd.DataFrame | np.ndarray) -> Sequence[Any]:
    """One cell per row: its `image`, else its `path` as a `Path`."""
    if isinstance(model_input, pd.DataFrame):
        columns = model_input.columns
        if IMAGE_COLUMN not in columns and PATH_COLUMN not in columns:
            raise MlflowException.invalid_parameter_value(
                f"the input has no '{IMAGE_COLUMN}' column (columns: {list(columns)}); {WHAT_TO_SEND} "
                f"in a column named '{IMAGE_COLUMN}'"
            )
        images = model_input[IMAGE_COLUMN].tolist() if IMAGE_COLUMN in columns else [None] * len(model_input)
        if PATH_COLUMN not in columns:
            return images
        paths = model_input[PATH_COLUMN].tolist()
        named = [
            Path(path) if _missing(image) and isinstance(path, str) and path else image
            for image, path in zip(images, paths, strict=True)
        ]
        if os.environ.get(SERVER_MODEL_PATH) and any(isinstance(cell, Path) for cell in named):
            raise MlflowException.invalid_parameter_value(
                f"a served model reads no files named in a request (the '{PATH_COLUMN}' column); {WHAT_TO_SEND} "
                f"in the '{IMAGE_COLUMN}' column"
            )
        return named
    if isinstance(model_input, np.ndarray):
        if model_input.ndim != 4 or model_input.shape[-1] != 3 or model_input.dtype != np.uint8:
            raise MlflowException.invalid_parameter_value(
                f"expected uint8 pixels of shape (N, H, W, 3), got {model_input.dtype} {model_input.shape}"
            )
        return list(model_input)
    raise MlflowException.invalid_parameter_value(
        f"expected a DataFrame with an '{IMAGE_COLUMN}' column or a uint8 array (N, H, W, 3), "
        f"got {type(model_input).__name__}"
    )


def _missing(cell: Any) -> bool:
    return cell is None or (pd.api.types.is_scalar(cell) and pd.isna(cell))


def _row_pixels(row: int, cell: Any, size: int) -> np.ndarray:
    """One cell as `(size, size, 3)` uint8, or `MlflowException` naming the row and what was wrong."""
    try:
        if isinstance(cell, np.ndarray):
            return resized_pixels(cell, size)
        if isinstance(cell, Path):
            return read_cover(cell, size)
        if isinstance(cell, str):
            return decode_image(base64_image_bytes(cell), size)
        if isinstance(cell, bytes | bytearray | memoryview):
            cell = bytes(cell)
            # MLflow's `inputs`/`instances` JSON formats hand base64 text on undecoded, as ASCII bytes.
            if BASE64_TEXT.fullmatch(cell):
                cell = base64_image_bytes(cell.decode("ascii"))
            return decode_image(cell, size)
        if _missing(cell):
            raise InvalidImage("no image (empty cell)")
        raise InvalidImage(f"not an image (a {type(cell).__name__})")
    except InvalidImage as error:
        what_to_send = "" if isinstance(cell, Path) else f"; {WHAT_TO_SEND}"  # a file: its name says it all
        raise MlflowException.invalid_parameter_value(f"row {row}: {error}{what_to_send}") from None


def cover_signature(genres: Sequence[str]) -> ModelSignature:
    """A binary `image` column or a string `path` column in (each optional to MLflow: `predict` wants one of
    them); `genre` (string) and one `p_<genre>` (double) per genre out."""
    inputs = [ColSpec(DataType.binary, IMAGE_COLUMN, required=False)]
    inputs += [ColSpec(DataType.string, PATH_COLUMN, required=False)]
    outputs = [ColSpec(DataType.string, GENRE_COLUMN)]
    outputs += [ColSpec(DataType.double, probability_column(name)) for name in genres]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def model_requirements() -> list[str]:
    """What the model needs to load, pinned to the versions this process runs (the project's lock file).

    mxnet is pinned by its module version: on a GPU machine the installed distribution is `mxnet-cu*`,
    and serving needs only the CPU build.
    """
    pinned = [f"mxnet=={mx.__version__}"]
    pinned += [f"{name}=={version(name)}" for name in ("numpy", "pillow", "pandas", "pyyaml", "mlflow")]
    return pinned


def log_cover_model(
    net: mx.gluon.HybridBlock,
    genres: Sequence[str],
    image_size: int,
    example: bytes,
    *,
    name: str = "model",
    registered_model_name: str | None = None,
    network: NetworkInput | None = None,
    temperature: float = 1.0,
    forest: dict[str, np.ndarray] | None = None,
    calibration: np.ndarray | None = None,
) -> ModelInfo:
    """Log `net` (hybridized; outputs one logit per genre) to the active run as a `CoverClassifier`.

    `genres[label]` names the label the network was trained with; `image_size` is the side, in pixels, of the
    packed images it was trained on; `network` the input it takes (the centre crop's side and the normalisation;
    default: the whole `image_size` image, ImageNet statistics); `example` is one real encoded cover (JPEG/PNG
    bytes), stored as the input example and
    run through the network first, so a net whose output does not match `genres` fails here; `temperature` divides
    the logits before the softmax (1: the network's own probabilities; see `log_calibrated_model`). With
    `forest` (`genre.models.forest_arrays.forest_arrays`), `net` outputs features and the forest's probabilities
    are the model's. With `calibration` (uint8 training covers, `calibration_covers`), the model also holds an INT8
    copy of the network calibrated on them, which scores covers wherever oneDNN runs. Returns MLflow's `ModelInfo`
    (`model_uri` is `models:/<model_id>`; `runs:/<run_id>/<name>`
    works too).
    """
    genres = list(genres)
    if not genres or len(set(genres)) != len(genres) or not all(genres):
        raise ValueError(f"genres must be distinct, non-empty names, got {genres}")
    _check_temperature(temperature)
    if not isinstance(net, mx.gluon.HybridBlock):
        raise TypeError(f"only a HybridBlock can be exported for serving, got {type(net).__name__}")
    network = network or NetworkInput(image_size)
    context = next(iter(net.collect_params().values())).list_ctx()[0]
    pixels = decode_image(example, image_size)
    scores = net(network_input(nd.array(pixels[None], ctx=context, dtype="uint8"), network))
    if forest is not None:
        scores = forest_probabilities(forest, scores.asnumpy())
    if scores.shape != (1, len(genres)):
        raise ValueError(f"the network gives scores of shape {scores.shape} per cover, but {len(genres)} genres")
    with tempfile.TemporaryDirectory(prefix="cover-model-") as folder:
        prefix = Path(folder) / "network"
        try:
            net.export(str(prefix))
            mx.sym.load(f"{prefix}-symbol.json")  # read back: MXNet's writer can drop a failed write's end silently
            nd.load(f"{prefix}-0000.params")
        except MXNetError as error:  # a write that failed, with no errno: the disk is full unless it has room
            needed = sum(int(np.prod(p.shape)) * np.dtype(p.dtype).itemsize for p in net.collect_params().values())
            raise failed_write(prefix, needed, str(error).strip().splitlines()[-1]) from None
        except RuntimeError as error:
            raise ValueError(f"cannot export the network ({error}); call net.hybridize() before training") from error
        settings = {
            "format_version": FORMAT_VERSION,
            "genres": genres,
            "image_size": image_size,
            "input_size": network.size,
            "mean": list(network.mean),
            "std": list(network.std),
            "temperature": float(temperature),
        }
        files = {"symbol": f"{prefix}-symbol.json", "params": f"{prefix}-0000.params"}
        if forest is not None:
            settings["head"] = "forest"
            files["forest"] = f"{prefix}-forest.npz"
            np.savez_compressed(files["forest"], **{name: forest[name] for name in FIELDS})
        if calibration is not None:
            written = int8_copy(files["symbol"], files["params"], calibration, image_size, network, f"{prefix}-int8")
            files |= dict(zip(INT8_ARTIFACTS, written, strict=True))
            settings["quantized"] = quantization_settings(len(calibration))
        return _log_classifier(files, settings, cover_signature(genres), example, name, registered_model_name)


def log_calibrated_model(
    model: mlflow.pyfunc.PyFuncModel,
    temperature: float,
    example: bytes,
    *,
    name: str,
    registered_model_name: str | None = None,
) -> ModelInfo:
    """Log `model` (a loaded cover model) again to the active run, its probabilities calibrated by `temperature`
    (from `genre.metrics.fit_temperature` on its validation predictions), so serving returns calibrated ones.

    The network, genres, sizes, normalisation and signature are the model's; its temperature becomes the model's own
    times `temperature`, since the temperature was fitted to the probabilities the model gives (calibrating a
    calibrated model composes). `example` (one real encoded cover) is the input example. The model ships this
    process's `genre` code and requirements, as `log_cover_model` does. `registered_model_name` registers it as a
    new version of that model. Returns MLflow's `ModelInfo`.
    """
    _check_temperature(temperature)
    try:
        classifier = model.unwrap_python_model()
    except MlflowException:  # a flavour other than a PythonModel (sklearn, ...)
        classifier = None
    if not isinstance(classifier, CoverClassifier):
        kind = type(classifier).__name__ if classifier is not None else f"a {'/'.join(model.metadata.flavors)} model"
        raise ValueError(
            f"only a cover model (a CoverClassifier, as log_cover_model logs) can be calibrated, not {kind}"
        )
    settings = json.loads(Path(classifier.artifacts["classifier"]).read_text())
    settings |= {"format_version": FORMAT_VERSION, "temperature": classifier.temperature * temperature}
    files = {name: path for name, path in classifier.artifacts.items() if name != "classifier"}
    signature = model.metadata.signature or cover_signature(classifier.genres)
    return _log_classifier(files, settings, signature, example, name, registered_model_name)


def _check_temperature(temperature: float) -> None:
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"the temperature must be a positive number, got {temperature}")


# What MLflow runs to make the model when it loads it; `genre` is the model's own copy (its `code_paths`).
MODEL_CODE = """\"\"\"The genre cover model: a `genre.cover_model.CoverClassifier` (logged from code by `genre`).\"\"\"

import mlflow

from genre.cover_model import CoverClassifier

mlflow.models.set_model(CoverClassifier())
"""


def _log_classifier(
    files: dict[str, str],
    settings: dict[str, Any],
    signature: ModelSignature,
    example: bytes,
    name: str,
    registered_model_name: str | None,
) -> ModelInfo:
    """Log a `CoverClassifier` of the exported network `files` (`symbol`, `params`: paths) and `settings` (written
    as its `classifier.json`) to the active run, with this process's `genre` code and requirements.

    The model is logged from code (`MODEL_CODE`, MLflow's "models from code"), not as a pickled object: nothing
    is unpickled to load it, and MLflow has no pickling to warn about."""
    with tempfile.TemporaryDirectory(prefix="cover-settings-") as folder:
        classifier = Path(folder) / "classifier.json"
        classifier.write_text(json.dumps(settings, indent=2))
        code = Path(folder) / "cover_classifier.py"
        code.write_text(MODEL_CODE)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(code),
            artifacts=files | {"classifier": str(classifier)},
            signature=signature,
            input_example=pd.DataFrame({IMAGE_COLUMN: [example]}),
            code_paths=[str(Path(genre.__file__).parent)],
            pip_requirements=model_requirements(),
            registered_model_name=registered_model_name,
        )


def reach_model_store(model_uri: str) -> None:
    """A model held by the tracking store (runs:/, models:/) needs it: check it answers before loading the model,
    which would otherwise retry for minutes."""
    if model_uri.startswith(("runs:/", "models:/", "mlflow-artifacts:/")):
        check_reachable()


def load_cover_model(model_uri: str) -> mlflow.pyfunc.PyFuncModel:
    """The logged model, ready for `predict(DataFrame with an 'image' column)`.

    MLflow checks the input against the signature first, so a bare `(N, H, W, 3)` array is refused here;
    pass `pd.DataFrame({"image": list(pixels)})`, or call `.unwrap_python_model().predict(None, pixels)`.
    The model is read from the store genre uses (`tracking_uri()`), as every stage's run is.
    """
    mlflow.set_tracking_uri(tracking_uri())
    return mlflow.pyfunc.load_model(model_uri)
