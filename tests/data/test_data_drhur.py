"""The drhur WVS-7 teaching sample (wide CSV, one row per respondent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import shared
from pluralign.data import load_dataset
from pluralign.errors import PluralignError

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "drhur" / "wvs7_sample.csv"


def test_fixture():
    ds = load_dataset(FIX)  # detected from the header
    assert ds.name == "wvs7-drhur" and ds.kind == "individual" and len(ds.items) == 17
    assert len(ds) == 17 + 15 + 16 and ds.groups() == ["Chile", "Kenya"]
    ans = {(e.respondent_id, e.item_id): ds.items[e.item_id].options[e.answer] for e in ds.examples}
    assert ans[("drhur-1", "trust_family")] == "Trust completely"  # reverse-coded: 4 = trust completely
    assert ans[("drhur-1", "confidence_gov")] == "None at all"
    assert ans[("drhur-1", "corruption_state")] == "Most of them"
    assert ans[("drhur-2", "equalFreedom")] == "Freedom" and ans[("drhur-2", "equalIncentive")] == "Greater incentives for individual effort"
    assert ("drhur-2", "corruption_local") not in ans and ("drhur-3", "equalFreedom") not in ans
    p1 = next(e.profile for e in ds.examples if e.respondent_id == "drhur-1")
    assert p1.describe() == (
        "A 41-year-old woman living in Chile, with bachelor or equivalent education, in the 7th income decile, married, religiosity: Religious."
    )
    p2 = next(e.profile for e in ds.examples if e.respondent_id == "drhur-2")
    assert p2.marital_status == "Divorced" and p2.income is None and p2.sex == "male"
    assert not ds.items["equalFreedom"].ordinal and ds.items["trust_family"].ordinal


@pytest.mark.parametrize(
    "old, new, field, message",
    [
        (",4.0,3.0,2.0,2.0,3.0,", ",5.0,3.0,2.0,2.0,3.0,", "trust_family", "answer '5.0' is not an option of trust_family"),
        ("Chile,True,41.0", "Chile,maybe,41.0", "female", "expected True/False"),
        ("Chile,True,41.0,6.0", "Chile,True,41.0,9.0", "education", "ISCED level 0-8"),
        ("Chile,True,41.0", "Chile,True,4x", "age", "expected a number"),
        ("Chile,True,41.0", "Chile,True,200.0", "age", "age must be an integer in years"),
        (",Married,7.0,", ",Married,11.0,", "incomeLevel", "income decile must be 1-10"),
    ],
)
def test_bad_rows(tmp_path, old, new, field, message):
    p = tmp_path / "wvs7_sample.csv"
    text = FIX.read_text()
    assert old in text
    p.write_text(text.replace(old, new, 1))
    with pytest.raises(PluralignError) as ei:
        load_dataset(p)
    assert str(ei.value).startswith(f"{p}, row 1, field '{field}': ") and message in str(ei.value)


def test_missing_column(tmp_path):
    p = tmp_path / "wvs7.csv"
    p.write_text(FIX.read_text().replace("trust_stranger", "trust_others"))
    with pytest.raises(PluralignError) as ei:
        load_dataset(f"wvs7-drhur:{p}")
    assert str(ei.value).startswith(f"{p}, field 'trust_stranger': missing column(s) trust_stranger")


def test_shared_sample():
    path = shared("wvs7_individual_sample_drhur", "wvs7_sample.csv")
    ds = load_dataset("wvs7-drhur")
    assert Path(ds.source) == path
    s = ds.summary()
    # SOURCE.md: 1,264 respondents, 45 countries; one respondent answered none of the 17 items
    assert s["respondents"] == 1263 and s["groups"] == 45 and s["items"] == 17 and s["examples"] == 20549
