"""WorldValuesBench loader: the release's wide TSVs + question_metadata / codebook / answer_adjustment."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import shared
from pluralign.data import load_dataset
from pluralign.data.loaders.worldvaluesbench import (
    build_items,
    load_metadata,
    load_profiles,
    load_worldvaluesbench,
)
from pluralign.errors import PluralignError

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "worldvaluesbench"
SPLIT = FIX / "WorldValuesBench" / "test"


@pytest.fixture()
def release(tmp_path) -> Path:
    """A writable copy of the fixture release (for the bad-input cases)."""
    dst = tmp_path / "wvb"
    shutil.copytree(FIX, dst)
    return dst


def _rewrite(path: Path, fn) -> None:
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    path.write_text("\n".join("\t".join(r) for r in fn(rows)) + "\n")


def test_items_follow_codebook_and_answer_adjustment():
    ds = load_dataset(SPLIT)
    it = ds.items
    assert set(it) == {"Q1", "Q56", "Q111", "Q119"}
    assert it["Q1"].options == ("Very important", "Rather important", "Not very important", "Not at all important")
    assert it["Q1"].text == "How important is family in your life?"  # scale prefix moved into the options
    # Q56: raw 2 (Worse off) and 3 (Or about the same) swap places so the scale is monotonic
    assert it["Q56"].options == ("Better off", "Or about the same", "Worse off")
    # Q111: code 3 ("Other answer") is dropped; negative missing codes never become options
    assert it["Q111"].options == ("Protect environment", "Economic growth")
    # Q119: raw 0 "Hard to say" becomes the middle (3), 3 → 4, 4 → 5
    assert it["Q119"].options == ("Strongly agree", "Agree", "Hard to say", "Disagree", "Strongly disagree")
    assert it["Q119"].codes == ("1", "2", "3", "4", "5")
    assert all(i.ordinal for i in it.values())
    assert it["Q1"].category == "Social Values, Norms, Stereotypes"


def test_examples_profiles_and_missing_answers():
    ds = load_dataset(SPLIT)
    assert ds.kind == "individual" and ds.name == "worldvaluesbench"
    assert len(ds) == 17  # 20 cells minus 3 empty ones
    assert ds.summary()["respondents"] == 5
    assert ds.groups() == ["Australia", "China", "Mexico"]
    ans = {(e.respondent_id, e.item_id): e.answer for e in ds.examples}
    assert ans[("36000001", "Q56")] == 1  # release code 2 = "Or about the same"
    assert ans[("36000002", "Q119")] == 4
    assert ("36000002", "Q111") not in ans and ("156000002", "Q56") not in ans
    prof = {e.respondent_id: e.profile for e in ds.examples}
    assert prof["36000001"].describe() == (
        "A 55-year-old Buddhist woman living in urban Australia, with bachelor or equivalent (ISCED 6) education, "
        "in the 8th income decile."
    )
    assert prof["156000001"].religion == "no religion" and prof["156000001"].income == 5  # "5.0" → 5
    # "No answer" / "Missing; ..." labels and empty cells are missing values, not attributes
    p = prof["156000002"]
    assert p.sex is None and p.education is None and p.age is None and p.age_band == "65 and over"


def test_path_forms_give_the_same_dataset():
    a = load_dataset(SPLIT)
    for spec in (FIX, SPLIT / "test_value_qa.tsv", SPLIT / "test_demographic_qa.tsv", f"worldvaluesbench:{SPLIT}"):
        b = load_dataset(spec)
        assert [(e.respondent_id, e.item_id, e.answer) for e in b.examples] == [
            (e.respondent_id, e.item_id, e.answer) for e in a.examples
        ]
    assert len(load_worldvaluesbench(FIX, split="test")) == len(a)


def test_filters_while_reading():
    ds = load_worldvaluesbench(SPLIT, questions=["Q1", "Q56"], countries=["CHN"])
    assert set(ds.items) == {"Q1", "Q56"} and ds.groups() == ["China"] and len(ds) == 3
    assert len({e.respondent_id for e in load_worldvaluesbench(SPLIT, max_respondents=2).examples}) == 2


def test_raw_codes_apply_the_adjustment(tmp_path, release):
    d = release / "WorldValuesBench" / "test"
    (d / "test_demographic_qa.tsv").write_text(
        "D_INTERVIEW\tB_COUNTRY\tQ260\tQ262\tQ289\n1\t36\t2\t40\t7\n2\t484\t-2\t-1\t0\n"
    )
    (d / "test_value_qa.tsv").write_text("D_INTERVIEW\tQ56\tQ111\tQ119\n1\t2\t3\t0\n2\t-1\t1\t4\n")
    ds = load_worldvaluesbench(d, raw_codes=True)
    got = {(e.respondent_id, e.item_id): ds.items[e.item_id].options[e.answer] for e in ds.examples}
    assert got == {
        ("1", "Q56"): "Worse off",  # raw 2 → 3
        ("1", "Q119"): "Hard to say",  # raw 0 → 3
        ("2", "Q111"): "Protect environment",
        ("2", "Q119"): "Strongly disagree",  # raw 4 → 5
    }  # raw Q111=3 is dropped by the adjustment, -1 is missing
    p1 = next(e.profile for e in ds.examples if e.respondent_id == "1")
    p2 = next(e.profile for e in ds.examples if e.respondent_id == "2")
    assert (p1.country, p1.sex, p1.age, p1.religion) == ("Australia", "female", 40, "Buddhist")
    assert (p2.country, p2.sex, p2.age, p2.religion) == ("Mexico", None, None, "no religion")


def _err(spec, **kw) -> str:
    with pytest.raises(PluralignError) as ei:
        load_dataset(spec, **kw)
    msg = str(ei.value)
    assert "\n" not in msg
    return msg


def test_bad_inputs_name_file_row_field(release):
    d = release / "WorldValuesBench" / "test"
    vals, demo = d / "test_value_qa.tsv", d / "test_demographic_qa.tsv"
    orig_vals, orig_demo = vals.read_text(), demo.read_text()

    _rewrite(vals, lambda r: [r[0], r[1], [r[2][0], "7", *r[2][2:]], *r[3:]])  # Q1 = 7: outside 1..4
    assert _err(d) == f"{vals}, row 2, field 'Q1': answer '7' is not an option of Q1 (codes: 1, 2, 3, 4)"
    _rewrite(vals, lambda r: [r[0], r[1], [r[2][0], "Sometimes", *r[2][2:]], *r[3:]])
    msg = _err(d)
    assert msg.startswith(f"{vals}, row 2, field 'Q1': answer 'Sometimes' is not an option")

    vals.write_text(orig_vals.replace("Q119", "Q999"))
    assert _err(d).startswith(f"{vals}, field 'Q999': unknown question id 'Q999'")
    vals.write_text(orig_vals.replace("Q119", "Q260"))
    assert "Q260 is a demographic variable, not a value question" in _err(d)
    vals.write_text(orig_vals.replace("D_INTERVIEW", "ID"))
    assert _err(d).startswith(f"{vals}, field 'D_INTERVIEW': missing column(s) D_INTERVIEW")
    vals.write_text(orig_vals + "99\t1\t1\t1\t1\n")
    assert _err(d) == f"{vals}, row 6, field 'D_INTERVIEW': respondent 99 has no row in test_demographic_qa.tsv"
    vals.write_text(orig_vals + orig_vals.splitlines()[1] + "\n")
    assert "row 6, field 'D_INTERVIEW': duplicate respondent id 36000001" in _err(d)
    vals.write_text("D_INTERVIEW\tQ1\n36000001\t\n")
    assert "no answers left" in _err(d)
    vals.write_text(orig_vals)

    _rewrite(demo, lambda r: [r[0], r[1], [*r[2][:3], "Other", *r[2][4:]], *r[3:]])  # sex = "Other"
    assert _err(d).startswith(f"{demo}, row 2, field 'Q260': sex must be male or female")
    _rewrite(demo, lambda r: [r[0], r[1], [*r[2][:4], "300", *r[2][5:]], *r[3:]])  # age 300
    assert _err(d).startswith(f"{demo}, row 2, field 'Q262': age must be an integer")
    demo.write_text(orig_demo)
    assert "unknown profile field 'hair'" in _err(d, profile_columns={"Q260": "hair"})
    assert "missing column(s) Q273" in _err(d, profile_columns={"Q273": "marital_status"})
    demo.write_text(orig_demo.replace("Q289", "Q12345"))
    assert _err(d).startswith(f"{demo}, field 'Q12345': unknown question id")
    demo.unlink()
    assert "test_demographic_qa.tsv" in _err(vals)

    assert "unknown question id(s) Q2" in _err(SPLIT, questions=["Q1", "Q2"])
    assert "no respondents from Japan" in _err(SPLIT, countries=["JPN"])
    assert "unknown split 'dev'" in _err(FIX, split="dev")


def test_metadata_errors(release, monkeypatch):
    import pluralign.data.loaders.worldvaluesbench as wvb

    monkeypatch.setattr(wvb, "shared_data_dir", lambda: None)  # no fallback to the development data
    d = release / "WorldValuesBench" / "test"
    (release / "dataset_construction" / "codebook.json").unlink()
    with pytest.raises(PluralignError, match="codebook.json not found"):
        load_worldvaluesbench(d, metadata_dir=release / "nowhere")
    meta_path = release / "WorldValuesBench" / "question_metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["Q1"]["answer_scale_max"] = ""
    meta_path.write_text(json.dumps(meta))
    shutil.copy(FIX / "dataset_construction" / "codebook.json", release / "dataset_construction" / "codebook.json")
    with pytest.raises(PluralignError) as ei:
        load_worldvaluesbench(d)
    assert "question_metadata.json, field 'Q1'" in str(ei.value) and "answer_scale_max" in str(ei.value)


def test_detection_does_not_claim_other_formats(tmp_path):
    from pluralign.data.loaders.worldvaluesbench import _detect

    assert _detect(SPLIT) and _detect(FIX) and _detect(SPLIT / "test_value_qa.tsv")
    other = tmp_path / "answers.tsv"
    other.write_text("D_INTERVIEW\tQ1\n1\t2\n")
    assert not _detect(other) and not _detect(tmp_path) and not _detect(tmp_path / "missing")
    assert "cannot tell the format" in _err(other)


# --------------------------------------------------------------------------- shared metadata
def test_shared_metadata_items():
    root = shared("worldvaluesbench")
    meta = load_metadata(metadata_dir=root)
    items = build_items(meta)
    assert len(items) == 239  # every use_case == "value" question
    assert all(it.ordinal for it in items.values())
    for qid, it in items.items():
        m = meta.questions[qid]
        assert it.codes == tuple(str(c) for c in range(int(m["answer_scale_min"]), int(m["answer_scale_max"]) + 1)), qid
        assert not any(o.lower().startswith(("don't know", "no answer", "not asked", "missing")) for o in it.options), qid
    assert items["Q56"].options == ("Better off", "Or about the same", "Worse off")
    assert items["Q119"].options[2] == "Hard to say"
    assert items["Q254"].options == ("Very proud", "Quite proud", "Not very proud", "Not at all proud")
    assert items["Q241"].options[0] == "Not an essential characteristic of democracy" and len(items["Q241"].options) == 10


def test_shared_demographics_parse_as_release_format():
    """The probe's participant file has the release's demographic_qa layout (a column subset)."""
    meta = load_metadata(metadata_dir=shared("worldvaluesbench"))
    path = shared("wvs_individual_probe", "original", "participant_demographics.tsv")
    profiles = load_profiles(path, meta)
    assert len(profiles) == 13991
    some = profiles["400070599"]
    assert (some.country, some.sex, some.settlement, some.age_band, some.income) == ("Jordan", "male", "urban", "35-44 years", 1)
    assert sum(p.sex is None for p in profiles.values()) == 17  # the empty Q260 cells
