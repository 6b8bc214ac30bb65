"""compute_metrics / reference predictors on hand-built data; evaluate() prompt sharing."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from pluralign.data import GroupExample, IndividualExample, Profile, SurveyDataset, SurveyItem
from pluralign.evaluation import runner as R
from pluralign.evaluation.runner import EvalConfig, build_prompts, compute_metrics, evaluate, reference_predictions

Q1 = SurveyItem("q1", "How important is family in your life?", ("Very important", "Rather important", "Not very important"))
Q2 = SurveyItem("q2", "Which do you prefer?", ("agree", "disagree"), ordinal=False)
ITEMS = {"q1": Q1, "q2": Q2}
US, DE = Profile(country="United States"), Profile(country="Germany")


def _group_ds(rows, name="test"):
    return SurveyDataset(name, "distributional", dict(ITEMS), [GroupExample(p.country, p, q, tuple(h)) for p, q, h in rows], source="hand")


@pytest.fixture()
def group_test():
    return _group_ds([
        (US, "q1", (0.6, 0.4, 0.0)),
        (US, "q2", (0.2, 0.8)),
        (DE, "q1", (0.0, 0.0, 1.0)),
        (DE, "q2", (1.0, 0.0)),
    ])


GROUP_PRED = [np.array([0, 1.0, 0]), np.array([0.4, 0.6]), np.array([1.0, 0, 0]), np.array([1.0, 0])]


def test_distributional_metrics_by_hand(group_test):
    m, g = compute_metrics(group_test, GROUP_PRED)
    # EMD: US q1 0.6/2 = 0.3; US q2 TV 0.2; DE q1 1.0; DE q2 0
    assert m["emd"] == pytest.approx((0.3 + 0.2 + 1.0 + 0.0) / 4)
    assert g["United States"]["emd"] == pytest.approx(0.25) and g["Germany"]["emd"] == pytest.approx(0.5)
    assert m["emd_by_group"] == {"mean": pytest.approx(0.375), "std": pytest.approx(0.125)}
    # mode hits: US q1 miss, US q2 hit, DE q1 miss, DE q2 hit
    assert m["accuracy"] == pytest.approx(0.5)
    assert g["United States"]["accuracy"] == pytest.approx(0.5) and g["United States"]["n"] == 2
    want_jsd = np.mean([jensenshannon(p, e.probs, base=2) for p, e in zip(GROUP_PRED, group_test.examples)])
    assert m["jsd"] == pytest.approx(want_jsd)
    h46 = -(0.4 * np.log(0.4) + 0.6 * np.log(0.6)) / np.log(2)
    assert m["entropy"] == pytest.approx(h46 / 4)  # only the [0.4, 0.6] prediction is uncertain
    h28 = -(0.2 * np.log(0.2) + 0.8 * np.log(0.8)) / np.log(2)
    h64 = -(0.6 * np.log(0.6) + 0.4 * np.log(0.4)) / np.log(3)
    assert m["human_entropy"] == pytest.approx((h64 + h28) / 4)
    assert m["n"] == 4 and m["coverage"] == 1.0


def test_references_uniform_and_train_mean_with_coverage(group_test):
    fr, nl = Profile(country="France"), Profile(country="Netherlands")
    train = _group_ds([(fr, "q1", (1, 0, 0)), (nl, "q1", (0, 0, 1))], name="train")  # no q2 in training
    train.items = {"q1": Q1}
    refs = reference_predictions(group_test, train)
    assert {"uniform", "train_mean"} <= set(refs)  # + culture_map_knn where the map covers the countries
    np.testing.assert_allclose(refs["train_mean"][0], [0.5, 0, 0.5])
    assert refs["train_mean"][1] is None and refs["train_mean"][3] is None
    m, g = compute_metrics(group_test, refs["train_mean"])
    # [0.5, 0, 0.5] vs US q1 [0.6, 0.4, 0]: cumsum |-0.1|+|-0.5| = 0.6 -> 0.3; vs DE q1 [0,0,1]: 0.5+0.5 -> 0.5
    assert m["coverage"] == pytest.approx(0.5) and m["n"] == 2
    assert m["emd"] == pytest.approx(0.4)
    assert g["United States"]["emd"] == pytest.approx(0.3) and g["Germany"]["emd"] == pytest.approx(0.5)
    mu, _ = compute_metrics(group_test, refs["uniform"])
    # uniform vs US q1: cumsum |-0.2667|+|-0.3333| = 0.6 -> 0.3; US q2 TV 0.3; DE q1 (2/3+1/3)/2 = 0.5; DE q2 0.5
    assert mu["emd"] == pytest.approx((0.3 + 0.3 + 0.5 + 0.5) / 4)
    assert mu["entropy"] == pytest.approx(1.0)
    assert "train_mean" not in reference_predictions(group_test, None)
    assert "train_mean" not in reference_predictions(group_test, group_test)  # never the test set itself


def test_empty_predictions_are_reported_not_crashing(group_test):
    m, g = compute_metrics(group_test, [None] * 4)
    assert m == {"n": 0, "coverage": 0.0} and g == {}


@pytest.fixture()
def indiv_test():
    rows = [("r1", US, "q1", 0), ("r2", US, "q1", 1), ("r1", US, "q2", 1), ("r2", US, "q2", 1), ("r3", DE, "q1", 2), ("r3", DE, "q2", 0)]
    return SurveyDataset("probe", "individual", dict(ITEMS), [IndividualExample(r, p, q, a) for r, p, q, a in rows], source="hand")


INDIV_PRED = [np.array(x) for x in ([0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.8, 0.2], [0.3, 0.7], [0.2, 0.5, 0.3], [0.9, 0.1])]


def test_individual_metrics_by_hand(indiv_test):
    m, g = compute_metrics(indiv_test, INDIV_PRED)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["macro_f1_per_question"] == pytest.approx(11 / 18)
    assert m["macro_f1_option_label"] == pytest.approx((0.8 + 2 / 3) / 3)  # sklearn macro over option labels, rows pooled
    assert m["macro_f1"] == pytest.approx(0.6)  # (question, option) classes
    # cells: US q1 human [.5,.5,0] vs mean pred [.4,.4,.2] -> 0.3/2 = .15; US q2 human [0,1] vs [.55,.45] TV .55;
    #        DE q1 [0,0,1] vs [.2,.5,.3] -> .9/2 = .45; DE q2 [1,0] vs [.9,.1] -> .1
    assert m["n_cells"] == 4
    assert m["emd"] == pytest.approx((0.15 + 0.55 + 0.45 + 0.1) / 4)
    # nll: -ln of the answer's probability: US .7, .6, .2, .7; DE .3, .9
    us_nll, de_nll = -np.log([0.7, 0.6, 0.2, 0.7]).mean(), -np.log([0.3, 0.9]).mean()
    assert g["United States"] == {"n": 4, "accuracy": pytest.approx(0.75), "nll": pytest.approx(us_nll), "emd": pytest.approx(0.35)}
    assert g["Germany"] == {"n": 2, "accuracy": pytest.approx(0.5), "nll": pytest.approx(de_nll), "emd": pytest.approx(0.275)}
    assert m["nll"] == pytest.approx(-np.log([0.7, 0.6, 0.2, 0.7, 0.3, 0.9]).mean())
    assert m["accuracy_by_group"] == {"mean": pytest.approx(0.625), "std": pytest.approx(0.125)}
    assert m["emd_by_group"] == {"mean": pytest.approx(0.3125), "std": pytest.approx(0.0375)}
    want_jsd = np.mean([
        jensenshannon([0.4, 0.4, 0.2], [0.5, 0.5, 0], base=2), jensenshannon([0.55, 0.45], [0, 1], base=2),
        jensenshannon([0.2, 0.5, 0.3], [0, 0, 1], base=2), jensenshannon([0.9, 0.1], [1, 0], base=2),
    ])
    assert m["jsd"] == pytest.approx(want_jsd)


def test_individual_train_mean_reference(indiv_test):
    fr = Profile(country="France")
    train = SurveyDataset("tr", "individual", dict(ITEMS), [
        IndividualExample("t1", fr, "q1", 0), IndividualExample("t2", fr, "q1", 0), IndividualExample("t3", fr, "q2", 1),
        IndividualExample("t4", DE, "q1", 2), IndividualExample("t5", DE, "q2", 1),
    ], source="hand")
    refs = reference_predictions(indiv_test, train)
    # q1: mean of France [1,0,0] and Germany [0,0,1]; q2: France [0,1], Germany [0,1]
    np.testing.assert_allclose(refs["train_mean"][0], [0.5, 0, 0.5])
    np.testing.assert_allclose(refs["train_mean"][2], [0, 1])
    m, _ = compute_metrics(indiv_test, refs["train_mean"])
    assert m["coverage"] == 1.0
    # argmax of [.5,0,.5] is option 0; q2 option 1: hits r1q1, r1q2, r2q2 -> 3/6
    assert m["accuracy"] == pytest.approx(0.5)


# ------------------------------------------------------------------------------------- evaluate()
@pytest.fixture()
def three_countries():
    cs = [Profile(country=c) for c in ("United States", "Germany", "Thailand")]
    rows = [(p, q, h) for p in cs for q, h in (("q1", (0.5, 0.3, 0.2)), ("q2", (0.4, 0.6)))]
    return _group_ds(rows)


class _Spy:
    def __init__(self, monkeypatch):
        self.prompts: list[list[str]] = []
        orig = R.OptionScorer.next_token

        def spy(scorer, prompts, labels, **kw):
            self.prompts.append(list(prompts))
            return orig(scorer, prompts, labels, **kw)

        monkeypatch.setattr(R.OptionScorer, "next_token", spy)


def test_vanilla_scores_each_prompt_once(tiny_llama, tiny_tokenizer, three_countries, monkeypatch):
    spy = _Spy(monkeypatch)
    res = evaluate(tiny_llama, tiny_tokenizer, three_countries, EvalConfig(method="vanilla"), progress=False)
    assert len(spy.prompts) == 1 and len(spy.prompts[0]) == 2 == len(set(spy.prompts[0]))  # one per item
    assert res["timing"]["prompts"] == 2
    preds = {(p["group"], p["item_id"]): p["probs"] for p in res["predictions"]}
    assert preds[("United States", "q1")] == preds[("Germany", "q1")] == preds[("Thailand", "q1")]
    assert len(res["predictions"]) == 6 and set(res["per_group"]) == {"United States", "Germany", "Thailand"}
    assert res["schema"] == "pluralign.eval/1" and set(res["references"]) == {"uniform"}
    assert 0 < res["metrics"]["option_mass"] < 1


def test_persona_prompts_differ_per_profile(tiny_llama, tiny_tokenizer, three_countries, monkeypatch):
    spy = _Spy(monkeypatch)
    res = evaluate(tiny_llama, tiny_tokenizer, three_countries, EvalConfig(method="persona"), progress=False)
    (prompts,) = spy.prompts
    assert len(prompts) == 6 == len(set(prompts))
    for c in ("the United States", "Germany", "Thailand"):
        assert sum(c in p for p in prompts) == 2
    preds = {(p["group"], p["item_id"]): p["probs"] for p in res["predictions"]}
    assert preds[("United States", "q1")] != preds[("Germany", "q1")]


def test_profile_kwargs_expand_shared_prompts(tiny_llama, tiny_tokenizer, three_countries, monkeypatch):
    """An adapter conditioned on the profile sees one row per profile even with vanilla prompts."""
    spy = _Spy(monkeypatch)
    seen = []

    def profile_kwargs(profiles):
        seen.extend(p.country for p in profiles)
        return {}

    res = evaluate(tiny_llama, tiny_tokenizer, three_countries, EvalConfig(method="vanilla"), profile_kwargs=profile_kwargs, progress=False)
    assert len(spy.prompts[0]) == 6 and len(set(spy.prompts[0])) == 2
    assert sorted(seen) == sorted(["United States", "Germany", "Thailand"] * 2)
    assert res["timing"]["prompts"] == 6


def test_build_prompts_index_maps_examples(tiny_tokenizer, three_countries):
    prompts, labels, options, profiles, index = build_prompts(tiny_tokenizer, three_countries, EvalConfig(method="vanilla"))
    assert len(prompts) == 2 and len(index) == 6
    for e, i in zip(three_countries.examples, index):
        assert options[i] == list(ITEMS[e.item_id].options)
        assert labels[i] == [str(k + 1) for k in range(ITEMS[e.item_id].n_options)]
        assert ITEMS[e.item_id].text in prompts[i]


def test_unknown_scoring_is_a_clean_error(tiny_llama, tiny_tokenizer, three_countries):
    from pluralign.errors import PluralignError

    with pytest.raises(PluralignError, match="unknown scoring"):
        evaluate(tiny_llama, tiny_tokenizer, three_countries, EvalConfig(scoring="magic"), progress=False)


def test_loglik_scoring_runs(tiny_llama, tiny_tokenizer, three_countries):
    res = evaluate(tiny_llama, tiny_tokenizer, three_countries, EvalConfig(method="vanilla", scoring="loglik"), progress=False)
    assert res["metrics"]["n"] == 6 and 0 <= res["metrics"]["emd"] <= 1


def test_option_mass_is_reported_per_group(tiny_llama, tiny_tokenizer, three_countries):
    """Each group's option_mass is the mean label mass of that group's rows, so a persona prompt
    that makes the model say a label less for one country shows in that country's row."""
    res = evaluate(tiny_llama, tiny_tokenizer, three_countries, EvalConfig(method="persona"), progress=False)
    by_group: dict[str, list[float]] = {}
    for p in res["predictions"]:
        by_group.setdefault(p["group"], []).append(p["mass"])
    assert set(by_group) == set(res["per_group"])
    for g, ms in by_group.items():
        assert res["per_group"][g]["option_mass"] == pytest.approx(sum(ms) / len(ms), abs=1e-5)
    masses = [res["per_group"][g]["option_mass"] for g in sorted(by_group)]
    assert len(set(round(m, 6) for m in masses)) > 1  # the persona prompts differ, so do the masses
    assert res["metrics"]["option_mass"] == pytest.approx(sum(sum(ms) for ms in by_group.values()) / 6, abs=1e-5)
