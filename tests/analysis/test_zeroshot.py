"""Zero-shot profiles: the split holds out combinations within zones and whole countries, the full
supervision split sees them; two tiny runs trained from the written configs give the table."""

from __future__ import annotations

import csv
import itertools
import json
import random

import pytest

from pluralign.analysis.zeroshot import build_zeroshot_split, combination
from tests.analysis._helpers import error_lines, invoke

COUNTRIES = ["Australia", "Canada", "New Zealand", "Germany", "Netherlands", "Nigeria", "Kenya", "Zimbabwe"]
BANDS = ["25-34 years", "55-64 years"]
SEXES = ["Male", "Female"]
EDU = ["Upper secondary education (ISCED 3)", "Bachelor or equivalent (ISCED 6)"]
Q = {
    "Q1": "On a scale of 1 to 5, 1 meaning 'Disagree' and 5 meaning 'Agree', family is important?",
    "Q2": "On a scale of 1 to 5, 1 meaning 'Disagree' and 5 meaning 'Agree', work is important?",
}


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    """A probe-format TSV: 8 countries in 3 zones, every (age band, sex, education) once per country."""
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("probe") / "individual_answers.tsv"
    cols = ["D_INTERVIEW", "B_COUNTRY", "Q260", "X003R", "Q275", "question_id", "question_text", "answer"]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t")
        w.writerow(cols)
        rid = 1000
        for c in COUNTRIES:
            for band, sex, edu in itertools.product(BANDS, SEXES, EDU):
                rid += 1
                for q, text in Q.items():
                    w.writerow([rid, c, sex, band, edu, q, text, rng.randint(1, 5)])
    return path


def _zone(country):
    from pluralign.analysis._prep import zone_of

    return zone_of(country)


def test_split_holds_out_combinations_within_zones_and_whole_countries(probe):
    from pluralign.data import load_dataset

    ds = load_dataset(f"wvs-probe:{probe}")
    sp = build_zeroshot_split(ds, data=f"wvs-probe:{probe}", combo_frac=0.3, seed=0)
    assert set(sp.held_countries) == {"English-Speaking", "Protestant Europe", "African-Islamic"}
    assert all(len(v) == 1 for v in sp.held_countries.values())
    assert all(len(v) >= 1 for v in sp.held_combos.values())
    zs, full = set(sp.zeroshot_test), set(sp.full_test)
    assert full and full < zs
    prof = {e.profile.key(): e.profile for e in ds.examples}
    zs_train = [p for k, p in prof.items() if k not in zs]
    full_train = [p for k, p in prof.items() if k not in full]
    held_c = {c for cs in sp.held_countries.values() for c in cs}
    assert not held_c & {p.country for p in zs_train}  # whole countries unseen
    assert held_c <= {p.country for p in full_train}  # ... but seen with full supervision
    for z, cbs in sp.held_combos.items():
        for cb in cbs:
            assert not any(_zone(p.country) == z and combination(p) == cb for p in zs_train)
            assert any(_zone(p.country) == z and combination(p) == cb for p in full_train)
    assert sp.sizes["zeroshot"]["test_rows"] == 2 * len(zs)
    # deterministic, and another seed holds out other countries or combinations
    again = build_zeroshot_split(ds, combo_frac=0.3, seed=0)
    assert again.zeroshot_test == sp.zeroshot_test
    other = build_zeroshot_split(ds, combo_frac=0.3, seed=5)
    assert other.zeroshot_test != sp.zeroshot_test


def test_split_refuses_group_data_and_bad_attributes(tmp_path, probe):
    res = invoke("analyze", "zeroshot-split", "--data", "wvs-shares", "--out", tmp_path / "z")
    assert res.exit_code == 2 and "individual" in error_lines(res)[0]
    from pluralign.data import load_dataset
    from pluralign.errors import PluralignError

    with pytest.raises(PluralignError, match="attribute"):
        build_zeroshot_split(load_dataset(f"wvs-probe:{probe}"), attrs=("height",))


def test_two_runs_from_the_configs_give_the_table(probe, tiny_model_dir, tmp_path, one_thread):
    spec = f"wvs-probe:{probe}"
    res = invoke("analyze", "zeroshot-split", "--data", spec, "--combo-frac", "0.3", "--out", tmp_path / "zs")
    assert res.exit_code == 0, res.output
    desc = json.loads((tmp_path / "zs" / "zeroshot-split.json").read_text())
    assert desc["attributes"] == ["age_band", "sex", "education"] and "D_INTERVIEW" not in json.dumps(desc)
    runs = {}
    for kind in ("full", "zeroshot"):
        out = tmp_path / kind
        r = invoke("train", "--config", tmp_path / "zs" / f"train-{kind}.json", "--method", "lora", "--model", tiny_model_dir,
                   "--steps", "1", "--batch-size", "4", "--save-steps", "0", "--no-progress", "--out", out)
        assert r.exit_code == 0, r.output
        r = invoke("eval", "--model", tiny_model_dir, "--adapter", out / "adapter", "--out", out / "eval", "--bootstrap", "0",
                   "--no-plot", "--no-progress")
        assert r.exit_code == 0, r.output
        runs[kind] = out
    res = invoke("analyze", "zeroshot", runs["full"], runs["zeroshot"], "--out", tmp_path / "table.json")
    assert res.exit_code == 0, res.output
    t = json.loads((tmp_path / "table.json").read_text())
    by = {r["subset"]: r for r in t["table"]}
    n_full_test = json.loads((tmp_path / "zs" / "train-full.json").read_text())["test_units"]
    assert by["all held out"]["rows"] == 2 * len(n_full_test) == t["common_rows"]  # every common row is held out
    assert by["held-out country"]["rows"] > 0 and by["held-out combination"]["rows"] > 0
    assert by["all held out"]["seen_by_full_supervision"] == 1.0
    for r in t["table"]:
        assert r["accuracy"]["gap"] == pytest.approx(r["accuracy"]["zeroshot"] - r["accuracy"]["full"])
    assert "| held-out combination |" in res.stdout and "gap (ZS - full)" in res.stdout
    # bad input: one error line naming the path
    res = invoke("analyze", "zeroshot", runs["full"], tmp_path / "missing")
    assert res.exit_code == 2 and str(tmp_path / "missing") in error_lines(res)[0]


def test_zeroshot_macro_f1_is_the_results_key_meaning():
    """The zero-shot table's macro_f1 is the results files' one ((question, option) is the class);
    the option-label variant is named as such. Q1 and Q2 are answered with option 0 and 1 swapped:
    pooled by option label the errors cancel into one class each, by (question, option) they do not."""
    from pluralign.analysis.zeroshot import _metrics
    from pluralign.evaluation import metrics as M

    rows = [{"probs": [0.9, 0.1], "answer": 0, "group": "A", "item_id": "Q1"},
            {"probs": [0.2, 0.8], "answer": 1, "group": "A", "item_id": "Q1"},
            {"probs": [0.9, 0.1], "answer": 1, "group": "A", "item_id": "Q2"},
            {"probs": [0.7, 0.3], "answer": 0, "group": "A", "item_id": "Q2"}]
    m = _metrics(rows, {})
    pred, gold, q = [0, 1, 0, 0], [0, 1, 1, 0], ["Q1", "Q1", "Q2", "Q2"]
    assert m["macro_f1"] == pytest.approx(M.macro_f1_question_option(pred, gold, q))
    assert m["macro_f1_option_label"] == pytest.approx(M.macro_f1_option_label(pred, gold))
    assert m["macro_f1"] != pytest.approx(m["macro_f1_option_label"])
