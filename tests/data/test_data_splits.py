"""Deterministic, unit-disjoint, order-stable splits."""

from __future__ import annotations

import random

import pytest

from pluralign.data import GroupExample, IndividualExample, Profile, SurveyDataset, SurveyItem, split_dataset
from pluralign.data.splits import unit_of
from pluralign.errors import PluralignError

COUNTRIES = ["Japan", "Germany", "Brazil", "Kenya", "Mexico", "India", "Canada", "Peru"]
ITEMS = {f"Q{k}": SurveyItem(id=f"Q{k}", text=f"Question {k}?", options=("yes", "no", "maybe")) for k in range(1, 11)}


def _individual(n_resp: int = 120, start: int = 0) -> SurveyDataset:
    exs = []
    for r in range(start, start + n_resp):
        prof = Profile(country=COUNTRIES[r % len(COUNTRIES)], sex="female" if r % 2 else "male", age=20 + r % 7)
        for q in ITEMS:
            exs.append(IndividualExample(respondent_id=f"r{r}", profile=prof, item_id=q, answer=(r + int(q[1:])) % 3))
    return SurveyDataset(name="toy", kind="individual", items=dict(ITEMS), examples=exs, source="toy.tsv")


def _groups() -> SurveyDataset:
    exs = [
        GroupExample(group_id=c, profile=Profile(country=c), item_id=q, probs=(0.2, 0.3, 0.5))
        for c in COUNTRIES
        for q in ITEMS
    ]
    return SurveyDataset(name="toyg", kind="distributional", items=dict(ITEMS), examples=exs, source="toyg.json")


def _units(ds, by):
    return {unit_of(e, by) for e in ds.examples}


@pytest.mark.parametrize("by", ["respondent", "question", "country", "profile"])
def test_disjoint_and_complete(by):
    ds = _individual()
    sp = split_dataset(ds, by, test_frac=0.3, val_frac=0.2, seed=0)
    parts = [sp.train, sp.val, sp.test]
    assert sum(len(p) for p in parts) == len(ds)
    units = [_units(p, by) for p in parts]
    assert not (units[0] & units[1]) and not (units[0] & units[2]) and not (units[1] & units[2])
    assert set().union(*units) == _units(ds, by)
    assert sp.describe() == {"by": by, "seed": 0, "train": len(sp.train), "val": len(sp.val), "test": len(sp.test)}


def test_deterministic_per_seed():
    ds = _individual()
    a = split_dataset(ds, "respondent", seed=3)
    b = split_dataset(_individual(), "respondent", seed=3)
    assert _units(a.test, "respondent") == _units(b.test, "respondent")
    c = split_dataset(ds, "respondent", seed=4)
    assert _units(a.test, "respondent") != _units(c.test, "respondent")
    # the hashed fraction is close to what was asked for
    assert 0.1 < len(_units(a.test, "respondent")) / 120 < 0.3


def test_stable_when_rows_are_added_or_reordered():
    ds = _individual(120)
    sp = split_dataset(ds, "respondent", test_frac=0.25, seed=7)
    bigger = _individual(120)
    bigger.examples += _individual(40, start=500).examples  # new respondents
    random.Random(0).shuffle(bigger.examples)
    sp2 = split_dataset(bigger, "respondent", test_frac=0.25, seed=7)
    old = _units(ds, "respondent")
    assert _units(sp2.test, "respondent") & old == _units(sp.test, "respondent")
    assert _units(sp2.train, "respondent") & old == _units(sp.train, "respondent")
    # within a part the rows keep the dataset's order
    assert [(e.respondent_id, e.item_id) for e in sp.test.examples] == [
        (e.respondent_id, e.item_id) for e in ds.examples if e.respondent_id in _units(sp.test, "respondent")
    ]


def test_explicit_test_units():
    sp = split_dataset(_groups(), "country", test_units=["JPN", "Kenya"])  # codes and names
    assert _units(sp.test, "country") == {"Japan", "Kenya"}
    assert "Japan" not in _units(sp.train, "country") and len(_units(sp.train, "country")) == 6
    sp = split_dataset(_individual(), "question", test_units=["Q1", "Q2"], val_frac=0.3, seed=1)
    assert set(sp.test.items) == {"Q1", "Q2"} and not ({"Q1", "Q2"} & set(sp.train.items))
    assert sp.val is not None and not ({"Q1", "Q2"} & set(sp.val.items))


def test_none_split_uses_everything():
    ds = _groups()
    sp = split_dataset(ds, "none")
    assert sp.train is ds and sp.test is ds and sp.val is None


@pytest.mark.parametrize(
    "ds, kwargs, message",
    [
        (_groups(), dict(by="country", test_units=["Atlantis"]), "unknown country(s) for the test part: Atlantis"),
        (_individual(), dict(by="question", test_units=["Q99"]), "unknown question(s) for the test part: Q99"),
        (_individual(), dict(by="respondent", test_units=["nobody"]), "unknown respondent(s)"),
        (_groups(), dict(by="respondent"), "split by respondent needs individual"),
        (_groups(), dict(by="decade"), "unknown split 'decade'"),
        (_groups(), dict(by="country", test_frac=0.0), "bad split fractions"),
        (_groups(), dict(by="country", test_frac=0.6, val_frac=0.5), "bad split fractions"),
        (_groups(), dict(by="country", test_units=COUNTRIES), "the train part of the country split is empty"),
        (_groups(), dict(by="none", test_units=["JPN"]), "test units need a split unit"),
    ],
)
def test_split_errors(ds, kwargs, message):
    with pytest.raises(PluralignError) as ei:
        split_dataset(ds, **kwargs)
    msg = str(ei.value)
    assert message in msg and ("field 'split'" in msg or f"field '{kwargs['by']}'" in msg)
