"""Learning-rate schedules at given updates (pure)."""

from __future__ import annotations

import pytest

from genre.errors import ConfigError
from genre.training.schedule import Schedule, ScheduleAdapter, parse_steps


def test_cosine_falls_from_the_peak_to_zero_over_the_run() -> None:
    schedule = Schedule("cosine", 0.1, epochs=10, updates_per_epoch=100)
    assert schedule.learning_rate(0) == pytest.approx(0.1)
    assert schedule.learning_rate(500) == pytest.approx(0.05)
    assert schedule.learning_rate(999) == pytest.approx(0.0, abs=1e-5)


def test_warmup_climbs_linearly_then_the_schedule_takes_over() -> None:
    schedule = Schedule("cosine", 0.1, epochs=10, updates_per_epoch=10, warmup_epochs=2)
    assert schedule.learning_rate(0) == pytest.approx(0.1 / 20)
    assert schedule.learning_rate(9) == pytest.approx(0.05)
    assert schedule.learning_rate(19) == pytest.approx(0.1)
    assert schedule.learning_rate(20) == pytest.approx(0.1)
    assert schedule.learning_rate(60) == pytest.approx(0.05)


def test_step_multiplies_by_the_factor_at_each_step_epoch() -> None:
    schedule = Schedule("step", 1.0, epochs=30, updates_per_epoch=10, steps=parse_steps("10,20"), factor=0.1)
    assert [schedule.learning_rate(u) for u in (0, 99, 100, 199, 200)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])


def test_mxnet_passes_one_based_update_counts() -> None:
    adapter = ScheduleAdapter(Schedule("cosine", 0.1, epochs=1, updates_per_epoch=4))
    assert adapter(1) == pytest.approx(0.1)


@pytest.mark.parametrize("text", ["a,b", "20,10", "0"])
def test_bad_steps_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="'lr_steps'"):
        parse_steps(text)


def test_warmup_longer_than_the_run_is_refused() -> None:
    with pytest.raises(ConfigError, match="--warmup-epochs"):
        Schedule("constant", 0.1, epochs=3, updates_per_epoch=1, warmup_epochs=3)
