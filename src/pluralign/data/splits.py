"""Deterministic train / validation / test splits.

A split assigns whole units to one part: respondents (``respondent``), questions (``question``),
groups/countries (``country``) or distinct profiles (``profile``). The two-way split
``country,question`` holds out countries and questions at once (see :func:`split_dataset`): training
sees only training countries' answers to training questions, and the test part is three cells,
``unseen_questions`` (training countries x test questions), ``unseen_countries`` (test countries x
training questions) and ``unseen_both``; validation countries and questions make the same three
cells of the validation part, kept apart from every test cell (rows pairing a validation unit with
a test unit are used nowhere). The assignment of a unit depends only
on ``(seed, unit)`` through a hash, so it is stable across runs, machines and dataset orderings, and
adding rows never moves existing units. Explicit unit lists (``test_units``) override the hash.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal, Sequence

from pluralign.data.countries import country_name
from pluralign.data.tasks import Example, SurveyDataset
from pluralign.errors import PluralignError

SplitBy = Literal["respondent", "question", "country", "profile", "country,question", "none"]
TWO_WAY = "country,question"
SPLIT_BY = ("respondent", "question", "country", "profile", TWO_WAY, "none")
#: the cells of a two-way split, in report order
CELLS = ("unseen_questions", "unseen_countries", "unseen_both")
_CELL_OF = {("train", "test"): "unseen_questions", ("test", "train"): "unseen_countries", ("test", "test"): "unseen_both",
            ("train", "val"): "unseen_questions", ("val", "train"): "unseen_countries", ("val", "val"): "unseen_both"}


@dataclass
class Split:
    train: SurveyDataset
    val: SurveyDataset | None
    test: SurveyDataset
    by: str
    seed: int
    #: two-way split only: the part ("train" | "val" | "test") of each country and each question
    country_part: dict | None = None
    question_part: dict | None = None

    def describe(self) -> dict:
        d = {
            "by": self.by,
            "seed": self.seed,
            "train": len(self.train),
            "val": len(self.val) if self.val else 0,
            "test": len(self.test),
        }
        if self.country_part is not None:
            d["cells"] = {f"{part}/{c}": len(ds) for part, cells in (("test", self.test_cells()), ("val", self.val_cells()))
                          for c, ds in cells.items()}
        return d

    def cell_of(self, ex: Example) -> str | None:
        """The cell of a two-way split's row (``unseen_questions`` | ``unseen_countries`` |
        ``unseen_both``; None for a training row or a one-way split)."""
        if self.country_part is None:
            return None
        return _CELL_OF.get((self.country_part.get(ex.group), self.question_part.get(ex.item_id)))

    def _cells(self, ds: SurveyDataset | None) -> dict[str, SurveyDataset]:
        if ds is None or self.country_part is None:
            return {}
        out = {}
        for c in CELLS:
            exs = [e for e in ds.examples if self.cell_of(e) == c]
            if exs:
                out[c] = ds.subset(exs, f"{ds.name.rsplit('/', 1)[0]}/{c}")
        return out

    def test_cells(self) -> dict[str, SurveyDataset]:
        """The test part of a two-way split by cell (empty for a one-way split)."""
        return self._cells(self.test)

    def val_cells(self) -> dict[str, SurveyDataset]:
        """The validation part of a two-way split by cell (empty for a one-way split)."""
        return self._cells(self.val)

    def units(self, axis: str, part: str) -> list[str]:
        """A two-way split's countries (``axis='country'``) or questions in ``part``."""
        d = self.country_part if axis == "country" else self.question_part
        return sorted(u for u, p in (d or {}).items() if p == part)


def resolve_auto_split(kind: str) -> str:
    """What ``--split auto`` means, the same for ``pluralign train`` and ``pluralign eval``:
    ``respondent`` for individual (respondent-level) data, ``country`` for group data (zero-shot
    countries, what the literature reports)."""
    return "respondent" if kind == "individual" else "country"


def unit_of(ex: Example, by: str) -> str:
    if by == "respondent":
        rid = getattr(ex, "respondent_id", None)
        if rid is None:
            raise PluralignError("split by respondent needs individual (respondent-level) data; use question or country", field="split")
        return rid
    if by == "question":
        return ex.item_id
    if by == "country":
        return ex.group
    if by == "profile":
        return ex.profile.key()
    if by == TWO_WAY:
        return f"{ex.group}|{ex.item_id}"
    raise PluralignError(f"unknown split {by!r} (use one of {', '.join(SPLIT_BY)})", field="split")


