"""NSGA-II on two objectives (VSM loss, knowledge accuracy): a Pareto front, its files, the batched knowledge evaluator."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pluralign.blackbox import SoftPromptModel, country_target
from pluralign.blackbox.knowledge import KnowledgeEvaluator, KnowledgeItem, knowledge_accuracy
from pluralign.blackbox.optimizers import make_optimizer, non_dominated
from pluralign.blackbox.population import PopulationConfig
from pluralign.blackbox.search import SearchConfig, run_search
from pluralign.blackbox.subspace import make_search_optimizer
from pluralign.errors import PluralignError

#: synthetic multiple-choice questions (no BLEnD data needed)
ITEMS = [
    KnowledgeItem(qid=f"q{i}", region="US", question=f"Which option {w}?", options=("family", "boss", "rural", "agree"), answer=i % 4)
    for i, w in enumerate(["is right", "fits", "is true", "is common", "wins"])
]


def _toy(X):
    return np.stack([((X - 1) ** 2).sum(1), ((X + 1) ** 2).sum(1)], axis=1)


@pytest.mark.parametrize("subspace", [0, 3])
def test_nsga2_on_a_toy_problem_gives_a_pareto_front(subspace):
    rng = np.random.default_rng(0)
    x0 = rng.uniform(-2, 2, size=(10, 6))
    lo, hi = -2 * np.ones(6), 2 * np.ones(6)
    opt = make_search_optimizer("nsga2", x0, lo, hi, seed=0, subspace_dim=subspace, embedding_std=1.0)
    X = opt.ask()
    assert np.allclose(X, x0) or subspace
    for _ in range(8):
        opt.tell(X, _toy(X))
        X = opt.ask()
    F = opt.front_F
    assert len(F) >= 2 and non_dominated(F).all()  # at least two mutually non-dominated points
    assert np.all(np.diff(F[:, 0]) >= 0) and np.all(np.diff(F[:, 1]) <= 0)  # sorted by the first objective: a trade-off
    assert np.allclose(_toy(opt.front_X), F, atol=1e-5)  # the stored prompts give the stored objectives
    assert opt.best_f == pytest.approx(F[0, 0])
    one = make_optimizer("nsga2", x0, lo, hi)
    with pytest.raises(PluralignError, match="2 objectives"):
        one.tell(one.ask(), _toy(x0)[:, 0])


def test_non_dominated():
    F = np.array([[1, 5], [2, 2], [3, 1], [3, 3], [1, 5]])
    assert non_dominated(F).tolist() == [True, True, True, False, True]


def test_knowledge_evaluator_equals_the_one_prompt_at_a_time_check(tiny_llama, tiny_tokenizer):
    kev = KnowledgeEvaluator(tiny_llama, tiny_tokenizer, ITEMS, cfg=PopulationConfig(tokens=2, batch_size=7))
    torch.manual_seed(0)
    X = torch.randn(2, 2, 64) * 0.5
    res = kev.evaluate(X)
    assert res["accuracy"].shape == (2,) and res["correct"].shape == (2, 5)
    for i in range(2):
        ref = knowledge_accuracy(SoftPromptModel(tiny_llama, X[i]), tiny_tokenizer, ITEMS, batch_size=5)
        assert res["accuracy"][i] == pytest.approx(ref["accuracy"]) and res["mass"][i] == pytest.approx(ref["mass"], rel=1e-3)
    base = KnowledgeEvaluator(tiny_llama, tiny_tokenizer, ITEMS, cfg=PopulationConfig(tokens=0)).accuracy(torch.zeros(1, 0, 64))
    assert base[0] == pytest.approx(knowledge_accuracy(tiny_llama, tiny_tokenizer, ITEMS)["accuracy"])


def test_nsga2_search_writes_the_front(tiny_evaluator, tiny_llama, tiny_tokenizer, tmp_path):
    from safetensors.torch import load_file

    kev = KnowledgeEvaluator(tiny_llama, tiny_tokenizer, ITEMS, cfg=PopulationConfig(tokens=3, batch_size=48))
    res = run_search(tiny_evaluator, country_target("USA"), SearchConfig(optimizer="nsga2", pop=4, gens=1, seed=0),
                     out_dir=tmp_path, progress=False, knowledge=kev)
    doc = json.loads((tmp_path / "pareto.json").read_text())
    pts = doc["points"]
    assert len(pts) == len(res.pareto) >= 1 and doc["objectives"] == ["vsm_l1_loss", "knowledge_accuracy"]
    F = np.array([[p["loss"], -p["accuracy"]] for p in pts])
    assert non_dominated(F).all() and pts[0]["loss"] == pytest.approx(res.best_loss)
    assert all(p["scores"] and p["gen"] in (0, 1) for p in pts)
    prompts = load_file(str(tmp_path / "pareto.safetensors"))["prompts"]
    assert tuple(prompts.shape) == (len(pts), 3, 64)
    # the stored prompts score what the front says
    again = tiny_evaluator.evaluate(prompts, country_target("USA")).loss
    assert np.allclose(again, F[:, 0], atol=1e-3)
    assert np.allclose(kev.accuracy(prompts), -F[:, 1])
    assert (tmp_path / "pareto.png").stat().st_size > 1000
    assert "front" in json.loads((tmp_path / "log.jsonl").read_text().splitlines()[-1])
    with pytest.raises(PluralignError, match="knowledge"):
        run_search(tiny_evaluator, country_target("USA"), SearchConfig(optimizer="nsga2", pop=4, gens=0), progress=False)
