"""Registering a model that is not there leaves nothing behind (issue 25, case 5): `genre register --run-id deadbeef`
used to print MLflow's "Successfully registered model" and then fail, leaving an empty registered model."""

from __future__ import annotations

from mlflow import MlflowClient

from genre.cli import main


def test_registering_a_run_that_is_not_there_is_one_line_and_registers_nothing(tracking_store: str, capsys) -> None:
    assert main(["register", "--run-id", "deadbeef", "--name", "genre-classifier"]) == 2

    captured = capsys.readouterr()
    assert captured.err.endswith(
        "\ngenre register: error: cannot register the model of run deadbeef: the tracking store has no run deadbeef "
        "(`genre runs` lists them)\n"
    )  # after MLflow's own lines creating the new store
    assert "Successfully registered" not in captured.out + captured.err
    assert MlflowClient(tracking_store).search_registered_models() == []


def test_registering_a_run_without_a_model_leaves_no_empty_registered_model(tracking_store: str, capsys) -> None:
    client = MlflowClient(tracking_store)
    run = client.create_run(client.create_experiment("no-model-here"))
    client.set_terminated(run.info.run_id)

    assert main(["register", "--run-id", run.info.run_id, "--name", "genre-classifier"]) == 2

    error = capsys.readouterr().err
    assert f"\ngenre register: error: cannot register the model of run {run.info.run_id}: " in error
    assert client.search_registered_models() == []
