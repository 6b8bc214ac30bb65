"""The shipped Inglehart–Welzel table, profile enrichment and the cultural-map reference."""

from __future__ import annotations

import numpy as np
import pytest

from pluralign.data import GroupExample, Profile, SurveyDataset, SurveyItem
from pluralign.data.culture import culture_features, enrich_profile, feature_dim, lookup, nearest_groups


def test_table_covers_the_wvs_share_countries_with_citation():
    from pluralign.data import load_dataset
    from pluralign.data.culture import CITATION, load_map

    ds = load_dataset("wvs-shares")
    assert all(lookup(g) is not None for g in ds.groups())
    assert len(load_map()) > 100 and "Inglehart" in CITATION
    us = lookup("USA")
    assert us.zone == "English-Speaking" and lookup("United States") == us


def test_enrichment_adds_map_position_to_the_persona_text():
    p = enrich_profile(Profile(country="Germany"))
    text = p.describe()
    assert "cultural zone: Protestant Europe" in text and "traditional-secular" in text
    assert enrich_profile(Profile(age=30)) == Profile(age=30)  # no country: unchanged
    assert enrich_profile(Profile(country="Atlantis")) == Profile(country="Atlantis")


def test_culture_features_and_nearest_groups():
    f = culture_features("Sweden")
    assert len(f) == feature_dim() and f[-1] == 1.0 and sum(f[2:-1]) == 1.0
    assert culture_features("Atlantis") == [0.0] * feature_dim()
    nn = nearest_groups("Norway", ["Sweden", "Nigeria", "China", "Denmark"], k=2)
    assert set(nn) == {"Sweden", "Denmark"}


def test_culture_map_reference_is_the_mean_of_the_nearest_training_countries():
    from pluralign.evaluation.runner import reference_predictions

    item = SurveyItem("Q1", "q?", ("a", "b", "c"))
    def ex(c, p):
        return GroupExample(c, Profile(country=c), "Q1", p)
    train = SurveyDataset("t", "distributional", {"Q1": item},
                          [ex("Sweden", (0.8, 0.1, 0.1)), ex("Denmark", (0.6, 0.3, 0.1)), ex("Nigeria", (0.0, 0.1, 0.9))])
    test = SurveyDataset("t", "distributional", {"Q1": item}, [ex("Norway", (0.7, 0.2, 0.1))])
    refs = reference_predictions(test, train, map_k=2)
    np.testing.assert_allclose(refs["culture_map_knn"][0], [0.7, 0.2, 0.1])
    np.testing.assert_allclose(refs["train_mean"][0], [1.4 / 3, 0.5 / 3, 1.1 / 3])
    off = SurveyDataset("t", "distributional", {"Q1": item}, [ex("Atlantis", (0.7, 0.2, 0.1))])
    assert "culture_map_knn" not in reference_predictions(off, train)
