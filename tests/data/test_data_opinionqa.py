"""OpinionQA loader: wave folders with info.csv and <ATTR>_data.json, or responses.csv + metadata.csv."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from pluralign.data import load_dataset
from pluralign.data.loaders.opinionqa import load_opinionqa
from pluralign.errors import PluralignError
from pluralign.evaluation import metrics as M

INFO_HEADER = ["", "Unnamed: 0.1", "Unnamed: 0", "key", "option_mapping", "question", "references", "option_ordinal"]
INFO_ROWS = [
    ["SAFECRIME_W26", "How safe, if at all, would you say your local community is from crime? Would you say it is",
     "['Very safe', 'Somewhat safe', 'Not too safe', 'Not at all safe', 'Refused']", "[1.0, 2.0, 3.0, 4.0]"],
    ["WORLDDANGER_W26", "Compared to 50 years ago, do you think",
     "['We live in a safer world', 'We live in a more dangerous world', 'The world we live in is neither safer nor more dangerous', 'Refused']",
     "[1.0, 2.0, 1.5]"],
    ["IMPREASONGUN_W26", "Which of the following is the most important reason why you own a gun?",
     "['For protection', 'For hunting', 'For sport shooting', 'As part of a gun collection', 'For my job', 'Refused']", "[1, 1, 1, 1, 1]"],
    ["GUN_W26", "Do you personally own any guns?", "['Yes, I own a gun', \"No, I don't own any guns\", 'Refused']", "[1.0, 2.0]"],
]
SEX = {
    "SAFECRIME_W26": {"MC_options": ["Very safe", "Somewhat safe", "Not too safe", "Not at all safe", "Refused"], "question_text": "...",
                      "Female": {"Not at all safe": 62.0, "Not too safe": 289.0, "Refused": 6.0, "Somewhat safe": 1243.0, "Very safe": 510.0},
                      "Male": {"Not at all safe": 47.0, "Not too safe": 205.0, "Refused": 4.0, "Somewhat safe": 1143.0, "Very safe": 659.0}},
    "WORLDDANGER_W26": {"question_text": "...",
                        "Female": {"Refused": 5.0, "The world we live in is neither safer nor more dangerous": 394.0,
                                   "We live in a more dangerous world": 1579.0, "We live in a safer world": 132.0},
                        "Male": {"Refused": 6.0}},  # only refusals: skipped
    "IMPREASONGUN_W26": {"Female": {"For protection": 10.0, "For hunting": 5.0}, "Refused": {"For protection": 1.0}},
    "GUN_W26": {"MC_options": ["Yes", "I own a gun", "\"No", "I don't own any guns\"", "Refused"],  # the release's split bug
                "Female": {"No, I don't own any guns": 1645.0, "Refused": 28.0, "Yes, I own a gun": 437.0}},
}
POLPARTY = {"SAFECRIME_W26": {"Democrat": {"Very safe": 385.0, "Somewhat safe": 865.0, "Not too safe": 192.0, "Not at all safe": 46.0}}}


def _wave(root: Path, name="American_Trends_Panel_W26", with_json=True) -> Path:
    d = root / name
    d.mkdir(parents=True)
    with open(d / "info.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(INFO_HEADER)
        for i, (k, q, refs, ordv) in enumerate(INFO_ROWS):
            w.writerow([i, i, i, k, "{}", q, refs, ordv])
    if with_json:
        (d / "SEX_data.json").write_text(json.dumps(SEX))
        (d / "POLPARTY_data.json").write_text(json.dumps(POLPARTY))
        (d / "NONE_data.json").write_text(json.dumps({"SAFECRIME_W26": {"Democrat": {"Very safe": 1.0}}}))
    return d


def oqa_get_max_wd(ordered_ref_weights):  # tatsu-lab/opinions_qa helpers.py
    d0, d1 = np.zeros(len(ordered_ref_weights)), np.zeros(len(ordered_ref_weights))
    d0[np.argmax(ordered_ref_weights)] = 1
    d1[np.argmin(ordered_ref_weights)] = 1
    return wasserstein_distance(ordered_ref_weights, ordered_ref_weights, d0, d1)


def test_wave_folder_with_group_json(tmp_path):
    ds = load_dataset(_wave(tmp_path))  # detected: a folder with an OpinionQA info.csv
    assert ds.name == "opinionqa" and ds.kind == "distributional"
    assert set(ds.groups()) == {"SEX:Female", "SEX:Male", "POLPARTY:Democrat"}  # NONE and Refused not read
    by = {(e.group_id, e.item_id): e for e in ds.examples}
    assert ("SEX:Male", "WORLDDANGER_W26") not in by  # only refusals
    safe = by[("SEX:Female", "SAFECRIME_W26")]
    np.testing.assert_allclose(safe.probs, np.array([510, 1243, 289, 62]) / (510 + 1243 + 289 + 62))  # refusals dropped
    assert safe.n == 510 + 1243 + 289 + 62 + 6 and safe.profile.sex == "female" and safe.group == "SEX:Female"
    assert dict(safe.profile.extra) == {"residence": "United States"}
    assert dict(by[("POLPARTY:Democrat", "SAFECRIME_W26")].profile.extra)["polparty"] == "Democrat"
    # options sorted by option_ordinal: the 'neither' answer (1.5) in the middle
    wd = ds.items["WORLDDANGER_W26"]
    assert wd.options == ("We live in a safer world", "The world we live in is neither safer nor more dangerous",
                          "We live in a more dangerous world") and wd.ordinal
    assert not ds.items["IMPREASONGUN_W26"].ordinal and ds.items["IMPREASONGUN_W26"].n_options == 5
    np.testing.assert_allclose(by[("SEX:Female", "GUN_W26")].probs, [437 / 2082, 1645 / 2082])
    assert ds.meta["waves"] == ["American_Trends_Panel_W26"] and "uneven_scale" not in ds.meta


def test_representativeness_on_loaded_items_equals_the_reference(tmp_path):
    ds = load_opinionqa(_wave(tmp_path))
    rng = np.random.default_rng(0)
    for e in ds.examples:
        info = next(r for r in INFO_ROWS if r[0] == e.item_id)
        ordv = [float(x) for x in eval(info[3])]  # noqa: S307 - the test's own literal
        it = ds.items[e.item_id]
        d_m = rng.dirichlet(np.ones(it.n_options))
        ours = M.opinionqa_rep(d_m, np.array(e.probs), it.ordinal)
        if oqa_get_max_wd(ordv) == 0:
            assert np.isnan(ours)  # the reference skips the item
            continue
        # the reference works in the written option order; ours in the sorted one
        order = sorted(range(len(ordv)), key=lambda j: (ordv[j], j))
        inv = np.argsort(order)
        ref = 1 - wasserstein_distance(ordv, ordv, d_m[inv], np.array(e.probs)[inv]) / oqa_get_max_wd(ordv)
        assert ours == pytest.approx(ref, abs=1e-12)


def test_human_resp_folder_of_waves_and_attribute_filter(tmp_path):
    _wave(tmp_path / "human_resp")
    d2 = _wave(tmp_path / "human_resp", "American_Trends_Panel_W27", with_json=False)
    # wave 27 gets its own question keys
    text = (d2 / "info.csv").read_text().replace("_W26", "_W27")
    (d2 / "info.csv").write_text(text)
    rows = [["SAFECRIME_W27", "SEX", "WEIGHT_W27"],
            ["Very safe", "Male", "2.0"], ["Somewhat safe", "Male", "1.0"], ["Refused", "Male", "5.0"],
            ["Not too safe", "Female", "0.5"], ["Very safe", "Refused", "9.0"], ["", "Female", "3.0"]]
    with open(d2 / "responses.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    with open(d2 / "metadata.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["key", "options"], ["SEX", "['Male', 'Female']"]])
    ds = load_opinionqa(tmp_path / "human_resp")
    by = {(e.group_id, e.item_id): e for e in ds.examples}
    np.testing.assert_allclose(by[("SEX:Male", "SAFECRIME_W27")].probs, [2 / 3, 1 / 3, 0, 0])  # weighted, refusal dropped
    np.testing.assert_allclose(by[("Overall", "SAFECRIME_W27")].probs, [11 / 12.5, 1 / 12.5, 0.5 / 12.5, 0])
    assert by[("SEX:Male", "SAFECRIME_W27")].n is None  # survey weights, not counts
    assert ("SEX:Refused", "SAFECRIME_W27") not in by
    only = load_opinionqa(tmp_path / "human_resp", attributes="POLPARTY")
    assert only.groups() == ["POLPARTY:Democrat"]


def test_bad_input_is_one_error(tmp_path):
    with pytest.raises(PluralignError, match="no info.csv"):
        load_opinionqa(tmp_path)
    d = _wave(tmp_path)
    text = (d / "info.csv").read_text().replace("[1.0, 2.0, 3.0, 4.0]", "[1.0, 2.0,")
    (d / "info.csv").write_text(text)
    with pytest.raises(PluralignError) as ei:
        load_opinionqa(d)
    assert "row 1" in str(ei.value) and "option_ordinal" in str(ei.value)
    d2 = _wave(tmp_path / "x", with_json=False)
    with pytest.raises(PluralignError, match="no human answers"):
        load_opinionqa(d2)
