"""Open-ended data: (profile, prompt) records, (profile, prompt, chosen, rejected) pairs, splits.

Survey data (:mod:`pluralign.data.tasks`) asks a question with options; the data here asks an
open question and keeps free-text answers:

* :class:`PromptRecord` — one profile asking one prompt (with the conversation before it), and,
  where humans answered it themselves (BLEnD), their answers (grouped variants, with counts);
* :class:`PreferencePair` — a record with a ``chosen`` and a ``rejected`` completion;
* :class:`PreferenceDataset` — records + pairs + where they came from + what the loader dropped
  (``meta["dropped"]``: reason -> count, as the survey loaders report them).

The loaders (PRISM, Community Alignment, BLEnD; :mod:`pluralign.data.loaders`) register with
:func:`pluralign.data.loaders.register_preference_loader`; :func:`pluralign.data.loaders.load_preferences`
loads by name, ``name:path`` or a detected path.

Whose profile is it: ``profile_role`` is ``"self"`` when the model should answer AS the profile
(BLEnD: a person from the region answers the question) and ``"user"`` when the profile is the
person the model talks TO (PRISM, Community Alignment: the rater who scored the responses). The
system prompt of :func:`profile_system` says which.

Splits are by unit (:meth:`PreferenceDataset.split`): ``question`` (the record's ``unit``: the
BLEnD question id, shared across regions, or the PRISM / Community Alignment conversation),
``profile``, ``country`` or ``respondent`` (rater / annotator id); the assignment of a unit
depends only on ``(seed, unit)`` (:func:`pluralign.data.splits.unit_fraction`), as for surveys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from pluralign.data.profile import Profile
from pluralign.errors import PluralignError

PROFILE_ROLES = ("self", "user")
#: split units of preference data (``auto`` = ``question``)
PREFERENCE_SPLITS = ("auto", "question", "profile", "country", "respondent")


@dataclass(frozen=True)
class PromptRecord:
    """One profile asking one prompt. ``messages``: ``(role, content)`` turns ending with the
    user's prompt (earlier turns are the conversation so far). ``answers``: human answers, one
    tuple of accepted variants per answer group, most frequent group first; ``answer_counts``:
    annotators behind each group."""

    id: str
    unit: str
    profile: Profile
    messages: tuple[tuple[str, str], ...]
    answers: tuple[tuple[str, ...], ...] = ()
    answer_counts: tuple[int, ...] = ()
    respondent: str | None = None
    source_row: int | None = None

    @property
    def prompt(self) -> str:
        """The last user turn."""
        return self.messages[-1][1] if self.messages else ""

    def chat(self) -> list[dict]:
        return [{"role": r, "content": c} for r, c in self.messages]


@dataclass(frozen=True)
class PreferencePair:
    """``chosen`` preferred over ``rejected`` for ``record`` (its profile and prompt).
    ``kind`` says where the rejected completion came from (``lower-score``, ``not-preferred``,
    ``other-region``, ``hedge``)."""

    record: PromptRecord
    chosen: str
    rejected: str
    kind: str = ""
    source_row: int | None = None


@dataclass
class PreferenceDataset:
    name: str
    records: list[PromptRecord]
    pairs: list[PreferencePair]
    source: str = ""
    profile_role: str = "self"
    meta: dict = field(default_factory=dict)
    kind: str = "preference"

    def __post_init__(self) -> None:
        if self.profile_role not in PROFILE_ROLES:
            raise PluralignError(f"profile_role must be one of {PROFILE_ROLES}, got {self.profile_role!r}", field="profile_role")
        self.meta.setdefault("dropped", {})

    def __len__(self) -> int:
        return len(self.pairs)

    # ---------------------------------------------------------------- views
    def with_parts(self, records: list[PromptRecord], pairs: list[PreferencePair], name: str | None = None) -> "PreferenceDataset":
        return PreferenceDataset(name or self.name, records, pairs, self.source, self.profile_role, dict(self.meta), self.kind)

    def filter(self, *, countries: Sequence[str] | None = None, questions: Sequence[str] | None = None) -> "PreferenceDataset":
        """Keep records (and their pairs) of these countries (profile country, case-insensitive)
        and / or these units (question ids, conversation ids)."""
        from pluralign.data.countries import country_name

        want_c = {country_name(c).lower() for c in countries} | {c.lower() for c in countries} if countries else None
        want_q = set(questions) if questions else None

        def keep(r: PromptRecord) -> bool:
            if want_c is not None and (r.profile.country or "").lower() not in want_c:
                return False
            return want_q is None or r.unit in want_q

        recs = [r for r in self.records if keep(r)]
        ids = {r.id for r in recs}
        out = self.with_parts(recs, [p for p in self.pairs if p.record.id in ids])
        if not out.records:
            raise PluralignError("no record left after --countries / --questions", file=self.source, field="countries" if countries else "questions")
        return out

    def split(self, by: str = "auto", *, test_frac: float = 0.2, seed: int = 0, test_units: Sequence[str] | None = None) -> "PreferenceSplit":
        from pluralign.data.splits import unit_fraction

        by = "question" if by == "auto" else by
        if by not in PREFERENCE_SPLITS:
            raise PluralignError(f"preference data splits by {', '.join(PREFERENCE_SPLITS[1:])}, not {by!r}", field="split")
        if not 0 < test_frac < 1:
            raise PluralignError(f"test fraction must be in (0, 1), got {test_frac}", field="test_frac")
        explicit = set(test_units) if test_units else None
        if explicit is not None:
            known = {unit_of_record(r, by) for r in self.records}
            missing = explicit - known
            if missing:
                raise PluralignError(f"unknown {by}(s) for the test part: {', '.join(sorted(missing)[:5])}", file=self.source, field=by)
        test_ids = set()
        for r in self.records:
            u = unit_of_record(r, by)
            if (u in explicit) if explicit is not None else unit_fraction(seed, u) < test_frac:
                test_ids.add(r.id)
        parts = {}
        for name, inside in (("train", False), ("test", True)):
            recs = [r for r in self.records if (r.id in test_ids) == inside]
            if not recs:
                raise PluralignError(f"the {name} part of the {by} split is empty (dataset too small?)", file=self.source, field="split")
            ids = {r.id for r in recs}
            parts[name] = self.with_parts(recs, [p for p in self.pairs if p.record.id in ids], f"{self.name}/{name}")
        return PreferenceSplit(parts["train"], parts["test"], by, seed)

    def profiles(self) -> list[Profile]:
        seen: dict[str, Profile] = {}
        for r in self.records:
            seen.setdefault(r.profile.key(), r.profile)
        return list(seen.values())

    def summary(self) -> dict:
        from collections import Counter

        kinds = Counter(p.kind for p in self.pairs)
        return {
            "name": self.name, "kind": self.kind, "source": self.source, "records": len(self.records), "pairs": len(self.pairs),
            "units": len({r.unit for r in self.records}), "profiles": len(self.profiles()), "profile_role": self.profile_role,
            "pair_kinds": dict(kinds), "with_human_answers": sum(1 for r in self.records if r.answers),
            "dropped": {k: int(v) for k, v in (self.meta.get("dropped") or {}).items() if v},
        }


@dataclass
class PreferenceSplit:
    train: PreferenceDataset
    test: PreferenceDataset
    by: str
    seed: int

    def describe(self) -> dict:
        return {"by": self.by, "seed": self.seed, "train": len(self.train.records), "val": 0, "test": len(self.test.records),
                "train_pairs": len(self.train.pairs), "test_pairs": len(self.test.pairs)}


def unit_of_record(r: PromptRecord, by: str) -> str:
    if by in ("question", "auto"):
        return r.unit
    if by == "profile":
        return r.profile.key()
    if by == "country":
        if not r.profile.country:
            raise PluralignError(f"record {r.id} has no country to split by", field="split")
        return r.profile.country
    if by == "respondent":
        if r.respondent is None:
            raise PluralignError(f"record {r.id} has no respondent id to split by (use question or profile)", field="split")
        return r.respondent
    raise PluralignError(f"unknown split {by!r} (use one of {', '.join(PREFERENCE_SPLITS)})", field="split")


def profile_system(profile: Profile, role: str = "self") -> str:
    """The system prompt carrying the profile: answer AS the person (``self``) or FOR them (``user``)."""
    d = profile.describe()
    d = d[0].lower() + d[1:]
    if role == "user":
        return f"You are a helpful assistant. The person you are talking with is {d} Respond as this person would prefer."
    return f"Answer as the following person would, from their own background and experience: {d}"


class Dropper:
    """Counts unusable rows per reason (``meta["dropped"]``) or, with ``strict``, raises the first."""

    def __init__(self, strict: bool = False):
        self.strict = strict
        self.counts: dict[str, int] = {}

    def __call__(self, reason: str, *, file=None, row: int | None = None, field: str | None = None, detail: str = "") -> None:
        if self.strict:
            raise PluralignError(reason + (f" ({detail})" if detail else ""), file=file, row=row, field=field)
        self.counts[reason] = self.counts.get(reason, 0) + 1


UNSAID = ("", "prefer not to say", "prefer_not_to_say", "nan", "none", "unknown", "n/a")


def said(v) -> str | None:
    """A demographic answer as text, or ``None`` when it was not given ("prefer not to say", blank,
    NaN). PRISM's object answers (``{"simplified": ...}``) give their simplified value."""
    if isinstance(v, dict):
        v = v.get("simplified") or v.get("categorised") or v.get("self_described")
    if v is None or (isinstance(v, float) and v != v):
        return None
    s = str(v).strip()
    return None if s.lower() in UNSAID else s


