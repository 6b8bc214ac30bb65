"""References that know what the model knows, with settings chosen on validation rows only."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pluralign.data import GroupExample, IndividualExample, Profile, SurveyDataset, SurveyItem, split_dataset
from pluralign.evaluation.references import (
    ReferenceSettings, TextIndex, culture_map_kernel, culture_map_knn, reference_predictions, text_knn, tune_references,
)

# countries whose answers follow their position on the cultural map (trad-secular axis)
COUNTRIES = ["Sweden", "Norway", "Denmark", "Germany", "Japan", "China", "Russia", "Poland", "Spain", "Italy", "Brazil", "Mexico",
             "Peru", "India", "Pakistan", "Egypt", "Nigeria", "Ghana", "Kenya", "Ethiopia"]
TEXTS = ["How important is family in your life?", "How important is religion in your life?", "How important is work in your life?",
         "How important are friends in your life?", "How important is politics in your life?", "How important is leisure time in your life?",
         "Do you trust your neighbours?", "Do you trust people you meet for the first time?", "Do you trust the police?",
         "Do you trust the government?", "Is homosexuality justifiable?", "Is divorce justifiable?", "Is abortion justifiable?",
         "Is euthanasia justifiable?", "Is it justifiable to cheat on taxes?", "Is it justifiable to accept a bribe?"]
ITEMS = {f"Q{i + 1}": SurveyItem(id=f"Q{i + 1}", text=t, options=("a", "b", "c", "d")) for i, t in enumerate(TEXTS)}


def _probs(country: str, item: str) -> tuple:
    from pluralign.data.culture import lookup

    x = lookup(country).trad_secular
    topic = (int(item[1:]) - 1) // 6  # questions of one topic share their answers: text similarity pays
    centre = 1.5 + (x if topic != 1 else -x) * 0.9
    w = np.exp(-0.5 * ((np.arange(4) - centre) / 0.7) ** 2)
    return tuple(float(v) for v in w / w.sum())


def _ds() -> SurveyDataset:
    exs = [GroupExample(group_id=c, profile=Profile(country=c), item_id=q, probs=_probs(c, q)) for c in COUNTRIES for q in ITEMS]
    return SurveyDataset(name="mapped", kind="distributional", items=dict(ITEMS), examples=exs, source="mapped.json")


def _split(seed=0):
    return split_dataset(_ds(), "country,question", test_frac=0.25, val_frac=0.25, seed=seed)


def test_settings_are_chosen_on_validation_rows_only():
    sp = _split()
    s = tune_references(sp.train, sp.val_cells(), ReferenceSettings(text_encoder="tfidf"))
    assert s.chosen_on == "validation" and set(s.validation) >= {"map_k", "map_bandwidth", "text_k"}
    # the test rows can say anything: the choice does not move
    scrambled = sp.test.subset([dataclasses.replace(e, probs=tuple(reversed(e.probs))) for e in sp.test.examples])
    sp2 = dataclasses.replace(sp, test=scrambled)
    s2 = tune_references(sp2.train, sp2.val_cells(), ReferenceSettings(text_encoder="tfidf"))
    assert (s2.map_k, s2.map_bandwidth, s2.text_k) == (s.map_k, s.map_bandwidth, s.text_k)
    # ...while other validation answers do move it (the choice reads the validation rows)
    val = sp.val_cells()
    flat = {c: d.subset([dataclasses.replace(e, probs=(0.25, 0.25, 0.25, 0.25)) for e in d.examples]) for c, d in val.items()}
    s3 = tune_references(sp.train, flat, ReferenceSettings(text_encoder="tfidf"))
    assert s3.validation != s.validation


def test_the_chosen_k_is_the_validation_minimum():
    sp = _split()
    s = tune_references(sp.train, sp.val_cells(), ReferenceSettings(text_encoder="tfidf"))
    for key, chosen in (("map_k", s.map_k), ("text_k", s.text_k), ("map_bandwidth", s.map_bandwidth)):
        grid = s.validation[key]
        assert grid[str(chosen)] == min(grid.values())


def test_references_never_read_a_test_cell():
    sp = _split()
    cells = sp.test_cells()
    s = ReferenceSettings(text_encoder="tfidf", map_k=2, text_k=2)
    for name, part in cells.items():
        refs = reference_predictions(part, sp.train, s)
        poisoned = part.subset([dataclasses.replace(e, probs=(1.0, 0.0, 0.0, 0.0)) for e in part.examples])
        refs2 = reference_predictions(poisoned, sp.train, s)
        assert refs.keys() == refs2.keys()
        for k in refs:
            for a, b in zip(refs[k], refs2[k]):
                assert (a is None and b is None) or np.allclose(a, b), (name, k)
    assert "culture_map_knn" in reference_predictions(cells["unseen_countries"], sp.train, s)
    assert "text_knn" in reference_predictions(cells["unseen_questions"], sp.train, s)


def test_map_reference_beats_the_mean_when_answers_follow_the_map():
    from pluralign.evaluation.runner import compute_metrics

    sp = _split()
    part = sp.test_cells()["unseen_countries"]
    refs = reference_predictions(part, sp.train, ReferenceSettings(map_k=2, map_bandwidth=0.3, text_encoder="tfidf"))
    emd = {k: compute_metrics(part, v)[0]["emd"] for k, v in refs.items()}
    assert emd["culture_map_knn"] < emd["train_mean"] and emd["culture_map_kernel"] < emd["train_mean"]


def test_text_reference_takes_the_same_country_on_the_most_similar_question():
    sp = split_dataset(_ds(), "country,question", test_units=["Japan"], test_questions=["Q2"], seed=0)
    part = sp.test_cells()["unseen_questions"]
    idx = TextIndex("tfidf")
    preds = text_knn(part, sp.train, k=1, index=idx)
    table = {(e.group, e.item_id): np.asarray(e.probs) for e in sp.train.examples}
    # the most similar question of "How important is religion in your life?" is another "How important is ... in your life?"
    for e, p in zip(part.examples, preds):
        nearest = [q for q in ("Q1", "Q3", "Q4", "Q5", "Q6") if np.allclose(p, table[(e.group, q)])]
        assert nearest, e.group
    # a question whose scale no training question shares gets uniform
    odd = SurveyItem(id="Q99", text="How important is family in your life?", options=("yes", "no"))
    ds = _ds()
    ds2 = SurveyDataset(name="x", kind="distributional", items={**ds.items, "Q99": odd},
                        examples=ds.examples + [GroupExample("Japan", Profile(country="Japan"), "Q99", (0.9, 0.1))], source="x")
    only = ds2.subset([e for e in ds2.examples if e.item_id == "Q99"])
    assert np.allclose(text_knn(only, sp.train, k=3, index=TextIndex("tfidf"))[0], [0.5, 0.5])


def test_map_wave_flag_moves_coordinates_and_drops_countries_without_an_earlier_wave():
    from pluralign.data.culture import culture_features, lookup
    from pluralign.models.profile_encoder import make_profile_encoder

    latest, before = lookup("USA"), lookup("USA", before=2017)
    assert latest.year >= 2017 and before.year < 2017 and before.trad_secular != latest.trad_secular
    assert lookup("BOL", before=2017) is None  # Bolivia's first map wave is 2017
    enc = make_profile_encoder("culture-map:before=2017")
    assert enc.name == "culture-map:before=2017"
    got = enc.encode([Profile(country="United States")])[0].tolist()
    assert got == pytest.approx(culture_features("USA", 2017)) and got != pytest.approx(culture_features("USA"))
    # an off-map test country gets the training mean from the map references, not nothing
    sp = split_dataset(_ds(), "country,question", test_units=["Japan"], test_questions=["Q1"], seed=0)
    part = sp.test_cells()["unseen_countries"]
    preds = culture_map_knn(part, sp.train, k=2, before=1950)
    assert preds is None  # nobody on the map before 1950
    kern = culture_map_kernel(part, sp.train, bandwidth=0.5)
    assert all(p is not None for p in kern)


def test_individual_references_are_pooled_and_per_country_shares():
    items = {"Q1": SurveyItem(id="Q1", text="?", options=("a", "b", "c"))}
    exs = []
    for r in range(30):
        c = "Japan" if r < 10 else "Brazil"
        exs.append(IndividualExample(f"r{r}", Profile(country=c), "Q1", 0 if c == "Japan" else 2))
    ds = SurveyDataset("ind", "individual", items, exs, source="ind")
    train = ds.subset(exs[:25])  # 10 Japanese, 15 Brazilian respondents
    test = ds.subset(exs[25:])
    refs = reference_predictions(test, train)
    # pooled over respondents (not country-equal), Jeffreys-smoothed
    assert np.allclose(refs["pooled_shares"][0], [10.5 / 26.5, 0.5 / 26.5, 15.5 / 26.5])
    # the country's own shares, shrunk toward the pooled ones by one respondent's weight
    assert np.allclose(refs["country_shares"][0], (np.array([0, 0, 15]) + refs["pooled_shares"][0]) / 16)
    assert refs["country_shares"][0].argmax() == 2 and min(refs["country_shares"][0]) > 0
    assert np.allclose(refs["train_mean"][0], [0.5, 0, 0.5])  # the country-equal mean, for contrast


def test_leave_one_country_out_never_uses_the_country_itself():
    sp = split_dataset(_ds(), "country", test_units=["Japan", "Brazil"], seed=0)
    s = tune_references(sp.train, {"loo": sp.train}, ReferenceSettings(text_encoder="tfidf"))
    assert s.chosen_on == "validation" and s.validation["map_rows"] == len(sp.train)
    # with itself allowed as a neighbour, k = 1 would be a perfect (zero) EMD: it is not
    assert s.validation["map_k"]["1"] > 0.0
    # the choice reads only the training part: the test countries' answers can be anything
    poisoned = sp.test.subset([dataclasses.replace(e, probs=(1.0, 0.0, 0.0, 0.0)) for e in sp.test.examples])
    sp2 = dataclasses.replace(sp, test=poisoned)
    assert tune_references(sp2.train, {"loo": sp2.train}, ReferenceSettings(text_encoder="tfidf")).validation == s.validation
