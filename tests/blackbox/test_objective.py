"""Objectives that do not depend on the VSM constant C, the wordings, and the held-out third wording (issue 29)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pluralign.blackbox.objective import (
    DEFAULT_CALIBRATION, OBJECTIVES, REPORT_ONLY_WORDINGS, WORDINGS, Calibration, Objective, ObjectiveEvaluator, Reference,
    build_calibration, objective_loss, pairwise_diff, parse_calibration, parse_wordings, raw_scores,
)
from pluralign.blackbox.population import PopulationConfig, vsm_prompts
from pluralign.blackbox.vsm import VSMConfig, dimension_scores
from pluralign.data.loaders.hofstede import DIMENSIONS, HofstedeTarget, country_target, load_vsm_items
from pluralign.errors import PluralignError

USA = country_target("USA")


def _target(code: str, scores: dict, iso3: str | None = None) -> HofstedeTarget:
    return HofstedeTarget(code=code, iso3=iso3, name=code, unit_type="country", scores=scores)


def _calibration(rng, wordings=("original", "reworded"), n_refs=3) -> Calibration:
    refs = [Reference(code=f"R{i}", iso3=None, name=f"R{i}", target=dict(zip(DIMENSIONS, rng.uniform(10, 90, 6).tolist())),
                      raw={w: rng.normal(0, 20, 6) for w in wordings}) for i in range(n_refs)]
    return Calibration(naive={w: rng.normal(0, 20, 6) for w in wordings}, references=refs)


# ------------------------------------------------------------------------------------ the arithmetic
def test_calibrated_and_diff_losses_against_a_hand_computation():
    naive = np.array([10.0, -5.0, 0.0, 3.0, 1.0, 2.0])
    refs = [Reference("A", None, "A", dict(zip(DIMENSIONS, [60, 40, 50, 70, 30, 20])), {"original": np.array([12, -4, 1, 2, 0, 5.0])}),
            Reference("B", None, "B", dict(zip(DIMENSIONS, [20, 80, 40, 50, 50, 60])), {"original": np.array([8, -6, 3, 6, 2, -1.0])})]
    cal = Calibration(naive={"original": naive}, references=refs)
    target = _target("T", dict(zip(DIMENSIONS, [40, 91, 62, 46, 26, 68])))
    raw = np.array([15.0, 20.0, -3.0, 0.0, -10.0, 9.0])
    # C_d = mean_B h_B,d - naive_d
    C = np.array([40, 60, 45, 60, 40, 40]) - naive
    assert cal.constants(target, "original") == pytest.approx(C)
    expect_cal = np.mean(np.abs(raw + C - np.array([40, 91, 62, 46, 26, 68])))
    assert objective_loss("l1-calibrated", raw, target, calibration=cal) == pytest.approx(expect_cal)
    # diff: mean over B of mean_d |(raw - raw_B) - (h_T - h_B)|
    h = np.array([40, 91, 62, 46, 26, 68.0])
    expect_diff = np.mean([np.mean(np.abs((raw - r.raw["original"]) - (h - np.array([r.target[d] for d in DIMENSIONS])))) for r in refs])
    assert objective_loss("diff", raw, target, calibration=cal) == pytest.approx(expect_diff)
    # sum instead of mean over the dimensions
    assert objective_loss("l1-calibrated", raw, target, calibration=cal, vsm=VSMConfig(reduction="sum")) == pytest.approx(6 * expect_cal)
    # l1-c50 is the old loss on raw + 50
    assert objective_loss("l1-c50", raw, target) == pytest.approx(np.mean(np.abs(raw + 50 - h)))


def test_the_calibrated_objective_does_not_change_with_the_fixed_constant():
    rng = np.random.default_rng(0)
    cal = _calibration(rng)
    raw = rng.normal(0, 20, (5, 6))
    got = {}
    for C in (0.0, 50.0, 123.0):
        vsm = VSMConfig(constants={d: C + i for i, d in enumerate(DIMENSIONS)})
        obj = Objective("l1-calibrated", vsm=vsm, calibration=cal)
        got[C] = (obj.loss(raw, USA, "original"), obj.loss(raw, USA, "original", "l1-c50"), obj.loss(raw, USA, "original", "diff"))
    assert np.allclose(got[0.0][0], got[50.0][0]) and np.allclose(got[0.0][0], got[123.0][0])
    assert np.allclose(got[0.0][2], got[123.0][2])  # nor does diff
    assert not np.allclose(got[0.0][1], got[50.0][1])  # the fixed-C table does


def test_the_diff_objective_is_invariant_to_adding_a_constant_to_every_score():
    rng = np.random.default_rng(1)
    cal = _calibration(rng)
    raw = rng.normal(0, 20, (4, 6))
    base = objective_loss("diff", raw, USA, calibration=cal)
    shift = rng.normal(0, 30, 6)  # one number per dimension, added to the prompt's and every reference's scores
    moved = Calibration(naive={w: v + shift for w, v in cal.naive.items()},
                        references=[Reference(r.code, r.iso3, r.name, r.target, {w: v + shift for w, v in r.raw.items()})
                                    for r in cal.references])
    assert objective_loss("diff", raw + shift, USA, calibration=moved) == pytest.approx(base)
    # the same constant on Hofstede's side (every country) changes nothing either
    up = _target("USA", {d: v + 7 for d, v in USA.scores.items()}, "USA")
    hof = Calibration(naive=cal.naive, references=[Reference(r.code, r.iso3, r.name, {d: v + 7 for d, v in r.target.items()}, r.raw)
                                                   for r in cal.references])
    assert objective_loss("diff", raw, up, calibration=hof) == pytest.approx(base)
    # ... while moving only the prompt does (the test can fail)
    assert not np.allclose(objective_loss("diff", raw + shift, USA, calibration=cal), base)


def test_the_target_never_enters_its_own_calibration():
    rng = np.random.default_rng(2)
    gbr = country_target("GBR")
    cal = _calibration(rng)
    mine = Reference(gbr.code, gbr.iso3, gbr.name, dict(gbr.scores), {w: rng.normal(0, 20, 6) for w in cal.naive})
    with_gbr = Calibration(naive=cal.naive, references=[*cal.references, mine])
    other = Reference(gbr.code, gbr.iso3, gbr.name, {d: 0.0 for d in DIMENSIONS}, {w: rng.normal(0, 50, 6) for w in cal.naive})
    with_other_gbr = Calibration(naive=cal.naive, references=[*cal.references, other])
    raw = rng.normal(0, 20, (3, 6))
    for name in ("l1-calibrated", "diff"):
        a = objective_loss(name, raw, gbr, calibration=with_gbr)
        assert a == pytest.approx(objective_loss(name, raw, gbr, calibration=with_other_gbr))
        assert a == pytest.approx(objective_loss(name, raw, gbr, calibration=cal))
        # for another target the same reference counts
        assert not np.allclose(objective_loss(name, raw, USA, calibration=with_gbr), objective_loss(name, raw, USA, calibration=cal))
    assert with_gbr.countries(gbr) == ["R0", "R1", "R2"]
    with pytest.raises(PluralignError, match="no calibration country is left"):
        Calibration(naive=cal.naive, references=[mine]).for_target(gbr)


def test_pairwise_differences_and_missing_dimensions():
    a = {"PDI": 40, "IDV": 91, "MAS": 62, "UAI": 46, "LTO": 26, "IVR": 68}
    b = {"LTO": 36, "IVR": 52}  # Saudi Arabia: two dimensions
    ra, rb = np.arange(6.0), np.zeros(6)
    # only LTO and IVR are compared: |(4 - 0) - (26 - 36)| = 14, |(5 - 0) - (68 - 52)| = 11
    assert pairwise_diff(ra, rb, a, b) == pytest.approx(12.5)
    assert pairwise_diff(np.zeros(6), np.zeros(6), a, b) == pytest.approx((10 + 16) / 2)  # same scores: |h_A - h_B|


def test_calibration_round_trips_through_json():
    cal = _calibration(np.random.default_rng(3))
    back = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    raw = np.random.default_rng(4).normal(0, 20, 6)
    for n in ("l1-calibrated", "diff"):
        assert objective_loss(n, raw, USA, calibration=back) == pytest.approx(objective_loss(n, raw, USA, calibration=cal))
    with pytest.raises(PluralignError):
        Calibration.from_dict({"naive_raw": {}})


def test_raw_scores_are_the_index_scores_without_the_constant():
    m = np.random.default_rng(5).uniform(1, 5, (3, 24))
    assert raw_scores(m) + 50 == pytest.approx(dimension_scores(m))


# ------------------------------------------------------------------------------------ wordings and flags
def test_three_wordings_share_the_structure_and_differ_in_every_text():
    qs = [load_vsm_items(WORDINGS[w]) for w in WORDINGS]
    assert list(WORDINGS) == ["original", "reworded", "reworded2"] and REPORT_ONLY_WORDINGS == ("reworded2",)
    for q in qs[1:]:
        assert [i.id for i in q.items] == [i.id for i in qs[0].items]
        assert [i.options for i in q.items] == [i.options for i in qs[0].items]  # the same answer scales, in order
        assert q.terms == qs[0].terms
    third = json.loads(WORDINGS["reworded2"].read_text())
    for name in ("original", "reworded"):
        other = json.loads(WORDINGS[name].read_text())
        assert all(a["text"] != b["text"] for a, b in zip(third["items"], other["items"]))
        assert all(third["stems"][k] != v for k, v in other["stems"].items())
        assert [(i["id"], i.get("stem"), i["scale"]) for i in third["items"]] == [(i["id"], i.get("stem"), i["scale"]) for i in other["items"]]


def test_the_third_wording_is_never_searched(tiny_llama, tiny_tokenizer):
    with pytest.raises(PluralignError, match="held-out wording"):
        parse_wordings("original,reworded2")
    assert parse_wordings("reworded2", search=False) == ("reworded2",)
    obj = Objective("l1-c50")
    with pytest.raises(PluralignError, match="held-out wording"):
        ObjectiveEvaluator(tiny_llama, tiny_tokenizer, obj, wordings=("reworded2",), cfg=PopulationConfig(tokens=1))
    # the default search evaluator holds exactly the original and reworded prompts, none of the third wording's
    ev = ObjectiveEvaluator(tiny_llama, tiny_tokenizer, obj, cfg=PopulationConfig(tokens=1))
    assert ev.wordings == ("original", "reworded") and ev.objective_key["wordings"] == ["original", "reworded"]
    from pluralign.evaluation.scoring import OptionScorer

    enc = OptionScorer(tiny_llama, tiny_tokenizer)._encode_prompt
    seqs = {tuple(s) for s in ev.seqs}
    for w, inside in (("original", True), ("reworded", True), ("reworded2", False)):
        prompts, _ = vsm_prompts(tiny_tokenizer, load_vsm_items(WORDINGS[w]))
        assert all((tuple(enc(p)) in seqs) == inside for p in prompts), w


@pytest.mark.parametrize("bad, msg", [("", "names no wording"), ("original,original", "given twice"), ("nope", "unknown wording")])
def test_bad_wordings(bad, msg):
    with pytest.raises(PluralignError, match=msg):
        parse_wordings(bad)


def test_calibration_countries_parse():
    got = parse_calibration(",".join(DEFAULT_CALIBRATION))
    assert len(got) == 12 and all(len(t.scores) == 6 for t in got)
    assert not {t.code for t in got} & {"USA", "CHI", "IND", "ARA"}
    with pytest.raises(PluralignError, match="twice"):
        parse_calibration("GBR,Great Britain")


# ------------------------------------------------------------------------------------ on a tiny model
@pytest.fixture(scope="module")
def short_wordings(short_vsm):
    """Three 'wordings' with the VSM structure and one-word items (quick on the tiny model)."""
    from dataclasses import replace

    out = {}
    for k, w in enumerate(WORDINGS):
        out[w] = replace(short_vsm, items=tuple(replace(it, text=f"{it.text} v{k}") for it in short_vsm.items))
    return out


def test_evaluator_calibrated_loss_does_not_change_with_C_and_averages_the_wordings(tiny_llama, tiny_tokenizer, short_wordings):
    countries = [country_target("GBR"), country_target("JPN")]
    cal, extra = build_calibration(tiny_llama, tiny_tokenizer, countries, cfg=PopulationConfig(tokens=0, batch_size=48),
                                   extra_contexts=("You are a person from the United States.",), questionnaires=short_wordings)
    assert set(cal.naive) == set(WORDINGS) and [r.code for r in cal.references] == ["GBR", "JPN"]
    assert not np.allclose(cal.references[0].raw["original"], cal.naive["original"])  # a persona moves the answers
    assert set(extra["extra"]) == {"You are a person from the United States."}
    X = torch.randn(3, 2, 64) * 0.05
    res = {}
    for C in (0.0, 50.0):
        vsm = VSMConfig(constants={d: C for d in DIMENSIONS})
        obj = Objective("l1-calibrated", vsm=vsm, calibration=cal)
        ev = ObjectiveEvaluator(tiny_llama, tiny_tokenizer, obj, cfg=PopulationConfig(tokens=2, batch_size=48), questionnaires=short_wordings)
        r = ev.evaluate(X, USA)
        res[C] = (r, obj.loss(r.raw[:, 0], USA, "original", "l1-c50"))
    assert res[0.0][0].loss == pytest.approx(res[50.0][0].loss)
    assert not np.allclose(res[0.0][1], res[50.0][1]) and not np.allclose(res[0.0][0].scores, res[50.0][0].scores)
    r = res[0.0][0]
    assert r.per_wording.shape == (3, 2) and r.loss == pytest.approx(r.per_wording.mean(1))
    assert not np.allclose(r.per_wording[:, 0], r.per_wording[:, 1])  # the wordings are scored apart


def test_a_search_records_its_objective_and_refuses_to_resume_another(tiny_llama, tiny_tokenizer, short_wordings, tmp_path):
    from pluralign.blackbox.search import SearchConfig, run_search

    cal, _ = build_calibration(tiny_llama, tiny_tokenizer, [country_target("GBR")], wordings=("original", "reworded"),
                               cfg=PopulationConfig(tokens=0, batch_size=48), questionnaires=short_wordings)

    def ev(name, wordings=("original", "reworded")):
        return ObjectiveEvaluator(tiny_llama, tiny_tokenizer, Objective(name, calibration=cal), wordings=wordings,
                                  cfg=PopulationConfig(tokens=1, batch_size=48), questionnaires=short_wordings)

    cfg = SearchConfig(optimizer="pso", pop=4, gens=1, seed=0, subspace_dim=0)
    res = run_search(ev("diff"), USA, cfg, out_dir=tmp_path, progress=False, plot=False)
    meta = json.loads((tmp_path / "prompt.json").read_text())
    assert meta["objective"] == {"objective": "diff", "wordings": ["original", "reworded"], "calibration": ["GBR"]}
    assert res.best_loss <= res.initial_best
    with pytest.raises(PluralignError, match="objective"):
        run_search(ev("l1-calibrated"), USA, SearchConfig(optimizer="pso", pop=4, gens=2, seed=0), out_dir=tmp_path, resume=True,
                   progress=False, plot=False)
    with pytest.raises(PluralignError, match="wordings"):
        run_search(ev("diff", ("original",)), USA, SearchConfig(optimizer="pso", pop=4, gens=2, seed=0), out_dir=tmp_path, resume=True,
                   progress=False, plot=False)
    again = run_search(ev("diff"), USA, SearchConfig(optimizer="pso", pop=4, gens=2, seed=0), out_dir=tmp_path, resume=True,
                       progress=False, plot=False)
    assert again.generations == 2


def test_every_objective_name_is_known():
    assert OBJECTIVES == ("l1-c50", "l1-calibrated", "diff")
    with pytest.raises(PluralignError, match="needs a calibration"):
        Objective("diff")
