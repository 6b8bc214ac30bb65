"""Search: DE lowers the loss with a fixed seed, checkpoints resume exactly, bad input is an error."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pluralign.blackbox import country_target, load_soft_prompt
from pluralign.blackbox.optimizers import OPTIMIZERS, make_optimizer
from pluralign.blackbox.search import SearchConfig, init_population, run_search
from pluralign.errors import PluralignError


def test_de_lowers_the_loss_on_a_tiny_model(tiny_evaluator, tmp_path):
    res = run_search(tiny_evaluator, country_target("USA"), SearchConfig(optimizer="de", pop=6, gens=3, seed=0),
                     out_dir=tmp_path, progress=False)
    assert res.best_loss < res.initial_best
    assert res.evaluations == 6 * 4 and res.generations == 3
    best = [h["best"] for h in res.history]
    assert all(b2 <= b1 for b1, b2 in zip(best, best[1:]))
    # the saved prompt is the best one and scores what the log says
    t, meta = load_soft_prompt(tmp_path)
    assert t.shape == (3, 64) and meta["loss"] == pytest.approx(res.best_loss) and meta["country"] == "USA"
    again = tiny_evaluator.evaluate(t[None], country_target("USA")).loss[0]
    assert again == pytest.approx(res.best_loss, abs=1e-3)
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[-1])["best"] == pytest.approx(res.best_loss)
    assert (tmp_path / "convergence.png").stat().st_size > 1000


def test_checkpoint_resume_continues_the_same_run(tiny_evaluator, tmp_path):
    cfg = SearchConfig(optimizer="de", pop=4, gens=2, seed=1)
    full = run_search(tiny_evaluator, country_target("CHN"), cfg, out_dir=tmp_path / "full", progress=False, plot=False)
    part = run_search(tiny_evaluator, country_target("CHN"), SearchConfig(optimizer="de", pop=4, gens=1, seed=1),
                      out_dir=tmp_path / "part", progress=False, plot=False)
    assert part.generations == 1
    resumed = run_search(tiny_evaluator, country_target("CHN"), cfg, out_dir=tmp_path / "part", resume=True, progress=False, plot=False)
    assert resumed.generations == 2 and len(resumed.history) == 3
    assert [h["best"] for h in resumed.history] == pytest.approx([h["best"] for h in full.history])
    assert np.allclose(resumed.best_x, full.best_x)
    # a checkpoint of another target is refused; a broken one is an error
    with pytest.raises(PluralignError, match="target"):
        run_search(tiny_evaluator, country_target("USA"), cfg, out_dir=tmp_path / "part", resume=True, progress=False)
    (tmp_path / "part" / "checkpoint.pkl").write_bytes(b"not a pickle")
    with pytest.raises(PluralignError, match="unreadable checkpoint"):
        run_search(tiny_evaluator, country_target("CHN"), cfg, out_dir=tmp_path / "part", resume=True, progress=False)
    with pytest.raises(PluralignError, match="nothing to resume"):
        run_search(tiny_evaluator, country_target("CHN"), cfg, out_dir=tmp_path / "none", resume=True, progress=False)


@pytest.mark.parametrize("name", ["pso", "cmaes"])
def test_other_optimizers_run_and_keep_bounds(tiny_evaluator, name):
    res = run_search(tiny_evaluator, country_target("IND"), SearchConfig(optimizer=name, pop=4, gens=1, seed=0), progress=False)
    assert res.best_loss <= res.initial_best and res.evaluations == 8
    _, lo, hi = init_population(tiny_evaluator.model, 3, 2, seed=0)
    assert np.all(res.best_x >= lo - 1e-6) and np.all(res.best_x <= hi + 1e-6)


def test_optimizers_share_the_initial_population_and_respect_bounds():
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=(6, 10))
    lo, hi = -np.ones(10) * 2, np.ones(10) * 2
    for name in OPTIMIZERS:
        opt = make_optimizer(name, x0, lo, hi, seed=0)
        X = opt.ask()
        assert np.allclose(X, np.clip(x0, lo, hi))
        for _ in range(3):
            f = (X ** 2).sum(1)
            opt.tell(X, f if opt.n_obj == 1 else np.stack([f, ((X - 1) ** 2).sum(1)], axis=1))
            X = opt.ask()
            assert X.shape[1] == 10 and np.all(X >= lo - 1e-9) and np.all(X <= hi + 1e-9)


def test_init_population_uses_real_token_embeddings(tiny_llama):
    x0, lo, hi = init_population(tiny_llama, 2, 5, seed=0, special_ids={0, 1, 2, 3})
    E = tiny_llama.get_input_embeddings().weight.detach().numpy()
    rows = x0.reshape(5, 2, 64)
    for r in rows.reshape(-1, 64):
        d = np.abs(E - r).max(1)
        assert d.min() < 1e-6 and int(d.argmin()) > 3


def test_bad_search_input(tiny_evaluator):
    with pytest.raises(PluralignError, match="unknown optimizer"):
        run_search(tiny_evaluator, country_target("USA"), SearchConfig(optimizer="adam", pop=4, gens=1), progress=False)
    with pytest.raises(PluralignError, match="at least 4"):
        run_search(tiny_evaluator, country_target("USA"), SearchConfig(optimizer="de", pop=3, gens=1), progress=False)
    with pytest.raises(PluralignError):
        make_optimizer("de", np.zeros((4, 3)), -np.ones(3), np.ones(3), seed=0).__class__(
            np.zeros((4, 3)), -np.ones(3), np.ones(3), type("C", (), {"de_variant": "DE/x", "de_F": 0.5, "de_CR": 0.5, "de_prob_mut": 0})(), 0)
