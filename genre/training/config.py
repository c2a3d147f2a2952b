"""The training configuration: network, augmentation, optimisation, devices and run settings in one place.

Flat on purpose: every field is one `genre train` flag, one `MLproject` parameter and one YAML key.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from genre.config import SEEDS, check_range, setting
from genre.data.config import DatasetChoice, FoldChoice
from genre.data.transforms import AugmentSpec
from genre.errors import ConfigError
from genre.models.spec import PROBE_C, NetworkSpec, QuantizeChoice, require_loaded_weights
from genre.runtime import usable_cores
from genre.training.checkpoint import DEFAULT_CHECKPOINT_DIR

log = logging.getLogger(__name__)

# Bounds past any sensible run, so a typo is one line, not hours of a hopeless run or an MXNet traceback.
MAX_LEARNING_RATE = 10.0
MAX_BATCH_SIZE = 65536
MAX_EPOCHS = 10000
MAX_CROP_SIZE = 4096


@dataclass(frozen=True)
class TrainConfig(NetworkSpec, AugmentSpec, QuantizeChoice, FoldChoice, DatasetChoice):
    """Defaults train the conv net on the bundled digits to >= 98% test accuracy in a few minutes on 2 cores."""

    optimizer: str = setting("sgd", "sgd (with momentum), nag or adam", ("sgd", "nag", "adam"))
    learning_rate: float = setting(0.02, "peak learning rate")
    momentum: float = setting(0.9, "momentum of sgd and nag")
    weight_decay: float = setting(1e-4, "L2 weight decay")
    batch_size: int = setting(64, "examples per optimiser step, over all devices")
    epochs: int = setting(15, "passes over the training set")
    lr_schedule: str = setting("cosine", "learning-rate schedule", ("constant", "step", "cosine"))
    lr_steps: str = setting("", "step schedule: epochs at which the rate is multiplied by --lr-factor, e.g. '10,20'")
    lr_factor: float = setting(0.1, "step schedule: the multiplier at each step")
    warmup_epochs: int = setting(
        1,
        "epochs of linear warm-up from 0 to the peak rate (0 = none); a warm-up as long as the run is shortened to "
        "epochs - 1, so at least the last epoch trains past it",
    )
    freeze_epochs: int = setting(
        0, "first epochs that train only the output layer, the loaded backbone held still (needs pretrained weights)"
    )
    probe_head: bool = setting(
        False,
        "start the output layer from a logistic regression on the pretrained features of the training split, then "
        "fine-tune (LP-FT; needs pretrained weights)",
    )
    probe_c: float = setting(
        PROBE_C, "with --probe-head: inverse L2 strength of the starting probe's logistic regression (smaller = softer)"
    )
    probe_class_weight: str = setting(
        "none",
        "with --probe-head: weigh each genre's covers by the inverse of its share in the starting probe's fit",
        ("none", "balanced"),
    )
    label_smoothing: float = setting(0.0, "share of each label's target spread evenly over the genres (0 = none)")
    crop_size: int = setting(
        0,
        "side of the network's input, cropped from the packed images (random-resized when training, centre when "
        "evaluating); 0 = the network's own resolution where the pack is large enough, else the pack's size",
    )
    patience: int = setting(0, "stop after this many epochs without a better validation accuracy (0 = never)")
    seed: int = setting(0, "seed of initialisation, shuffling, augmentation and dropout")
    gpus: str = setting("", "GPUs to train on, e.g. '0,1' (data parallel); empty = CPU")
    cpu_contexts: int = setting(1, "CPU contexts when no GPU is used (>1 runs the multi-device path on the CPU)")
    chunk_size: int = setting(
        2048, "images moved to the devices at a time (bounds host and device memory; rounded to whole batches)"
    )
    checkpoint_dir: str = setting(DEFAULT_CHECKPOINT_DIR, "folder of per-run checkpoints (<dir>/<run id>/)")
    system_metrics: bool = setting(
        True,
        "log the machine's CPU, memory, disk and network use (GPU where present) every 10 s to the run's System "
        "metrics tab (MLflow's system metrics; MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL changes the period)",
    )
    resume: str | None = setting(None, "MLflow run id of a killed run to continue from its last checkpoint")
    interpret: bool = setting(
        False, "after training, `genre interpret` the model on the test split into its run (docs/interpret.md)"
    )
    kvstore: str = setting(
        "",
        "train across processes started by `genre launch`: dist_sync (CPU workers) or dist_device_sync (GPU "
        "workers); --batch-size stays the global batch; empty = this process alone",
        ("", "dist_sync", "dist_device_sync"),
    )

    def __post_init__(self) -> None:
        from genre.training.schedule import parse_steps  # imports MXNet: not needed to list the flags

        NetworkSpec.__post_init__(self)
        AugmentSpec.__post_init__(self)
        QuantizeChoice.__post_init__(self)
        FoldChoice.__post_init__(self)
        check_range(self, "learning_rate", 0.0, MAX_LEARNING_RATE, low_open=True, note=" (more diverges at once)")
        check_range(self, "momentum", 0.0, 1.0, high_open=True)
        check_range(self, "weight_decay", 0.0, 1.0)
        check_range(self, "batch_size", 1, MAX_BATCH_SIZE)
        check_range(self, "epochs", 1, MAX_EPOCHS)
        check_range(self, "lr_factor", 0.0, low_open=True)
        parse_steps(self.lr_steps)
        check_range(self, "warmup_epochs", 0, note=" (0 = none)")
        check_range(self, "freeze_epochs", 0, note=" (0 = none)")
        require_loaded_weights(self, "freeze_epochs", "holds a loaded backbone still")
        require_loaded_weights(self, "probe_head", "fits the output layer on pretrained features")
        check_range(self, "probe_c", 0.0, low_open=True)
        check_range(self, "label_smoothing", 0.0, 1.0, high_open=True)
        if self.crop_size < 0 or 0 < self.crop_size < 8 or self.crop_size > MAX_CROP_SIZE:
            raise ConfigError(
                f"'crop_size' must be 0 (automatic) or 8..{MAX_CROP_SIZE} pixels (at most the packed images' side), "
                f"got {self.crop_size}"
            )
        check_range(self, "patience", 0, note=" (0 = never stop early)")
        check_range(self, "seed", *SEEDS)
        cores = usable_cores()
        check_range(self, "cpu_contexts", 1, max(cores, 2), note=f" (a context per core; this machine has {cores})")
        check_range(self, "chunk_size", 1)
        if self.warmup_epochs >= self.epochs:
            shortened = self.epochs - 1
            log.info(
                "'warmup_epochs' %d would last the whole %d-epoch run; shortened to %d",
                self.warmup_epochs, self.epochs, shortened,
            )  # fmt: skip
            object.__setattr__(self, "warmup_epochs", shortened)  # frozen: the settings used are the ones logged


@dataclass(frozen=True)
class CleanConfig:
    """`genre clean`: whose checkpoints to remove (those of FINISHED runs only), and whether only to say so."""

    checkpoint_dir: str = setting(DEFAULT_CHECKPOINT_DIR, "folder of per-run checkpoints", metavar="DIR")
    dry_run: bool = setting(False, "say what would be removed, remove nothing", switch=True)
