"""The stages: one module per stage a user runs (`prepare`, `baseline`, `train`, `evaluate`, `interpret`, `predict`,
`tune`, `suite`, `report`, `compare`). Each owns its MLflow run (`predict` and `compare` only when asked to log one)
and everything it logs: `run(...)` opens the run, calls the lower parts (data, models, training, tuning) and logs
through the `Tracker`, printing only progress a user waits on (the bundled dataset being prepared, a suite's or
study's next step, a distributed worker joining); `command(...)` is what the command's handler (`genre.commands`)
calls: it prints the outcome and returns the exit code. Each stage's settings live in `genre.command_config` (or its
part's `config` module), where the command line reads them without importing the stage. See docs/architecture.md.
"""