def put_gender(kw: dict, extra: list, g: str | None) -> None:
    """A gender answer into a profile's fields: male / female (man / woman) as ``sex``, any other
    answer kept verbatim in ``extra`` as ``gender``."""
    if g and g.lower() in ("male", "female", "man", "woman"):
        kw["sex"] = g.lower()
    elif g:
        extra.append(("gender", g))


def clean_text(v) -> str:
    """A response / prompt cell as text: ``None``/NaN -> ``""``; stray end-of-text markers removed."""
    if v is None or (isinstance(v, float) and v != v):
        return ""
    s = str(v)
    for junk in ("<|end_of_text|>", "<|eot_id|>"):
        s = s.replace(junk, "")
    return s.strip()


def add_pair(pairs: list, drop: Dropper, record: PromptRecord, chosen: str, rejected: str, kind: str, *,
             file=None, row: int | None = None, field: str | None = None) -> bool:
    """Append a pair unless it is unusable (empty side, identical sides): then count / raise."""
    if not chosen or not rejected:
        drop("empty chosen or rejected response", file=file, row=row, field=field)
        return False
    if " ".join(chosen.split()) == " ".join(rejected.split()):
        drop("identical chosen and rejected response", file=file, row=row, field=field)
        return False
    pairs.append(PreferencePair(record, chosen, rejected, kind, row))
    return True


def check_pairs(pairs: Iterable[PreferencePair], source: str = "") -> None:
    """Refuse pairs that cannot train (for pairs built outside the loaders, e.g. from Python)."""
    for i, p in enumerate(pairs, start=1):
        if not isinstance(p, PreferencePair):
            raise PluralignError(f"not a PreferencePair: {type(p).__name__}", file=source or None, row=i)
        if p.record.profile.is_empty():
            raise PluralignError("pair without a profile", file=source or None, row=i, field="profile")
        if not p.chosen.strip() or not p.rejected.strip():
            raise PluralignError("empty chosen or rejected response", file=source or None, row=i, field="chosen" if not p.chosen.strip() else "rejected")
        if " ".join(p.chosen.split()) == " ".join(p.rejected.split()):
            raise PluralignError("identical chosen and rejected response", file=source or None, row=i, field="rejected")


Loader = Callable[..., PreferenceDataset]

__all__ = [
    "PromptRecord", "PreferencePair", "PreferenceDataset", "PreferenceSplit", "profile_system", "unit_of_record",
    "Dropper", "add_pair", "check_pairs", "clean_text", "PREFERENCE_SPLITS", "PROFILE_ROLES",
]
