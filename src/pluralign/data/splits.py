"""Deterministic train / validation / test splits.

A split assigns whole units to one part: respondents (``respondent``), questions (``question``),
groups/countries (``country``) or distinct profiles (``profile``). The assignment of a unit depends only
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

SplitBy = Literal["respondent", "question", "country", "profile", "none"]
SPLIT_BY = ("respondent", "question", "country", "profile", "none")


@dataclass
class Split:
    train: SurveyDataset
    val: SurveyDataset | None
    test: SurveyDataset
    by: str
    seed: int

    def describe(self) -> dict:
        return {
            "by": self.by,
            "seed": self.seed,
            "train": len(self.train),
            "val": len(self.val) if self.val else 0,
            "test": len(self.test),
        }


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
) -> Split:
    """Split ``ds`` by unit. With ``by='none'`` train and test are both the whole dataset (zero-shot
    evaluation with no training)."""
    if by == "none":
        if test_units:
            raise PluralignError("test units need a split unit (respondent, question, country or profile), not 'none'", field="split")
        return Split(train=ds, val=None, test=ds, by=by, seed=seed)
    if by not in SPLIT_BY:
        raise PluralignError(f"unknown split {by!r} (use one of {', '.join(SPLIT_BY)})", field="split")
    if not 0 < test_frac < 1 or not 0 <= val_frac < 1 or test_frac + val_frac >= 1:
        raise PluralignError(f"bad split fractions test={test_frac} val={val_frac}", field="split")
    parts: dict[str, list[Example]] = {"train": [], "val": [], "test": []}
    explicit = None
    if test_units:
        explicit = {country_name(u) if by == "country" else u for u in test_units}
        known = {unit_of(e, by) for e in ds.examples}
        missing = explicit - known
        if missing:
            raise PluralignError(f"unknown {by}(s) for the test part: {', '.join(sorted(missing))}", file=ds.source, field=by)
    for e in ds.examples:
        u = unit_of(e, by)
        f = unit_fraction(seed, u)
        if explicit is not None:
            part = "test" if u in explicit else ("val" if f < val_frac else "train")
        else:
            part = "test" if f < test_frac else ("val" if f < test_frac + val_frac else "train")
        parts[part].append(e)
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
