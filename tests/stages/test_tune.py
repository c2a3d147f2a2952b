"""What `genre tune` prints while a study runs: a line per finished trial with the study's ETA."""

from __future__ import annotations

import re

import optuna
import pytest

from genre.cli import main
from genre.data.config import PrepareConfig
from genre.data.prepare import prepare
from genre.stages.tune import StudyProgress, study_eta
from tests.conftest import PROJECT_ROOT


def test_the_eta_is_the_trials_left_at_the_mean_trial_time_unless_the_timeout_comes_first() -> None:
    assert study_eta(40.0, 3) == 120.0
    assert study_eta(40.0, 3, timeout_left=50.0) == 80.0  # two more start before the timeout; each runs to its end
    assert study_eta(40.0, 3, timeout_left=500.0) == 120.0
    assert study_eta(40.0, 3, timeout_left=-1.0) == 0.0
    assert study_eta(40.0, 0) == 0.0


def _study() -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())


def _finish(study: optuna.Study, state: str, value: float | None = None, epochs: int = 0) -> optuna.trial.FrozenTrial:
    trial = study.ask()
    for epoch in range(1, epochs + 1):
        trial.report(0.1 * epoch, epoch)
    return study.tell(trial, value, state=optuna.trial.TrialState[state])


def test_each_finished_trial_is_a_line_with_its_outcome_the_best_so_far_and_the_study_s_eta() -> None:
    study, said = _study(), StudyProgress(n_trials=4, started=0.0)

    first = said.line(study, _finish(study, "COMPLETE", 0.9), now=30.0)
    second = said.line(study, _finish(study, "PRUNED", epochs=2), now=40.0)
    third = said.line(study, _finish(study, "FAIL"), now=45.0)
    last = said.line(study, _finish(study, "COMPLETE", 0.95), now=80.0)

    assert first == "trial 0 complete in 30s: val 90.00%; best 90.00% (trial 0); 1/4 trials, ETA 1m30s"
    assert second == "trial 1 pruned after epoch 2 in 10s; best 90.00% (trial 0); 2/4 trials, ETA 40s"
    assert third == "trial 2 failed in 5s; best 90.00% (trial 0); 3/4 trials, ETA 15s"
    assert last == "trial 3 complete in 35s: val 95.00%; best 95.00% (trial 3); 4/4 trials in 1m20s"


def test_a_timeout_shortens_the_eta_and_says_when_it_stops_the_study() -> None:
    study, said = _study(), StudyProgress(n_trials=10, timeout=50.0, started=0.0)

    first = said.line(study, _finish(study, "COMPLETE", 0.5), now=20.0)
    second = said.line(study, _finish(study, "COMPLETE", 0.6), now=55.0)

    assert first.endswith("; 1/10 trials, ETA 40s (--timeout)")  # 30 s left: two more trials start, 20 s each
    assert second.endswith("; 2/10 trials in 55s: --timeout reached, no more trials")


@pytest.mark.slow
def test_a_study_prints_a_line_per_trial_with_an_eta_and_each_trial_s_epochs(tracking_store: str, tmp_path, capsys):
    data = prepare(PrepareConfig(out=str(tmp_path / "digits16"), image_size=16), progress=False).root
    space = tmp_path / "tiny.yaml"
    space.write_text(
        f"settings: {{data: {data}, variant: dev, epochs: 2, batch_size: 64, dense_units: '16', warmup_epochs: 0}}\n"
        "parameters:\n"
        "  learning_rate: {float: [0.005, 0.05], log: true}\n"
        "  conv_filters: {int: [4, 8]}\n"
    )
    args = ["tune", "--space", str(space), "--study", "said", "--n-trials", "2", "--pruner", "none"]

    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    trials = [line for line in out if line.startswith("trial ")]
    assert len(trials) == 2, out
    assert re.fullmatch(r"trial 0 complete in \S+: val \d+\.\d\d%; best \d+\.\d\d% \(trial 0\); 1/2 trials, ETA \S+",
                        trials[0])  # fmt: skip
    assert re.fullmatch(r"trial 1 complete in \S+: .*; 2/2 trials in \S+", trials[1])
    epochs = [line.split(":")[0:2] for line in out if line.startswith("trial-")]
    assert epochs == [["trial-0", " epoch 1/2"], ["trial-0", " epoch 2/2"], ["trial-1", " epoch 1/2"],
                      ["trial-1", " epoch 2/2"]]  # fmt: skip

    quiet = ["tune", "-q", "--space", str(space), "--study", "said", "--n-trials", "1", "--pruner", "none"]
    assert main(quiet) == 0  # the same study, one trial more, and not a line of progress
    assert not [line for line in capsys.readouterr().out.splitlines() if line.startswith(("trial", "epoch"))]


def test_a_space_s_objective_is_what_its_trials_report_and_return(unbalanced_covers, tracking_store: str, tmp_path):
    import optuna
    from mlflow.tracking import MlflowClient

    space = tmp_path / "balanced.yaml"
    space.write_text(
        f"settings: {{data: {unbalanced_covers}, epochs: 2, batch_size: 16, conv_filters: '8', dense_units: '16'}}\n"
        "objective: val_balanced_accuracy\n"
        "parameters:\n"
        "  learning_rate: {float: [0.005, 0.05], log: true}\n"
    )

    assert (
        main(["tune", "-q", "--space", str(space), "--study", "balanced", "--n-trials", "1", "--pruner", "none"]) == 0
    )

    (trial,) = optuna.load_study(study_name="balanced", storage="sqlite:///optuna.db").trials
    client = MlflowClient(tracking_store)
    run_id = trial.user_attrs["mlflow_run_id"]
    assert trial.value == pytest.approx(client.get_run(run_id).data.metrics["best_val_balanced_accuracy"])
    history = {m.step: m.value for m in client.get_metric_history(run_id, "val_balanced_accuracy") if m.step > 0}
    assert set(history) == {1, 2} and trial.intermediate_values == pytest.approx(history)  # what the pruner saw
    (parent,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`genre.stage` = 'tune'"
    )
    assert parent.data.metrics["best_val_balanced_accuracy"] == pytest.approx(trial.value)
    assert "best_val_accuracy" not in parent.data.metrics and parent.data.params["objective"] == "val_balanced_accuracy"


