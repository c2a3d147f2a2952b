"""What a person watching `genre train` sees: a bar per epoch on a terminal, one line per epoch with the run's ETA
in a log, nothing with -q."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import mxnet as mx
import pytest
from mxnet import gluon

from genre.cli import main
from genre.data.config import PrepareConfig
from genre.data.iterator import ChunkedIterator
from genre.data.pack import open_pack
from genre.data.prepare import prepare
from genre.data.transforms import AugmentSpec
from genre.models.networks import NetworkSpec, build_network
from genre.training.config import TrainConfig
from genre.training.loop import SYNC_EVERY, train_one_epoch
from genre.training.progress import TrainingProgress, duration
from genre.training.train import train

TINY = ["--variant", "dev", "--batch-size", "64", "--conv-filters", "8", "--dense-units", "16"]
DEV_TRAIN = 800  # training images of the digits' dev variant
EPOCH_LINE = re.compile(
    r"^epoch (\d)/2: loss \d+\.\d{3}, train \d+\.\d%, val \d+\.\d% \(loss \d+\.\d{3}\), \d+ img/s, "
    r"(ETA \d+s|ETA \dm\d\ds|epochs took \S+)$"
)


@pytest.fixture
def digits16(tracking_store: str, tmp_path: Path) -> Path:
    return prepare(PrepareConfig(out=str(tmp_path / "digits16"), image_size=16), progress=False).root


@pytest.mark.parametrize(("seconds", "said"), [(0, "0s"), (44.6, "45s"), (110, "1m50s"), (3599, "59m59s"),
                                               (7500, "2h05m")])  # fmt: skip
def test_a_duration_reads_like_a_wait(seconds: float, said: str) -> None:
    assert duration(seconds) == said


def test_the_loop_tells_of_every_batch_with_the_loss_it_already_synced(digits16: Path) -> None:
    pack = open_pack(digits16, "dev", "train")
    batches = ChunkedIterator(pack, 32, 256, [mx.cpu()], shuffle=True)
    net = build_network(NetworkSpec(conv_filters="8", dense_units="16"), 10, [mx.cpu()], 16)
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.05})
    heard: list[tuple[int, int, float | None]] = []

    stats = train_one_epoch(net, trainer, batches, 1, AugmentSpec(), 0, gluon.loss.SoftmaxCrossEntropyLoss(),
                            on_batch=lambda *told: heard.append(told))  # fmt: skip

    assert [told[0] for told in heard] == list(range(1, len(batches) + 1)) and len(batches) == math.ceil(DEV_TRAIN / 32)
    assert heard[-1][1] == stats.images == DEV_TRAIN
    assert all(loss is None for _, _, loss in heard[: SYNC_EVERY - 1])  # no sync of its own before the loop's
    assert all(loss is not None and loss > 0 for _, _, loss in heard[SYNC_EVERY - 1 :])


def test_each_epoch_has_a_bar_counting_its_batches_then_a_line_with_the_run_s_eta(digits16: Path) -> None:
    lines, bars = io.StringIO(), io.StringIO()
    config = TrainConfig(data=str(digits16), variant="dev", epochs=2, batch_size=64, conv_filters="8", dense_units="16")

    train(config, [mx.cpu()], None, progress=TrainingProgress(lines, bars))

    batches = math.ceil(DEV_TRAIN / 64)
    for epoch in (1, 2):
        counts = re.findall(rf"epoch {epoch}/2: +\d+%\|[^|]*\| (\d+)/(\d+) batches", bars.getvalue())
        assert counts and {int(total) for _, total in counts} == {batches}
        assert max(int(done) for done, _ in counts) == batches  # the bar's last state counts every batch
    assert "img/s, ETA" in bars.getvalue() and "validating" in bars.getvalue()
    said = lines.getvalue().splitlines()
    assert [EPOCH_LINE.match(line).group(1) for line in said] == ["1", "2"], said
    assert "ETA" in said[0] and "epochs took" in said[1]


@pytest.mark.slow
def test_a_run_in_a_log_prints_one_plain_line_per_epoch_and_quiet_prints_none(digits16: Path, capsys) -> None:
    assert main(["train", "--data", str(digits16), "--epochs", "2", *TINY]) == 0
    shown = capsys.readouterr()
    epochs = [line for line in shown.out.splitlines() if line.startswith("epoch")]
    assert [EPOCH_LINE.match(line).group(1) for line in epochs] == ["1", "2"], shown.out
    assert not re.search(r"epoch \d/2: +\d+%", shown.err)  # stderr is no terminal here: no bars

    assert main(["train", "-q", "--data", str(digits16), "--epochs", "2", *TINY]) == 0
    quiet = capsys.readouterr()
    assert not re.search(r"^epoch|epoch \d/2: +\d+%", quiet.out + quiet.err, re.MULTILINE)
    assert quiet.out.startswith("convnet on digits/dev: test accuracy")
