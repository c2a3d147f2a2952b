"""The stages: one module per stage a user runs (`prepare`, `baseline`, `train`, `evaluate`, `interpret`, `predict`,
`tune`, `suite`, `report`). Each owns its MLflow run (`predict` only when asked to log one) and everything it logs:
`run(...)` opens the run, calls the lower parts (data, models, training, tuning) and logs through the `Tracker`,
printing only progress a user waits on (the bundled dataset being prepared, a suite's or study's next step, a
distributed worker joining); `command(...)` is the CLI's: it prints the outcome and returns the exit code. See
docs/architecture.md.
"""
