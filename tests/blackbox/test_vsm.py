"""VSM 2013 formulas, scores from distributions vs samples, Hofstede targets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pluralign.blackbox.vsm import (
    VSMConfig, dimension_scores, item_means_from_probs, item_means_from_samples, l1_loss, sample_answers,
)
from pluralign.data.loaders.hofstede import DIMENSIONS, country_target, load_hofstede_scores, load_vsm_items
from pluralign.errors import PluralignError
from tests.conftest import shared


def test_items_shipped_24_five_point():
    q = load_vsm_items()
    assert [it.id for it in q.items] == [f"vsm{i:02d}" for i in range(1, 25)]
    assert all(it.n_options == 5 for it in q.items)
    assert q.items[0].options[0] == "of the highest importance" and q.items[19].options[0] == "never"
    assert "Hofstede" in q.citation


def test_shipped_wording_is_our_own():
    src = json.loads(shared("hofstede", "vsm2013_items.json").read_text())
    ours = {it.id: it.text.lower() for it in load_vsm_items().items}
    for it in src["items"]:
        assert it["text"].lower().strip("?. ") not in ours[f"vsm{it['id']:02d}"]


def test_formulas_against_hand_computation():
    rng = np.random.default_rng(3)
    m = rng.uniform(1, 5, size=24)
    M = {i + 1: m[i] for i in range(24)}
    C = {"PDI": 1.0, "IDV": 2.0, "MAS": 3.0, "UAI": 4.0, "LTO": 5.0, "IVR": 6.0}
    expect = {
        "PDI": 35 * (M[7] - M[2]) + 25 * (M[20] - M[23]) + 1,
        "IDV": 35 * (M[4] - M[1]) + 35 * (M[9] - M[6]) + 2,
        "MAS": 35 * (M[5] - M[3]) + 35 * (M[8] - M[10]) + 3,
        "UAI": 40 * (M[18] - M[15]) + 25 * (M[21] - M[24]) + 4,
        "LTO": 40 * (M[13] - M[14]) + 25 * (M[19] - M[22]) + 5,
        "IVR": 35 * (M[12] - M[11]) + 40 * (M[17] - M[16]) + 6,
    }
    got = dimension_scores(m, VSMConfig(constants=C))
    assert got == pytest.approx([expect[d] for d in DIMENSIONS])
    # batched over a population
    got2 = dimension_scores(np.stack([m, m]), VSMConfig(constants=C))
    assert got2.shape == (2, 6) and np.allclose(got2[1], got)
    # a neutral respondent scores the constant
    assert dimension_scores(np.full(24, 3.0)) == pytest.approx([50.0] * 6)


def test_distribution_scores_equal_sample_scores_in_expectation():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5) * 0.7, size=24)
    exact = item_means_from_probs(probs)
    assert exact == pytest.approx((probs * np.arange(1, 6)).sum(1))
    answers = sample_answers(probs, 40000, seed=1)
    assert answers.min() >= 1 and answers.max() <= 5
    est = item_means_from_samples(answers)
    assert np.abs(est - exact).max() < 0.03
    assert np.abs(dimension_scores(est) - dimension_scores(exact)).max() < 3.0
    with pytest.raises(PluralignError):
        item_means_from_samples(np.full((3, 24), 6))


def test_targets_and_l1_loss():
    usa = country_target("USA")
    assert usa.scores == {"PDI": 40, "IDV": 91, "MAS": 62, "UAI": 46, "LTO": 26, "IVR": 68}
    assert country_target("China").scores["LTO"] == 87 and country_target("chn").code == "CHI"
    sau = country_target("SAU")
    assert set(sau.scores) == {"LTO", "IVR"} and set(sau.missing) == {"PDI", "IDV", "MAS", "UAI"}
    assert country_target("ARA").unit_type == "region"
    scores = np.array([50.0] * 6)
    assert l1_loss(scores, usa) == pytest.approx(np.mean([10, 41, 12, 4, 24, 18]))
    assert l1_loss(scores, usa, VSMConfig(reduction="sum")) == pytest.approx(109)
    assert l1_loss(scores, sau) == pytest.approx((14 + 2) / 2)  # only the measured dimensions
    assert len(load_hofstede_scores()) > 100


@pytest.mark.parametrize("bad", ["Atlantis", "XYZ"])
def test_country_without_target(bad):
    with pytest.raises(PluralignError, match="no Hofstede scores"):
        country_target(bad)


def test_country_with_too_few_dimensions():
    with pytest.raises(PluralignError, match="ARA"):
        country_target("Saudi Arabia", min_dims=6)
    with pytest.raises(PluralignError):
        VSMConfig(constants={"XYZ": 1})


def test_reworded_items_keep_the_structure_and_change_every_wording():
    """The generalisation check's questionnaire: same numbers, scales (options in order) and index
    terms as the default items, other words for every item."""
    from pluralign.data.loaders.hofstede import load_vsm_items

    a, b = load_vsm_items(), load_vsm_items("reworded")
    assert [i.id for i in a.items] == [i.id for i in b.items]
    assert [i.options for i in a.items] == [i.options for i in b.items]
    assert a.terms == b.terms
    assert all(x.text != y.text for x, y in zip(a.items, b.items))
