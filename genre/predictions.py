"""Per-cover predictions of a scored split: what paired comparisons, pooled folds and intervals are computed from.

Every run that scores a split logs `predictions/<split>.csv` (and the same rows as an MLflow table,
`predictions/<split>.json`, which the UI shows). One row per cover, in the split's order::

    cover,genre,predicted,p_<genre 1>,...,p_<genre G>

`cover` is the cover's stable key, its source file's path relative to the dataset root (`jazz/0042.jpg`), so two
runs on the same prepared covers name each cover alike whatever their split. `genre` is the true genre and
`predicted` the model's. The `p_` columns, one per genre in the dataset's genre order, hold the model's
probabilities; a model without probabilities (an SVM with no validation covers to calibrate its margins) has
none, and readers must say so.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PREDICTIONS_FOLDER = "predictions"
PROBABILITY_PREFIX = "p_"
FIXED_COLUMNS = ("cover", "genre", "predicted")


def predictions_artifact(split: str, suffix: str = "csv") -> str:
    """The artifact path of a split's predictions inside a run (`predictions/test.csv`)."""
    return f"{PREDICTIONS_FOLDER}/{split}.{suffix}"


@dataclass(frozen=True)
class CoverPredictions:
    """One model's predictions on one split's covers.

    `true` and `predicted` are label indices into `genres` (int64, `(N,)`); `probabilities` is `(N, G)` float64
    with rows summing to 1, or None for a model that gives none.
    """

    covers: list[str]
    genres: list[str]
    true: np.ndarray
    predicted: np.ndarray
    probabilities: np.ndarray | None = None

    def __post_init__(self) -> None:
        count = len(self.covers)
        if len(self.true) != count or len(self.predicted) != count:
            raise ValueError(f"{count} covers but {len(self.true)} true and {len(self.predicted)} predicted genres")
        if self.probabilities is not None and self.probabilities.shape != (count, len(self.genres)):
            expected = (count, len(self.genres))
            raise ValueError(f"probabilities of shape {self.probabilities.shape}, expected {expected}")

    def __len__(self) -> int:
        return len(self.covers)

    @property
    def correct(self) -> np.ndarray:
        """Whether each cover's prediction is right, bool `(N,)`."""
        return np.asarray(self.true) == np.asarray(self.predicted)

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if len(self) else float("nan")

    def to_rows(self) -> tuple[list[str], list[list[object]]]:
        """The CSV's header and rows (probabilities rounded to 6 decimals: plenty for any statistic of them)."""
        header = list(FIXED_COLUMNS)
        if self.probabilities is not None:
            header += [PROBABILITY_PREFIX + genre for genre in self.genres]
        rows: list[list[object]] = []
        for index, cover in enumerate(self.covers):
            row: list[object] = [cover, self.genres[int(self.true[index])], self.genres[int(self.predicted[index])]]
            if self.probabilities is not None:
                row += [round(float(p), 6) for p in self.probabilities[index]]
            rows.append(row)
        return header, rows

    def to_csv_text(self) -> str:
        header, rows = self.to_rows()
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        return out.getvalue()

    def write_csv(self, path: Path) -> Path:
        path.write_text(self.to_csv_text())
        return path

    @classmethod
    def from_csv_text(cls, text: str, genres: list[str] | None = None) -> CoverPredictions:
        """Read the CSV back. The genre order is the `p_` columns' when there are any, else `genres` if given, else
        the sorted genre names the file uses."""
        reader = csv.reader(io.StringIO(text))
        header = next(reader, None)
        if header is None or tuple(header[:3]) != FIXED_COLUMNS:
            raise ValueError(f"a predictions CSV starts with the columns {','.join(FIXED_COLUMNS)}, got {header}")
        named = [column[len(PROBABILITY_PREFIX) :] for column in header[3:] if column.startswith(PROBABILITY_PREFIX)]
        rows = list(reader)
        if named:
            genres = named
        elif genres is None:
            genres = sorted({row[1] for row in rows} | {row[2] for row in rows})
        index = {genre: number for number, genre in enumerate(genres)}
        try:
            true = np.array([index[row[1]] for row in rows], dtype=np.int64)
            predicted = np.array([index[row[2]] for row in rows], dtype=np.int64)
        except KeyError as error:
            raise ValueError(f"genre {error} is not one of the predictions' genres {genres}") from error
        probabilities = np.array([[float(v) for v in row[3:]] for row in rows], dtype=np.float64) if named else None
        if probabilities is not None and len(rows) == 0:
            probabilities = np.zeros((0, len(genres)))
        return cls([row[0] for row in rows], list(genres), true, predicted, probabilities)

    @classmethod
    def read_csv(cls, path: Path, genres: list[str] | None = None) -> CoverPredictions:
        return cls.from_csv_text(Path(path).read_text(), genres)
