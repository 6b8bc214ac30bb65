"""SWOW loader: both strength formats, Mandarin files, every bad-input case, the cue split."""

from __future__ import annotations

from pathlib import Path

import pytest

from pluralign.data.loaders.swow import check_language, load_swow, sample_cues, split_cues
from pluralign.errors import PluralignError
from tests.conftest import shared

FIX = Path(__file__).parent / "fixtures"
HEADER = "cue,response,R1,N,R1.Strength\n"
GOOD = "apple,fruit,5,10,0.5\napple,red,3,10,0.3\napple,tree,2,10,0.2\n"


def _write(tmp_path: Path, body: str, name: str = "strength.SWOW-EN.R1.csv", header: str = HEADER) -> Path:
    p = tmp_path / name
    p.write_text(header + body, encoding="utf-8")
    return p


def test_r1_fixture_orders_by_strength_and_drops_small_cues():
    d = load_swow(FIX / "strength.SWOW-EN.R1.csv", min_responses=3)
    assert d.language == "en" and d.response_set == "R1"
    assert [a.response for a in d.cues["apple"]] == ["fruit", "red", "pie", "tree"]  # ties by name
    assert d.cues["apple"][0].strength == pytest.approx(0.5)
    assert "rare" not in d.cues  # 2 responses < 3
    assert d.dropped["cues_below_min_responses"] == 1
    assert len(load_swow(FIX / "strength.SWOW-EN.R1.csv", min_responses=2)) == 5


def test_r123_format_with_row_index_and_missing_response():
    d = load_swow(FIX / "strength.SWOW-EN.R123.csv")
    assert d.response_set == "R123"
    assert [a.response for a in d.cues["apple"]] == ["fruit", "red", "tree"]  # the NA response is skipped
    assert d.dropped["empty_responses"] == 1
    assert d.cues["dog"][0].count == 15 and d.cues["dog"][0].strength == pytest.approx(0.5)


def test_zh_file_tab_separated_language_from_name():
    d = load_swow(FIX / "strength.SWOWZH.R1.csv")
    assert d.language == "zh"
    assert [a.response for a in d.cues["苹果"]] == ["水果", "红色", "树"]


@pytest.mark.parametrize(
    "row, field",
    [
        ("apple,fruit,x,10,0.5\n", "count"),
        ("apple,fruit,5,10,1.5\n", "strength"),
        ("apple,fruit,5,10,0.9\n", "strength"),  # != 5/10
        ("apple,fruit,12,10,1.0\n", "count"),  # count > N
        ("apple,fruit,5,0,0.5\n", "N"),
        (",fruit,5,10,0.5\n", "cue"),
        ("apple,fruit,5\n", None),  # too few fields
    ],
)
def test_malformed_rows_raise_with_row_and_field(tmp_path, row, field):
    p = _write(tmp_path, GOOD + row)
    with pytest.raises(PluralignError) as e:
        load_swow(p)
    assert e.value.row == 4 and e.value.field == field
    assert str(p) in str(e.value) and "\n" not in str(e.value)
    d = load_swow(p, on_bad_row="skip")  # documented filtering with a count
    assert d.dropped["bad_rows"] == 1 and len(d.cues["apple"]) == 3


def test_duplicates_error_or_merge(tmp_path):
    p = _write(tmp_path, GOOD + "apple,red,1,10,0.1\n")
    with pytest.raises(PluralignError, match="duplicate cue-response pair.*first seen at row 2") as e:
        load_swow(p)
    assert e.value.row == 4
    d = load_swow(p, on_duplicate="merge")
    red = next(a for a in d.cues["apple"] if a.response == "red")
    assert red.count == 4 and red.strength == pytest.approx(0.4) and d.dropped["duplicates_merged"] == 1


def test_not_a_strength_file_and_missing_file(tmp_path):
    with pytest.raises(PluralignError, match="not a SWOW strength file"):
        load_swow(_write(tmp_path, "a,b\n", header="word,freq\n"))
    with pytest.raises(PluralignError, match="not found"):
        load_swow(tmp_path / "nope.csv")
    with pytest.raises(PluralignError, match="no usable cues"):
        load_swow(_write(tmp_path, GOOD, name="x.csv"), min_responses=4)


def test_language_mismatch(tmp_path):
    with pytest.raises(PluralignError, match="language mismatch"):
        load_swow(FIX / "strength.SWOW-EN.R1.csv", language="zh")  # file name says en
    d = load_swow(FIX / "strength.SWOWZH.R1.csv")
    with pytest.raises(PluralignError, match="language mismatch"):
        check_language(d, "en")  # Chinese data, English prompt template
    # Chinese cues in a file that claims nothing: default 'en' template → caught by the script check
    p = _write(tmp_path, "苹果,水果,5,10,0.5\n苹果,红色,3,10,0.3\n苹果,树,2,10,0.2\n", name="assoc.csv")
    with pytest.raises(PluralignError, match="language mismatch.*Chinese"):
        load_swow(p)
    assert load_swow(p, language="zh").language == "zh"


def test_split_deterministic_disjoint_and_subset_stable():
    d = load_swow(FIX / "strength.SWOW-EN.R1.csv", min_responses=2)
    many = d.subset(list(d.cues))
    many.cues = {f"{c}{i}": v for i in range(200) for c, v in d.cues.items()}  # 1000 synthetic cues
    a, b = split_cues(many, seed=3), split_cues(many, seed=3)
    assert list(a.test.cues) == list(b.test.cues) and list(a.train.cues) == list(b.train.cues)
    parts = [set(a.train.cues), set(a.val.cues), set(a.test.cues)]
    assert sum(map(len, parts)) == 1000 and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert 0.7 < len(parts[0]) / 1000 < 0.9 and 0.05 < len(parts[2]) / 1000 < 0.15
    assert set(split_cues(many, seed=4).test.cues) != parts[2]
    # a cue's part does not depend on the other cues present
    half = many.subset(list(many.cues)[:500])
    assert set(split_cues(half, seed=3).test.cues) == parts[2] & set(half.cues)
    s1, s2 = sample_cues(a.train, 10, seed=0), sample_cues(a.train, 20, seed=0)
    assert set(s1.cues) <= set(s2.cues) and len(s1) == 10


def test_real_swow_en_file():
    p = shared("swow_en", "strength.SWOW-EN.R1.csv")
    d = load_swow(p)
    assert d.language == "en" and len(d) > 10000
    assert d.dropped["bad_rows"] == 0 and d.dropped["duplicates_merged"] == 0
    top = [a.response for a in d.cues["aardvark"][:2]]
    assert top == ["animal", "anteater"]
    assert sum(a.strength for a in d.cues["aardvark"]) == pytest.approx(1.0, abs=1e-6)
    sp = split_cues(d, seed=0)
    assert 0.08 < len(sp.test) / len(d) < 0.12
