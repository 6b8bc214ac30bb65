"""Survey items: id, question text, ordered options, ordinal flag."""

from __future__ import annotations

from dataclasses import dataclass, field

from pluralign.errors import PluralignError


@dataclass(frozen=True)
class SurveyItem:
    """One survey question.

    ``options`` are the answer labels in scale order; ``codes`` the original answer codes of the
    source (e.g. WVS codes ``"1".."4"``), same order and length. ``ordinal`` says whether option
    order is meaningful (Earth Mover's distance uses it; nominal items use total variation).
    """

    id: str
    text: str
    options: tuple[str, ...]
    ordinal: bool = True
    codes: tuple[str, ...] = field(default=())
    category: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.options) < 2:
            raise PluralignError(f"item {self.id!r} needs at least two options, got {len(self.options)}", field="options")
        if not self.codes:
            object.__setattr__(self, "codes", tuple(str(i + 1) for i in range(len(self.options))))
        if len(self.codes) != len(self.options):
            raise PluralignError(f"item {self.id!r}: {len(self.codes)} codes for {len(self.options)} options", field="codes")
        object.__setattr__(self, "options", tuple(self.options))
        object.__setattr__(self, "codes", tuple(str(c) for c in self.codes))

    @property
    def n_options(self) -> int:
        return len(self.options)

    def index_of_code(self, code: object, *, file: str | None = None, row: int | None = None, field_name: str = "answer") -> int:
        """Position of an answer code in ``options``; a clear error for a code outside the set."""
        c = str(code).strip()
        if c.endswith(".0"):
            c = c[:-2]
        try:
            return self.codes.index(c)
        except ValueError:
            raise PluralignError(
                f"answer {code!r} is not an option of {self.id} (codes: {', '.join(self.codes)})",
                file=file,
                row=row,
                field=field_name,
            ) from None

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "text": self.text,
            "options": list(self.options),
            "codes": list(self.codes),
            "ordinal": self.ordinal,
            "category": self.category,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "SurveyItem":
        return cls(
            id=str(d["id"]),
            text=d["text"],
            options=tuple(d["options"]),
            ordinal=bool(d.get("ordinal", True)),
            codes=tuple(d.get("codes") or ()),
            category=d.get("category", ""),
            source=d.get("source", ""),
        )
