"""Everything that talks to MLflow lives here; the rest of the package reports through `Tracker`."""