def test_an_unknown_objective_is_refused_naming_the_key(tmp_path) -> None:
    from genre.errors import ConfigError
    from genre.tuning.space import load_space

    space = tmp_path / "space.yaml"
    space.write_text("objective: test_accuracy\nparameters:\n  learning_rate: {float: [0.005, 0.05]}\n")

    with pytest.raises(ConfigError, match="'objective' must be one of val_accuracy, val_balanced_accuracy"):
        load_space(str(space))


def probe_space(tmp_path, more_parameters: str = ""):
    """A baseline space over the logistic regression's C on 8x8 digits, prepared in `tmp_path`."""
    data = prepare(PrepareConfig(out=str(tmp_path / "digits16"), image_size=16), progress=False).root
    space = tmp_path / "probe.yaml"
    space.write_text(
        f"stage: baseline\nbase: {PROJECT_ROOT / 'experiments/baselines/svm-digits.yaml'}\n"
        f"settings: {{data: {data}, variant: dev, model: logreg, pixels: 8}}\n"
        "parameters:\n  logreg_c: {float: [0.001, 1.0], log: true}\n" + more_parameters
    )
    return space


def test_a_baseline_study_scores_each_trial_inside_its_training_part_and_saves_the_best_as_an_experiment(
    tracking_store: str, tmp_path
) -> None:
    import yaml
    from mlflow.tracking import MlflowClient

    from genre.command_config import BaselineConfig
    from genre.config import build

    space = probe_space(tmp_path, "  grayscale: {categorical: [true, false]}\n")

    assert main(["tune", "-q", "--space", str(space), "--study", "probe", "--n-trials", "3", "--pruner", "none"]) == 0

    study = optuna.load_study(study_name="probe", storage="sqlite:///optuna.db")
    client = MlflowClient(tracking_store)
    for trial in study.trials:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.data.tags["genre.stage"] == "trial" and run.data.params["config.model"] == "logreg"
        assert trial.value == pytest.approx(run.data.metrics["inner_balanced_accuracy"])
        assert float(run.data.params["config.logreg_c"]) == pytest.approx(trial.params["logreg_c"])
    (parent,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`genre.stage` = 'tune'"
    )
    assert parent.data.metrics["best_inner_balanced_accuracy"] == pytest.approx(study.best_value)
    saved = client.download_artifacts(parent.info.run_id, "study/best_experiment.yaml", str(tmp_path))
    best = build(BaselineConfig, ("best", yaml.safe_load(open(saved))))
    assert best.logreg_c == pytest.approx(study.best_params["logreg_c"])
    assert best.grayscale == study.best_params["grayscale"] and best.pixels == 8 and best.variant == "dev"


def test_a_study_stopped_by_hand_still_records_its_best_trial_as_an_experiment(
    tracking_store: str, tmp_path, monkeypatch
) -> None:
    """Ctrl-C (or SIGTERM) after the second trial: the command says it was interrupted, and the study's parent run
    holds the best of the finished trials and study/best_experiment.yaml, as a study that ran out of trials does."""
    import yaml
    from mlflow.tracking import MlflowClient

    import genre.stages.tune as tune

    space = probe_space(tmp_path)
    progress = tune.log_study_progress

    def stop_after_the_second(tracker, study, number, *rest):
        progress(tracker, study, number, *rest)
        if number == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(tune, "log_study_progress", stop_after_the_second)

    assert (
        main(["tune", "-q", "--space", str(space), "--study", "stopped", "--n-trials", "5", "--pruner", "none"]) == 130
    )

    study = optuna.load_study(study_name="stopped", storage="sqlite:///optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    client = MlflowClient(tracking_store)
    (parent,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`genre.stage` = 'tune'"
    )
    assert parent.info.status == "KILLED"
    assert parent.data.metrics["best_inner_balanced_accuracy"] == pytest.approx(study.best_value)
    saved = client.download_artifacts(parent.info.run_id, "study/best_experiment.yaml", str(tmp_path))
    assert yaml.safe_load(open(saved))["logreg_c"] == pytest.approx(study.best_params["logreg_c"])


def test_a_baseline_space_takes_only_baseline_settings_and_objectives(tmp_path) -> None:
    from genre.errors import ConfigError
    from genre.stages.tune import space_stages
    from genre.tuning.space import load_space

    space = tmp_path / "space.yaml"
    space.write_text("stage: baseline\nbase: svm-digits\nparameters:\n  learning_rate: {float: [0.005, 0.05]}\n")
    with pytest.raises(ConfigError, match="'learning_rate' is not a baseline setting"):
        load_space(str(space), space_stages())
    space.write_text("stage: baseline\nobjective: val_loss\nparameters:\n  logreg_c: {float: [0.01, 1.0]}\n")
    with pytest.raises(ConfigError, match="must be one of inner_balanced_accuracy, val_balanced_accuracy"):
        load_space(str(space), space_stages())
    with pytest.raises(ConfigError, match="'stage' must be one of train, got 'baseline'"):
        load_space(str(space))  # a caller that runs only training
