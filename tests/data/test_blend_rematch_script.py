"""scripts/blend_rematch.py: a stored generate-eval report matched again under the old (substring)
and the new (whole-word) rule, on the BLEnD fixture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import load_script

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "data" / "blend"


@pytest.fixture(scope="module")
def rematch():
    return load_script("blend_rematch")


def test_old_rule_is_the_substring_rule_and_is_restored(rematch):
    from pluralign.data.loaders import blend as B

    assert rematch.old_answer_in_response("tea", "steak") and not B.answer_in_response("tea", "steak")
    assert rematch.old_answer_in_response("table tennis", "tennis at the table")  # every word, any order
    with rematch.old_rule():
        assert B.blend_match("steak", (("tea",),), (5,)) == (1.0, 1.0)
    assert B.blend_match("steak", (("tea",),), (5,)) == (0.0, 0.0)


def test_report_rows_old_and_new(rematch, tmp_path, capsys):
    rows = [
        {"id": "UK:Q-03", "adapter": "Steak", "base": "I drink tea", "adapter_match": 1.0, "base_match": 1.0,
         "ref_other_groups_answer": "tea", "ref_other_groups": 1.0},
        {"id": "China:Q-02", "adapter": "basketballs", "base": "tennis", "adapter_match": 1.0, "base_match": 0.0,
         "ref_other_groups_answer": "football", "ref_other_groups": 0.0},
        {"id": "Mexico:Q-03", "adapter": "coffeehouse", "base": "Coffee!", "adapter_match": 0.0, "base_match": 1.0},
    ]
    f = tmp_path / "eval.json"
    f.write_text(json.dumps({"data": f"blend:{FIX}", "outputs": rows}))
    out = rematch.rematch_report(f)
    # adapter: "Steak" (substring of tea: old 1, new 0); "basketballs" (old 1, new 1 via plural);
    # "coffeehouse" (old 1: "coffee" is a substring; the report stored 0 -> one stored mismatch; new 0)
    assert out["adapter"]["old"] == pytest.approx(1.0) and out["adapter"]["new"] == pytest.approx(1 / 3)
    assert out["adapter"]["lost"] == 2 and out["adapter"]["gained"] == 0 and out["adapter"]["stored_mismatch"] == 1
    assert out["base"]["old"] == out["base"]["new"] == pytest.approx(2 / 3) and out["base"]["stored_mismatch"] == 0
    assert out["ref: other regions"]["n"] == 2 and out["ref: other regions"]["new"] == pytest.approx(0.5)
    # weighted: basketball is China's second group (2 of 3 annotators)
    assert out["adapter"]["old_weighted"] == pytest.approx((1 + 2 / 3 + 1) / 3)
    assert rematch.main([str(f)]) == 0
    assert "eval.json: adapter | 3 | 1.000 → 0.333" in capsys.readouterr().out
