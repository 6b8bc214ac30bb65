"""Demographic profiles: validation and a fixed-order natural-language linearisation."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from pluralign.errors import PluralignError

#: Order of fields in :meth:`Profile.describe` and in :meth:`Profile.key`.
PROFILE_FIELDS: tuple[str, ...] = (
    "country",
    "age",
    "age_band",
    "sex",
    "education",
    "religion",
    "settlement",
    "income",
    "language",
    "marital_status",
    "employment",
    "region",
)

_SEX = {"male": "male", "m": "male", "man": "male", "female": "female", "f": "female", "woman": "female"}
_SETTLEMENT = {"urban": "urban", "rural": "rural", "city": "urban", "town": "urban", "village": "rural"}
_NOUN = {"male": "man", "female": "woman", None: "person"}


_NO_RELIGION = ("no religion", "none", "no religious denomination", "do not belong to a denomination")
_THE = ("United ", "Netherlands", "Philippines", "Czech Republic", "Dominican Republic", "Russian Federation")


def _with_article(country: str) -> str:
    return f"the {country}" if country.startswith(_THE) else country


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


@dataclass(frozen=True)
class Profile:
    """Who is answering. Every field is optional; a country-level group is ``Profile(country=...)``.

    ``age`` is an integer in years; ``age_band`` a label such as ``"35-44 years"`` (WVS X003R);
    ``income`` a decile 1-10 or a label; ``extra`` holds further attributes (name → value) that are
    appended to the description in sorted order.
    """

    country: str | None = None
    age: int | None = None
    age_band: str | None = None
    sex: str | None = None
    education: str | None = None
    religion: str | None = None
    settlement: str | None = None
    income: int | str | None = None
    language: str | None = None
    marital_status: str | None = None
    employment: str | None = None
    region: str | None = None
    extra: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.age is not None:
            if not isinstance(self.age, int) or isinstance(self.age, bool) or not (0 < self.age < 130):
                raise PluralignError(f"age must be an integer in years (1-129), got {self.age!r}", field="age")
        if self.sex is not None:
            s = _SEX.get(str(self.sex).strip().lower())
            if s is None:
                raise PluralignError(f"sex must be male or female, got {self.sex!r}", field="sex")
            object.__setattr__(self, "sex", s)
        if self.settlement is not None:
            s = _SETTLEMENT.get(str(self.settlement).strip().lower())
            if s is None:
                raise PluralignError(f"settlement must be urban or rural, got {self.settlement!r}", field="settlement")
            object.__setattr__(self, "settlement", s)
        if isinstance(self.income, int) and not (1 <= self.income <= 10):
            raise PluralignError(f"income decile must be 1-10, got {self.income}", field="income")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, file: str | None = None, row: int | None = None, allow_extra: bool = False
    ) -> "Profile":
        """Build from a mapping; unknown fields are an error unless ``allow_extra``. Empty values
        (``None``, ``""``, ``"nan"``) are dropped."""
        kwargs: dict[str, Any] = {}
        extra: list[tuple[str, str]] = []
        for k, v in data.items():
            if v is None or (isinstance(v, float) and v != v) or str(v).strip().lower() in ("", "nan", "none"):
                continue
            if k == "extra":
                extra.extend((str(a), str(b)) for a, b in (v.items() if isinstance(v, Mapping) else v))
                continue
            if k not in PROFILE_FIELDS:
                if allow_extra:
                    extra.append((str(k), str(v)))
                    continue
                raise PluralignError(
                    f"unknown profile field (known: {', '.join(PROFILE_FIELDS)})", file=file, row=row, field=k
                )
            if k == "age":
                try:
                    v = int(float(v))
                except (TypeError, ValueError, OverflowError):
                    raise PluralignError(f"age must be a number, got {v!r}", file=file, row=row, field=k) from None
            if k == "income":
                try:
                    fv = float(v)
                    v = int(fv) if fv == int(fv) else v
                except (TypeError, ValueError, OverflowError):
                    v = str(v)
            kwargs[k] = v if k in ("age", "income") else str(v).strip()
        try:
            return cls(**kwargs, extra=tuple(sorted(extra)))
        except PluralignError as e:
            raise PluralignError(e.message, file=file, row=row, field=e.field) from None

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in PROFILE_FIELDS if getattr(self, k) is not None}
        if self.extra:
            d["extra"] = dict(self.extra)
        return d

    def replace(self, **changes: Any) -> "Profile":
        return dataclasses.replace(self, **changes)

    def only(self, *fields: str) -> "Profile":
        """The same profile restricted to ``fields`` (e.g. ``only("country")`` for country groups)."""
        return Profile(**{f: getattr(self, f) for f in fields if f in PROFILE_FIELDS})

    # ------------------------------------------------------------------ views
    def key(self) -> str:
        """A stable, canonical identifier (used to cache embeddings and to group rows)."""
        parts = [f"{k}={getattr(self, k)}" for k in PROFILE_FIELDS if getattr(self, k) is not None]
        parts += [f"{k}={v}" for k, v in self.extra]
        return "|".join(parts) or "<empty>"

    def is_empty(self) -> bool:
        return self.key() == "<empty>"

    def describe(self) -> str:
        """Fixed-order English linearisation, e.g.
        ``"A 55-year-old Buddhist woman living in rural Thailand, with upper secondary education,
        in the 8th income decile, speaking Thai."``"""
        adj: list[str] = []
        if self.age is not None:
            adj.append(f"{self.age}-year-old")
        if self.religion and self.religion.lower() not in _NO_RELIGION + ("other",):
            adj.append(self.religion)
        noun = _NOUN[self.sex]
        words = [*adj, noun]
        article = "An" if words[0][0].lower() in "aeiou" or words[0].startswith(("8", "11", "18")) else "A"
        text = " ".join([article, *words])
        if self.age is None and self.age_band:
            band = re.sub(r"\s*years?$", "", self.age_band.strip())
            text += f" aged {band}"
        where = []
        if self.settlement:
            where.append(self.settlement)
        if self.region:
            where.append(f"{self.region},")
        if self.country:
            where.append(_with_article(self.country))
        if where:
            text += " living in " + " ".join(where)
        tail: list[str] = []
        if self.religion and self.religion.lower() in _NO_RELIGION:
            tail.append("with no religion")
        if self.education:
            tail.append(f"with {self.education[0].lower() + self.education[1:]} education" if "education" not in self.education.lower() else f"with {self.education[0].lower() + self.education[1:]}")
        if self.income is not None:
            tail.append(f"in the {_ordinal(self.income)} income decile" if isinstance(self.income, int) else f"with {self.income} income")
        if self.marital_status:
            tail.append(self.marital_status.lower())
        if self.employment:
            tail.append(self.employment.lower())
        if self.language and self.language.lower() not in ("other", "unknown"):
            tail.append(f"speaking {self.language}")
        tail += [f"{k.replace('_', ' ')}: {v}" for k, v in self.extra]
        if tail:
            text += ", " + ", ".join(tail)
        return text + "."
