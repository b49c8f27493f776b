"""Errors every layer raises (the bottom of the layer order: nothing here imports the package)."""


class ConfigError(ValueError):
    """A config key or value that cannot be used; the message names the key, the
    value received and what is expected.

    Examples:
        >>> try:
        ...     load_config({"data": {"train": "train.csv"}, "train": {"epoch": 3}})
        ... except ConfigError as e:
        ...     print(e)   # unknown key train.epoch (did you mean train.epochs?) ...
    """


class DataError(ValueError):
    """A manifest row that cannot be used; the message names file, row, column and value.

    Examples:
        >>> try:
        ...     make_dataset("train.csv", preprocessor=pre)
        ... except DataError as e:
        ...     print(e)   # train.csv row 7, column 'image' (cat.jpg): file not found ...
    """


class CellError(ValueError):
    """A manifest cell that cannot be used; `column` names it, `file` the file it names.

    Args:
        column: the manifest column.
        message: what is wrong with the cell.
        file: the file the cell names, if any.

    Examples:
        >>> raise CellError("age", "value 'abc' is not a number")
    """

    def __init__(self, column, message, file=None):
        super().__init__(f"column {column!r}: {message}")
        self.column, self.message, self.file = column, message, file
