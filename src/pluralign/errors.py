"""One error type for bad input: rendered as a single line naming file, row and field."""

from __future__ import annotations

from pathlib import Path


class PluralignError(Exception):
    """A user-facing error. The CLI prints ``str(err)`` on one line and exits with status 2.

    ``file``, ``row`` (1-based data row, header excluded) and ``field`` locate the problem so the
    user can fix their input without reading a traceback.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        row: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.row = row
        self.field = field
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = []
        if self.file:
            where.append(self.file.replace("\n", "\\n").replace("\r", "\\r"))
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.field and str(self.field).startswith("--"):
            where.append(str(self.field))  # an option: named as the user typed it
        elif self.field:
            where.append(f"field '{' '.join(str(self.field).split())}'")  # a field named by data may hold newlines
        prefix = ", ".join(where)
        msg = " ".join(str(self.message).split())  # always one line
        return f"{prefix}: {msg}" if prefix else msg
