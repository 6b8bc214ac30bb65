"""P@K, the Spearman reward, parsing and task records against hand-computed cases."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pluralign.data.loaders.swow import load_swow
from pluralign.wordassoc.generate import merge_samples
from pluralign.wordassoc.metrics import REWARDS, model_ranks, precision_at_k, ranking_spearman, spearman_reward
from pluralign.wordassoc.tasks import generation_examples, parse_associations, ranking_examples

FIX = Path(__file__).parent / "fixtures"
HUMAN = ["fruit", "red", "tree", "pie"]


def test_precision_at_k_hand_computed():
    gen = ["Fruit", "car", "red.", "pie"]
    assert precision_at_k(gen, HUMAN, 5) == pytest.approx(3 / 5)  # missing 5th counts as a miss
    assert precision_at_k(gen, HUMAN, 2) == pytest.approx(1 / 2)
    assert precision_at_k(gen, HUMAN, 1) == 1.0
    assert precision_at_k(["fruit", "FRUIT", "red"], HUMAN, 2) == 1.0  # duplicates collapse
    assert precision_at_k([], HUMAN, 10) == 0.0
    assert precision_at_k(["car", "bus"], HUMAN, 40) == 0.0


def test_spearman_hand_computed():
    cands, s = ["a", "b", "c", "d"], [0.4, 0.3, 0.2, 0.1]
    assert ranking_spearman(["a", "b", "c", "d"], cands, s) == pytest.approx(1.0)
    assert ranking_spearman(["d", "c", "b", "a"], cands, s) == pytest.approx(-1.0)
    assert ranking_spearman(["b", "a", "c", "d"], cands, s) == pytest.approx(1 - 6 * 2 / (4 * 15))  # 0.8
    # only "a" listed: the others share rank 3 → rho = 3 / sqrt(15)
    assert list(model_ranks(["a"], cands)) == [1, 3, 3, 3]
    assert ranking_spearman(["a"], cands, s) == pytest.approx(3 / math.sqrt(15))
    assert ranking_spearman(["x", "A", "b", "zz", "c", "d"], cands, s) == pytest.approx(1.0)  # non-candidates ignored
    assert ranking_spearman(["x", "y"], cands, s) == -1.0  # nothing listed: the worst reward
    assert ranking_spearman(["a", "b"], cands, [0.25] * 4) == 0.0  # constant strengths


def test_spearman_reward_trl_signature():
    assert REWARDS["spearman"] is spearman_reward and spearman_reward.__name__ == "spearman"
    comps = [[{"role": "assistant", "content": "1. A\n2. b\n3. c\n4. d"}], [{"role": "assistant", "content": "d, c, b, a"}], "nothing"]
    cands = [["a", "b", "c", "d"]] * 3
    strs = [[0.4, 0.3, 0.2, 0.1]] * 3
    assert spearman_reward(prompts=[None] * 3, completions=comps, candidates=cands, strengths=strs) == pytest.approx([1.0, -1.0, -1.0])
    pr = REWARDS["precision"](prompts=[None], completions=["fruit, car, red"], human=[HUMAN], k=[3])
    assert pr == pytest.approx([2 / 3])


def test_parse_and_merge():
    assert parse_associations('1. Animal\n2. "Anteater"\n3) nose.\n- animal') == ["animal", "anteater", "nose"]
    assert parse_associations("水果，红色、树") == ["水果", "红色", "树"]
    assert parse_associations("This is a very long sentence about words, cat") == ["cat"]
    # two samples: "b" appears twice → first; then a (position 0) before c (position 1)
    assert merge_samples([["a", "b"], ["b", "c"]]) == ["b", "a", "c"]


def test_task_records_follow_human_order():
    d = load_swow(FIX / "strength.SWOW-EN.R1.csv")
    gen = generation_examples(d, n_targets=3, samples_per_cue=2)
    apple = [r for r in gen if r["cue"] == "apple"]
    assert len(apple) == 1  # 4 responses: a second group of 3 does not exist
    assert apple[0]["completion"][0]["content"] == "fruit, red, pie"
    assert '"apple"' in apple[0]["prompt"][-1]["content"] and "3 words" in apple[0]["prompt"][-1]["content"]
    rk = ranking_examples(d, n_candidates=4, seed=1)
    r = next(x for x in rk if x["cue"] == "dog")
    assert sorted(r["candidates"]) == sorted(["cat", "bark", "pet", "bone"])
    assert dict(zip(r["candidates"], r["strengths"]))["cat"] == pytest.approx(0.6)
    assert r["target"] == "cat, bark, bone, pet"
    # the shuffled order is seeded; the human order scores 1, except that tied human strengths
    # (bone = pet = 0.1) cap rho at sqrt(0.9) for any strict order
    assert ranking_examples(d, n_candidates=4, seed=1) == rk
    assert ranking_spearman(parse_associations(r["target"]), r["candidates"], r["strengths"]) == pytest.approx(math.sqrt(0.9))
    sun = next(x for x in rk if x["cue"] == "sun")
    assert ranking_spearman(parse_associations(sun["target"]), sun["candidates"], sun["strengths"]) == pytest.approx(1.0)
    zh = load_swow(FIX / "strength.SWOWZH.R1.csv")
    z = generation_examples(zh)[0]
    assert "提示词" in z["prompt"][-1]["content"] and z["completion"][0]["content"] == "水果，红色，树"
