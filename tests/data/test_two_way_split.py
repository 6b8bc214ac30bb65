"""The two-way (country x question) split: three test cells, validation kept apart, nothing leaks."""

from __future__ import annotations

import pytest

from pluralign.data import GroupExample, Profile, SurveyDataset, SurveyItem, split_dataset
from pluralign.data.splits import CELLS, unit_fraction
from pluralign.errors import PluralignError

COUNTRIES = ["Japan", "Germany", "Brazil", "Kenya", "Mexico", "India", "Canada", "Peru", "Chile", "Egypt", "Ghana", "Spain"]
ITEMS = {f"Q{k}": SurveyItem(id=f"Q{k}", text=f"Question {k}?", options=("yes", "no", "maybe")) for k in range(1, 31)}


def _groups() -> SurveyDataset:
    exs = [GroupExample(group_id=c, profile=Profile(country=c), item_id=q, probs=(0.2, 0.3, 0.5)) for c in COUNTRIES for q in ITEMS]
    return SurveyDataset(name="toyg", kind="distributional", items=dict(ITEMS), examples=exs, source="toyg.json")


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_no_test_or_validation_unit_reaches_training(seed):
    ds = _groups()
    sp = split_dataset(ds, "country,question", test_frac=0.25, val_frac=0.2, seed=seed)
    test_c, test_q = set(sp.units("country", "test")), set(sp.units("question", "test"))
    val_c, val_q = set(sp.units("country", "val")), set(sp.units("question", "val"))
    assert test_c and test_q and not (test_c & val_c) and not (test_q & val_q)
    for e in sp.train.examples:  # training: training countries x training questions only
        assert e.group not in test_c | val_c and e.item_id not in test_q | val_q
    for e in sp.test.examples:  # test rows never touch a validation unit
        assert e.group not in val_c and e.item_id not in val_q
        assert e.group in test_c or e.item_id in test_q
    for e in sp.val.examples:
        assert e.group not in test_c and e.item_id not in test_q
    # the cells partition the test part exactly as named
    cells = sp.test_cells()
    assert set(cells) <= set(CELLS) and sum(len(c) for c in cells.values()) == len(sp.test)
    for e in cells["unseen_questions"].examples:
        assert e.group not in test_c and e.item_id in test_q
    for e in cells["unseen_countries"].examples:
        assert e.group in test_c and e.item_id not in test_q
    for e in cells["unseen_both"].examples:
        assert e.group in test_c and e.item_id in test_q
    # rows pairing a validation unit with a test unit are used nowhere
    n_dropped = sum(1 for e in ds.examples if (e.group in val_c and e.item_id in test_q) or (e.group in test_c and e.item_id in val_q))
    assert len(sp.train) + len(sp.val) + len(sp.test) + n_dropped == len(ds)


def test_explicit_units_and_the_one_way_hashes():
    ds = _groups()
    sp = split_dataset(ds, "country,question", test_units=["JPN", "Kenya"], test_questions=["Q3", "Q4"], val_frac=0.2, seed=0)
    assert sp.units("country", "test") == ["Japan", "Kenya"] and sp.units("question", "test") == ["Q3", "Q4"]
    # validation countries are those the one-way split would give the same hash fraction
    assert sp.units("country", "val") == sorted(c for c in COUNTRIES if c not in ("Japan", "Kenya") and unit_fraction(0, c) < 0.2)
    d = sp.describe()
    assert d["cells"]["test/unseen_both"] == 4 and d["cells"]["test/unseen_countries"] == 2 * len(sp.units("question", "train"))


def test_deterministic_and_order_stable():
    ds = _groups()
    a = split_dataset(ds, "country,question", test_frac=0.3, val_frac=0.1, seed=3)
    rev = ds.subset(list(reversed(ds.examples)))
    b = split_dataset(rev, "country,question", test_frac=0.3, val_frac=0.1, seed=3)
    assert a.country_part == b.country_part and a.question_part == b.question_part


def test_bad_two_way_requests_are_one_clear_error():
    ds = _groups()
    with pytest.raises(PluralignError, match="unknown question"):
        split_dataset(ds, "country,question", test_questions=["Q999"])
    with pytest.raises(PluralignError, match="two-way"):
        split_dataset(ds, "country", test_questions=["Q1"])
    with pytest.raises(PluralignError, match="no country in the train part"):
        split_dataset(ds, "country,question", test_units=COUNTRIES)


@pytest.mark.parametrize("by", ["country", "country,question"])
def test_a_handful_of_units_still_gets_a_test_and_a_training_part(by):
    """Issue 27, class 10: with 5 countries and test_frac 0.2 the hashed threshold may put no
    country in test; the round(frac x n) lowest hashes are taken instead (at least 1, at most n-1)."""
    five = COUNTRIES[:5]
    items = dict(list(ITEMS.items())[:10])
    exs = [GroupExample(group_id=c, profile=Profile(country=c), item_id=q, probs=(0.2, 0.3, 0.5)) for c in five for q in items]
    ds = SurveyDataset(name="five", kind="distributional", items=items, examples=exs, source="five.json")
    for seed in range(40):
        sp = split_dataset(ds, by, test_frac=0.2, seed=seed)
        test_c = {e.group for e in sp.test.examples} - {e.group for e in sp.train.examples}
        assert len(sp.train) and len(sp.test) and 1 <= len({e.group for e in sp.train.examples}) <= 4
        if by == "country":
            assert len(test_c) >= 1
