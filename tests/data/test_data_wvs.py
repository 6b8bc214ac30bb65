"""WVS loaders: the respondent probe (wvs-probe) and per-country shares (wvs-shares), on small
hand-made files and on the shared development data."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import shared
from pluralign.data import available_loaders, load_dataset
from pluralign.data.loaders.wvs_shares import SHIPPED, load_wvs_shares
from pluralign.errors import PluralignError

PROBE_HEADER = ["D_INTERVIEW", "B_COUNTRY", "H_URBRURAL", "Q260", "X003R", "Q275", "Q288", "Q289", "question_id", "question_text", "answer"]
Q_TEXT = "On a scale of 1 to 5, 1 meaning 'Disagree' and 5 meaning 'Agree',  do you agree that work is a duty?"


def _probe(tmp_path: Path, rows: list[list[str]], header=PROBE_HEADER) -> Path:
    p = tmp_path / "individual_answers.tsv"
    p.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n")
    return p


ROW = ["101", "Japan", "Urban", "Female", "35-44 years", "Bachelor or equivalent (ISCED 6)", "4.0", "Buddhist", "Q1", Q_TEXT, "4"]


def _with(**changes) -> list[str]:
    r = list(ROW)
    for k, v in changes.items():
        r[PROBE_HEADER.index(k)] = v
    return r


def _msg(spec, **kw) -> str:
    with pytest.raises(PluralignError) as ei:
        load_dataset(spec, **kw)
    s = str(ei.value)
    assert "\n" not in s
    return s


def test_registry_lists_all_formats():
    assert {"wvs-probe", "wvs-shares", "worldvaluesbench", "globalopinionqa", "wvs7-drhur"} <= set(available_loaders())


# --------------------------------------------------------------------------- wvs-probe
def test_probe_small_file(tmp_path):
    p = _probe(tmp_path, [ROW, _with(D_INTERVIEW="102", Q260="Male", answer="1"), _with(question_id="Q2", answer="5")])
    ds = load_dataset(p)  # detected from the header
    assert ds.name == "wvs-probe" and len(ds) == 3 and set(ds.items) == {"Q1", "Q2"}
    it = ds.items["Q1"]
    assert it.options == ("Disagree", "2", "3", "4", "Agree") and it.text == "Do you agree that work is a duty?"
    assert [e.answer for e in ds.examples] == [3, 0, 4]
    assert ds.examples[0].profile.describe() == (
        "A Buddhist woman aged 35-44 living in urban Japan, with bachelor or equivalent (ISCED 6) education, in the 4th income decile."
    )


def test_probe_bad_inputs(tmp_path):
    p = _probe(tmp_path, [ROW, _with(answer="9")])
    assert _msg(p) == f"{p}, row 2, field 'answer': answer '9' is not an option of Q1 (codes: 1, 2, 3, 4, 5)"
    p = _probe(tmp_path, [ROW, _with(D_INTERVIEW="102", Q260="Other")])
    assert _msg(p).startswith(f"{p}, row 2, field 'sex': sex must be male or female")
    p = _probe(tmp_path, [ROW, _with(question_id="Q2", Q260="Male")])
    assert _msg(p) == f"{p}, row 2, field 'Q260': respondent 101 has a different Q260 than in row 1"
    p = _probe(tmp_path, [ROW, _with(question_id="Q3", question_text="Do you agree?")])
    assert _msg(p).startswith(f"{p}, row 2, field 'question_text': question_text does not start with")
    p = _probe(tmp_path, [ROW, _with(D_INTERVIEW="102", question_text=Q_TEXT.replace("duty", "right"))])
    assert _msg(p) == f"{p}, row 2, field 'question_text': question Q1 has a different text than in row 1"
    p = _probe(tmp_path, [ROW, _with(question_id="")])
    assert _msg(p) == f"{p}, row 2, field 'question_id': empty question id"
    p = _probe(tmp_path, [ROW[:-1]], header=PROBE_HEADER[:-1])
    assert _msg(f"wvs-probe:{p}").startswith(f"{p}, field 'answer': missing column(s) answer")
    p = _probe(tmp_path, [])
    assert _msg(f"wvs-probe:{p}") == f"{p}: no data rows"


def test_probe_shared_counts():
    path = shared("wvs_individual_probe", "individual_answers.tsv")
    ds = load_dataset("wvs-probe")
    assert Path(ds.source) == path
    # SOURCE.md: 2,375 rows of 1,710 respondents before 20% of the respondents were withheld. What is
    # there: 1,908 data rows (SOURCE.md says 1,907) of 1,368 = 0.8 x 1,710 respondents.
    assert len(ds) == 1908
    s = ds.summary()
    assert s["respondents"] == 1368 and s["items"] == 32 and s["groups"] == 63
    assert all(it.n_options == 5 and it.ordinal for it in ds.items.values())
    # answers on the rescaled 1..5 scale, all five codes used
    assert Counter(e.answer for e in ds.examples) == Counter({0: 666, 4: 564, 2: 348, 1: 278, 3: 52})
    # one profile per respondent
    per = {}
    for e in ds.examples:
        assert per.setdefault(e.respondent_id, e.profile) == e.profile


# --------------------------------------------------------------------------- wvs-shares
def _culturespa(tmp_path: Path, props: dict, questions=None) -> Path:
    d = tmp_path / "culturespa"
    d.mkdir(exist_ok=True)
    questions = questions or [
        {"Q_id": "Q1", "question": "How important is family?", "option_lst": ["Very", "Rather", "Not very", "Not at all"]},
        {"Q_id": "Q261", "question": "Year of birth?", "option_lst": []},
    ]
    (d / "wvs_questions.json").write_text(json.dumps(questions))
    (d / "proportions_group_by_country.json").write_text(json.dumps(props))
    return d


def test_shares_small_folder_renormalises_and_skips_empty(tmp_path):
    d = _culturespa(tmp_path, {"USA": {"Q1": {"1": 0.4, "2": 0.3, "3": 0.1}, "Q261": {}}, "JPN": {"Q1": {}}, "DEU": {"Q1": {"4": 0.5}}})
    ds = load_dataset(d)  # detected: a folder with proportions_group_by_country.json
    assert ds.name == "wvs-shares" and ds.groups() == ["Germany", "United States"]  # Japan's cell is empty
    by = {e.group_id: np.array(e.probs) for e in ds.examples}
    np.testing.assert_allclose(by["USA"], [0.5, 0.375, 0.125, 0.0])  # non-response renormalised away
    np.testing.assert_allclose(by["DEU"], [0, 0, 0, 1])


@pytest.mark.parametrize(
    "props, expect",
    [
        ({"USA": {"Q7": {"1": 0.5}}}, "field 'USA/Q7': unknown question id 'Q7'"),
        ({"USA": {"Q1": {"9": 0.5}}}, "field 'USA/Q1/9': answer '9' is not an option of Q1"),
        ({"USA": {"Q1": {"1": "lots"}}}, "field 'USA/Q1/1': share 'lots' is not a number"),
        ({"USA": {"Q1": {"1": -0.2}}}, "field 'USA/Q1/1': negative share"),
        ({"USA": {"Q1": 0.5}}, "field 'USA/Q1': expected {code: share}"),
        ({"USA": {"Q1": [0.5, 0.5]}}, "field 'USA/Q1': 2 shares for 4 options"),
        ({"USA": ["Q1"]}, "field 'USA': expected {question: {code: share}}"),
        ({"USA": {"Q1": {}}}, "no non-empty (country, question) cells"),
    ],
)
def test_shares_bad_inputs(tmp_path, props, expect):
    d = _culturespa(tmp_path, props)
    msg = _msg(d)
    assert msg.startswith(str(d / "proportions_group_by_country.json")) and expect in msg


def test_shares_missing_questions_file(tmp_path):
    d = _culturespa(tmp_path, {"USA": {"Q1": {"1": 1.0}}})
    (d / "wvs_questions.json").unlink()
    assert "wvs_questions.json must lie beside" in _msg(f"wvs-shares:{d}")


def test_shipped_shares_load_without_shared_data():
    ds = load_wvs_shares()
    assert Path(ds.source) == SHIPPED
    assert len(ds.groups()) == 19 and len(ds.items) == 259 and len(ds) == 19 * 259 - 60
    for e in ds.examples:
        assert sum(e.probs) == pytest.approx(1.0, abs=1e-3) and min(e.probs) >= 0


def test_shipped_shares_equal_the_culturespa_source():
    src = shared("wvs7_country_distributions_culturespa")
    a, b = load_wvs_shares(), load_wvs_shares(src)
    assert len(b.groups()) == 19 and a.groups() == b.groups()
    assert {k: v.to_dict() for k, v in a.items.items()} == {k: v.to_dict() for k, v in b.items.items()}
    da, db = a.human_distributions(), b.human_distributions()
    assert set(da) == set(db) and len(db) == 19 * 259 - 60  # the 60 empty cells are skipped
    assert max(np.abs(da[k] - db[k]).max() for k in da) < 5e-4  # shipped at 4 decimals
    # renormalised: the source cells sum to < 1 where there was non-response
    raw = json.loads((src / "proportions_group_by_country.json").read_text())
    cell = raw["USA"]["Q1"]
    total = sum(cell.values())
    assert total < 1
    np.testing.assert_allclose(db[("United States", "Q1")], [cell[c] / total for c in sorted(cell, key=int)])


def test_undetectable_inputs_give_one_line_errors(tmp_path):
    binary = tmp_path / "x.tsv"
    binary.write_bytes(b"\xff\xfe\x00\x81garbage\n\x00")
    assert "cannot tell the format of this file" in _msg(binary)
    folder = tmp_path / "empty.tsv"
    folder.mkdir()
    assert "cannot tell the format" in _msg(folder)
    assert "no such dataset file or registered name" in _msg(tmp_path / "missing.csv")