def unit_fraction(seed: int, unit: str) -> float:
    """A unit's position in [0, 1), from a hash of ``(seed, unit)`` only: the basis of every split."""
    h = hashlib.sha256(f"{seed}|{unit}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def split_dataset(
    ds: SurveyDataset,
    by: str = "respondent",
    *,
    test_frac: float = 0.2,
    val_frac: float = 0.0,
    seed: int = 0,
    test_units: Sequence[str] | None = None,
    test_questions: Sequence[str] | None = None,
    question_test_frac: float | None = None,
) -> Split:
    """Split ``ds`` by unit. With ``by='none'`` train and test are both the whole dataset (zero-shot
    evaluation with no training).

    ``by='country,question'`` (two-way): countries and questions are each assigned to train / val /
    test, countries by ``test_units`` or the hashed ``test_frac``, questions by ``test_questions`` or
    the hashed ``question_test_frac`` (default ``test_frac``); ``val_frac`` applies to both axes. A
    row's part follows its (country, question) cell: see the module docstring and :attr:`Split.cell_of`."""
    if by == "none":
        if test_units or test_questions:
            raise PluralignError("test units need a split unit (respondent, question, country or profile), not 'none'", field="split")
        return Split(train=ds, val=None, test=ds, by=by, seed=seed)
    if by not in SPLIT_BY:
        raise PluralignError(f"unknown split {by!r} (use one of {', '.join(SPLIT_BY)})", field="split")
    if not 0 < test_frac < 1 or not 0 <= val_frac < 1 or test_frac + val_frac >= 1:
        raise PluralignError(f"bad split fractions test={test_frac} val={val_frac}", field="split")
    if by == TWO_WAY:
        return _split_two_way(ds, test_frac=test_frac, val_frac=val_frac, seed=seed, test_units=test_units,
                              test_questions=test_questions, question_test_frac=question_test_frac)
    if test_questions:
        raise PluralignError("test questions need the two-way split (--split country,question)", field="test_questions")
    parts: dict[str, list[Example]] = {"train": [], "val": [], "test": []}
    explicit = None
    if test_units:
        explicit = {country_name(u) if by == "country" else u for u in test_units}
        known = {unit_of(e, by) for e in ds.examples}
        missing = explicit - known
        if missing:
            raise PluralignError(f"unknown {by}(s) for the test part: {', '.join(sorted(missing))}", file=ds.source, field=by)
    assign = _assign(sorted({unit_of(e, by) for e in ds.examples}), seed, test_frac, val_frac, explicit)
    for e in ds.examples:
        parts[assign[unit_of(e, by)]].append(e)
    for p in ("train", "test"):
        if not parts[p]:
            raise PluralignError(f"the {p} part of the {by} split is empty (dataset too small?)", file=ds.source, field="split")
    return Split(
        train=ds.subset(parts["train"], f"{ds.name}/train"),
        val=ds.subset(parts["val"], f"{ds.name}/val") if parts["val"] else None,
        test=ds.subset(parts["test"], f"{ds.name}/test"),
        by=by,
        seed=seed,
    )


def _assign(units, seed: int, test_frac: float, val_frac: float, explicit: set | None) -> dict[str, str]:
    """train / val / test of each unit: explicit test units (the rest: val below ``val_frac``) or
    the hashed fractions (a unit whose hash position is below ``test_frac`` is a test unit). When
    the hashed fractions leave the test or the training part empty (a handful of units), the
    ``round(frac x n)`` units with the lowest hash positions are taken instead, at least 1 and at
    most n - 1 (a larger dataset never gets there, so its split is unchanged)."""
    out = {}
    for u in units:
        f = unit_fraction(seed, u)
        if explicit is not None:
            out[u] = "test" if u in explicit else ("val" if f < val_frac else "train")
        else:
            out[u] = "test" if f < test_frac else ("val" if f < test_frac + val_frac else "train")
    n = len(out)
    if explicit is None and n >= 2 and ("test" not in out.values() or "train" not in out.values()):
        ranked = sorted(out, key=lambda u: (unit_fraction(seed, u), u))
        n_test = min(max(1, round(test_frac * n)), n - 1)
        n_val = min(round(val_frac * n), n - 1 - n_test)
        out = {u: "test" if i < n_test else ("val" if i < n_test + n_val else "train") for i, u in enumerate(ranked)}
    return out


def _split_two_way(ds: SurveyDataset, *, test_frac, val_frac, seed, test_units, test_questions, question_test_frac) -> Split:
    qfrac = test_frac if question_test_frac is None else question_test_frac
    if not 0 < qfrac < 1 or qfrac + val_frac >= 1:
        raise PluralignError(f"bad question split fractions test={qfrac} val={val_frac}", field="question_test_frac")
    countries = sorted({e.group for e in ds.examples})
    questions = sorted({e.item_id for e in ds.examples})
    exp_c = exp_q = None
    if test_units:
        exp_c = {country_name(u) for u in test_units}
        missing = exp_c - set(countries)
        if missing:
            raise PluralignError(f"unknown country(s) for the test part: {', '.join(sorted(missing))}", file=ds.source, field="test_units")
    if test_questions:
        exp_q = set(test_questions)
        missing = exp_q - set(questions)
        if missing:
            raise PluralignError(f"unknown question(s) for the test part: {', '.join(sorted(missing))}", file=ds.source, field="test_questions")
    cpart = _assign(countries, seed, test_frac, val_frac, exp_c)
    qpart = _assign(questions, seed, qfrac, val_frac, exp_q)
    for axis, d in (("country", cpart), ("question", qpart)):
        for p in ("train", "test"):
            if p not in d.values():
                raise PluralignError(f"no {axis} in the {p} part of the two-way split (dataset too small? give explicit "
                                     f"test {axis}s or another fraction)", file=ds.source, field="split")
    parts: dict[str, list[Example]] = {"train": [], "val": [], "test": []}
    for e in ds.examples:
        c, q = cpart[e.group], qpart[e.item_id]
        if c == "train" and q == "train":
            parts["train"].append(e)
        elif "test" in (c, q) and "val" not in (c, q):
            parts["test"].append(e)
        elif "val" in (c, q) and "test" not in (c, q):
            parts["val"].append(e)
        # a validation unit paired with a test unit: used nowhere
    return Split(
        train=ds.subset(parts["train"], f"{ds.name}/train"),
        val=ds.subset(parts["val"], f"{ds.name}/val") if parts["val"] else None,
        test=ds.subset(parts["test"], f"{ds.name}/test"),
        by=TWO_WAY, seed=seed, country_part=cpart, question_part=qpart,
    )
