"""The two task shapes and the dataset container.

* individual: one respondent's profile + an item → the respondent's answer (an option index);
* distributional: a group's profile (e.g. a country) + an item → the group's answer distribution.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Literal, Sequence

import numpy as np

from pluralign.data.items import SurveyItem
from pluralign.data.profile import Profile
from pluralign.errors import PluralignError

TaskKind = Literal["individual", "distributional"]


@dataclass(frozen=True)
class IndividualExample:
    respondent_id: str
    profile: Profile
    item_id: str
    answer: int  # index into item.options

    @property
    def group(self) -> str:
        return self.profile.country or "<all>"


@dataclass(frozen=True)
class GroupExample:
    group_id: str
    profile: Profile
    item_id: str
    probs: tuple[float, ...]  # human answer distribution over item.options, sums to 1
    n: int | None = None  # respondents behind it, when known

    @property
    def group(self) -> str:
        return self.profile.country or self.group_id


Example = IndividualExample | GroupExample


@dataclass
class SurveyDataset:
    """Items plus examples of one task shape. ``source`` names where it came from."""

    name: str
    kind: TaskKind
    items: dict[str, SurveyItem]
    examples: list[Example]
    source: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        want = IndividualExample if self.kind == "individual" else GroupExample
        for i, ex in enumerate(self.examples):
            if not isinstance(ex, want):
                raise PluralignError(f"{self.kind} dataset holds a {type(ex).__name__}", file=self.source, row=i + 1)
            if ex.item_id not in self.items:
                raise PluralignError(f"unknown question id {ex.item_id!r}", file=self.source, row=i + 1, field="question_id")
            if want is GroupExample and not all(isinstance(p, (int, float)) and not isinstance(p, bool) and math.isfinite(p) and p >= 0 for p in ex.probs):
                raise PluralignError(f"answer shares of {ex.group}/{ex.item_id} are not finite, non-negative numbers: {ex.probs}",
                                     file=self.source, row=i + 1, field="probs")

    def __len__(self) -> int:
        return len(self.examples)

    # ---------------------------------------------------------------- views
    @classmethod
    def from_examples(
        cls, name: str, kind: TaskKind, items: dict[str, SurveyItem], examples: Iterable[Example], source: str = "", meta: dict | None = None
    ) -> "SurveyDataset":
        """A dataset holding ``examples`` and only the items they use."""
        exs = list(examples)
        used = {e.item_id for e in exs}
        return cls(name=name, kind=kind, items={k: v for k, v in items.items() if k in used}, examples=exs, source=source, meta=dict(meta or {}))

    def subset(self, examples: Iterable[Example], name: str | None = None) -> "SurveyDataset":
        return SurveyDataset.from_examples(name or self.name, self.kind, self.items, examples, self.source, self.meta)

    def filter(self, *, countries: Sequence[str] | None = None, questions: Sequence[str] | None = None) -> "SurveyDataset":
        from pluralign.data.countries import country_name

        cs = {country_name(c) for c in countries} if countries else None
        qs = set(questions) if questions else None
        if qs:
            unknown = qs - set(self.items)
            if unknown:
                raise PluralignError(f"unknown question id(s) {', '.join(sorted(unknown))}", file=self.source, field="question_id")
        if cs:
            known = {e.group for e in self.examples}
            unknown = cs - known
            if unknown:
                raise PluralignError(
                    f"no rows for group(s) {', '.join(sorted(unknown))} (have: {', '.join(sorted(known)[:30])})",
                    file=self.source,
                    field="country",
                )
        out = [e for e in self.examples if (cs is None or e.group in cs) and (qs is None or e.item_id in qs)]
        if not out:
            raise PluralignError("the selection is empty", file=self.source)
        return self.subset(out)

    def groups(self) -> list[str]:
        return sorted({e.group for e in self.examples})

    def human_distributions(self) -> dict[tuple[str, str], np.ndarray]:
        """(group, item_id) → human answer distribution. For individual data, the empirical
        distribution of the group's respondents (groups are countries)."""
        if self.kind == "distributional":
            return {(e.group, e.item_id): np.asarray(e.probs, dtype=float) for e in self.examples}
        counts: dict[tuple[str, str], np.ndarray] = {}
        for e in self.examples:
            k = (e.group, e.item_id)
            if k not in counts:
                counts[k] = np.zeros(self.items[e.item_id].n_options)
            counts[k][e.answer] += 1
        return {k: v / v.sum() for k, v in counts.items()}

    def summary(self) -> dict:
        per_item = Counter(e.item_id for e in self.examples)
        per_group = Counter(e.group for e in self.examples)
        opts = Counter(it.n_options for it in self.items.values())
        out = {
            "name": self.name,
            "kind": self.kind,
            "source": self.source,
            "examples": len(self.examples),
            "items": len(self.items),
            "groups": len(per_group),
            "ordinal_items": sum(it.ordinal for it in self.items.values()),
            "options_per_item": dict(sorted(opts.items())),
            "examples_per_group": {"min": min(per_group.values()), "max": max(per_group.values())} if per_group else {},
            "examples_per_item": {"min": min(per_item.values()), "max": max(per_item.values())} if per_item else {},
            "top_groups": per_group.most_common(10),
        }
        if self.kind == "individual":
            out["respondents"] = len({e.respondent_id for e in self.examples})
        return out


def mean_distributions(ds: SurveyDataset) -> dict[str, np.ndarray]:
    """Per item, the mean over groups of the groups' human distributions (the 'collapse to the
    mean' predictor)."""
    acc: dict[str, list[np.ndarray]] = defaultdict(list)
    for (g, q), p in ds.human_distributions().items():
        acc[q].append(p)
    return {q: np.mean(ps, axis=0) for q, ps in acc.items()}
