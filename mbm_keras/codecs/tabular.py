"""Tabular features: numeric columns standardized with training statistics,
categorical columns one-hot encoded over the training categories (+ unknown)."""

import math
import re

import numpy as np

from mbm_keras.errors import CellError, DataError  # noqa: F401  (CellError: raised by encode)

# A numeric cell: a decimal number, as `tf.strings.to_number` reads it in the
# SavedModel (Python's float() also takes "nan", "inf" and "1_000"; they are refused).
NUMBER_PATTERN = r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?"
NUMBER = re.compile(NUMBER_PATTERN)
FLOAT32_MAX = float(np.finfo(np.float32).max)


class TabularEncoder:
    """Turns manifest cells into one float32 vector per row.

    Args:
        numeric: numeric column names.
        categorical: categorical column names.

    Examples:
        >>> enc = TabularEncoder(["age"], ["city"]).fit(rows)
        >>> enc.dim, enc.encode({"age": "31", "city": "Paris"})
    """

    def __init__(self, numeric=(), categorical=(), stats=None, categories=None):
        self.numeric, self.categorical = list(numeric), list(categorical)
        if not self.numeric and not self.categorical:
            raise ValueError("columns['tabular'] names no numeric or categorical column")
        self.stats = stats or {}
        self.categories = categories or {}

    @staticmethod
    def parse_number(value):
        """A cell as a float that is finite in float32 (the model's dtype);
        ValueError otherwise."""
        if isinstance(value, bool):
            raise ValueError(f"value {value!r} is not a number")
        if isinstance(value, str):
            if not NUMBER.fullmatch(value.strip()):
                raise ValueError(f"value {value!r} is not a number")
        elif not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"value {value!r} is not a number")
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"value {value!r} is not a finite number")
        if abs(number) > FLOAT32_MAX:
            raise ValueError(f"value {value!r} overflows float32 (largest {FLOAT32_MAX:.4g}), the model's number type")
        return number

    def fit(self, manifest, rows=None):
        rows = range(len(manifest)) if rows is None else rows
        for column in self.numeric:
            values = []
            for i in rows:
                cell = manifest.rows[i][column]
                if cell is None:
                    continue
                try:
                    values.append(self.parse_number(cell))
                except ValueError as e:
                    raise DataError(f"{manifest.where(i)}, column {column!r}: {e}") from None
            if not values:
                raise DataError(f"{manifest.path}: numeric column {column!r} has no values")
            mean = sum(values) / len(values)
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
            if not std <= FLOAT32_MAX:
                raise DataError(f"{manifest.path}: numeric column {column!r} spreads beyond float32 (standard "
                                f"deviation {std:.3g}); rescale the column")
            # A spread that float32 rounds to 0 would divide by 0 in the exported model.
            self.stats[column] = (mean, std if np.float32(std) > 0 else 1.0)
        for column in self.categorical:
            self.categories[column] = sorted({str(manifest.rows[i][column]) for i in rows if manifest.rows[i][column] is not None})
        return self

    @property
    def dim(self):
        return len(self.numeric) + sum(len(self.categories[c]) + 1 for c in self.categorical)

    def encode(self, row):
        """The feature vector of one row (a dict); raises `CellError` naming column and value.

        An empty numeric cell becomes the training mean (0 after scaling); an
        empty or unseen category sets the column's "unknown" slot.
        """
        out = []
        for column in self.numeric:
            mean, std = self.stats[column]
            cell = row[column]
            try:
                value = 0.0 if cell is None else (self.parse_number(cell) - mean) / std
            except ValueError as e:
                raise CellError(column, str(e)) from None
            if not abs(value) <= FLOAT32_MAX:
                raise CellError(column, f"value {cell!r} is not finite in float32 after scaling by the training "
                                        f"statistics (mean {mean:.4g}, std {std:.4g})")
            out.append(value)
        for column in self.categorical:
            cats = self.categories[column]
            onehot = [0.0] * (len(cats) + 1)
            cell = row[column]
            onehot[cats.index(str(cell)) if cell is not None and str(cell) in cats else len(cats)] = 1.0
            out.extend(onehot)
        return out

    def get_config(self):
        return {
            "numeric": self.numeric,
            "categorical": self.categorical,
            "stats": {k: list(v) for k, v in self.stats.items()},
            "categories": self.categories,
        }

    @classmethod
    def from_config(cls, config):
        return cls(config["numeric"], config["categorical"], {k: tuple(v) for k, v in config["stats"].items()}, config["categories"])
