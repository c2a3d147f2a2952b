"""The one place that turns a device request into MXNet contexts; everything downstream takes the list."""

from __future__ import annotations

import mxnet as mx

from genre.errors import ConfigError, GenreError

CUDA_HINT = (
    "install a CUDA build of MXNet (e.g. `pip install mxnet-cu112==1.9.1`, kernels up to sm_86) on a machine "
    "with an NVIDIA GPU, or leave --gpus empty to train on the CPU"
)


class DeviceError(GenreError):
    """A requested device that is not there. Never fall back to the CPU silently."""


def parse_gpus(text: str) -> list[int]:
    """'0,1' -> [0, 1]; '' -> []."""
    try:
        ids = [int(part) for part in text.replace(" ", "").split(",") if part != ""]
    except ValueError:
        raise ConfigError(f"--gpus takes comma-separated GPU numbers like '0,1', got {text!r}") from None
    if any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise ConfigError(f"--gpus takes distinct GPU numbers >= 0, got {text!r}")
    return ids


def contexts(gpus: str = "", cpu_contexts: int = 1) -> list[mx.Context]:
    """The training contexts: `mx.gpu(i)` for each requested GPU, else `cpu_contexts` CPU contexts.

    Several CPU contexts (`mx.cpu(0)`, `mx.cpu(1)`) run the same data-parallel code as several GPUs:
    that is how the multi-device path is tested on machines without GPUs.
    """
    ids = parse_gpus(gpus)
    if not ids:
        if cpu_contexts < 1:
            raise ConfigError(f"--cpu-contexts must be >= 1, got {cpu_contexts}")
        return [mx.cpu(i) for i in range(cpu_contexts)]
    if not mx.runtime.Features().is_enabled("CUDA"):
        raise DeviceError(f"GPU {gpus} requested, but this MXNet build has no CUDA support; {CUDA_HINT}")
    available = mx.context.num_gpus()
    missing = [i for i in ids if i >= available]
    if missing:
        raise DeviceError(f"GPU {missing[0]} requested, but this machine has {available} GPU(s); {CUDA_HINT}")
    return [mx.gpu(i) for i in ids]


def describe(ctx_list: list[mx.Context]) -> str:
    """'cpu(0),cpu(1)': how contexts appear in params and logs."""
    return ",".join(str(ctx) for ctx in ctx_list)
