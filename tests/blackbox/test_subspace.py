"""Random-projection subspace (BBT): shapes, a seeded A, search on a toy objective, exact resume."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from pluralign.blackbox import country_target
from pluralign.blackbox.search import SearchConfig, embedding_std, init_population, run_search
from pluralign.blackbox.subspace import Subspace, SubspaceOptimizer, make_search_optimizer
from pluralign.errors import PluralignError


def _space(seed=0, n=3 * 64, dim=8, **kw):
    rng = np.random.default_rng(5)
    return Subspace(dim, rng.normal(size=n) * 0.1, -np.ones(n), np.ones(n), std=0.05, seed=seed, **kw)


def test_projected_prompt_shape_and_a_seeded_projection(tiny_evaluator):
    sp = _space()
    Z = np.random.default_rng(0).normal(size=(2, 8))
    X = sp.to_full(Z)
    assert X.shape == (2, 3 * 64)
    assert tuple(tiny_evaluator.as_prompts(X).shape) == (2, 3, 64)  # tokens x hidden per candidate
    assert np.allclose(sp.to_full(np.zeros((1, 8)))[0], sp.offset)  # z = 0 is the initial prompt
    assert np.all(X >= -1) and np.all(X <= 1)  # clipped to the full-space bounds
    # A is a function of the seed: same seed, same matrix; another seed, another one
    assert np.array_equal(_space(seed=0).A, sp.A) and not np.allclose(_space(seed=1).A, sp.A)
    assert sp.A.shape == (3 * 64, 8)
    assert sp.A.std() == pytest.approx(0.05 / np.sqrt(8), rel=0.15)  # BBT: std of the embeddings / sqrt(d)
    with pytest.raises(PluralignError, match="8 coordinates"):
        sp.to_full(np.zeros((1, 7)))
    with pytest.raises(PluralignError):
        _space(dim=0)


def test_checkpoints_regenerate_a_instead_of_storing_it():
    sp = _space(n=4000, dim=50)
    blob = pickle.dumps(sp)
    assert len(blob) < sp.A.nbytes / 2  # offset and bounds only, not the 4000 x 50 matrix
    back = pickle.loads(blob)
    assert np.array_equal(back.A, sp.A)
    sp.digest = "0" * 40  # a numpy that draws other numbers is refused, not silently different
    with pytest.raises(PluralignError, match="regenerated"):
        pickle.loads(pickle.dumps(sp))


@pytest.mark.parametrize("name", ["de", "pso", "cmaes", "sep-cmaes"])
def test_subspace_search_beats_its_initial_population_on_a_toy_objective(name):
    rng = np.random.default_rng(0)
    n, pop = 120, 8
    x0 = rng.normal(size=(pop, n)) * 0.5
    lo, hi = -3 * np.ones(n), 3 * np.ones(n)
    opt = make_search_optimizer(name, x0, lo, hi, seed=0, subspace_dim=10, embedding_std=0.5)
    assert isinstance(opt, SubspaceOptimizer) and opt.inner.x0.shape == (pop, 10)
    target = opt.space.to_full(rng.uniform(-3, 3, size=(1, 10)))[0]  # reachable from the subspace
    X = opt.ask()
    assert np.allclose(X[0], x0[0])  # the first candidate is the initial prompt itself
    initial = float(((X - target) ** 2).sum(1).min())
    for _ in range(12):
        opt.tell(X, ((X - target) ** 2).sum(1))
        X = opt.ask()
        assert X.shape == (pop, n) and np.all(X >= lo) and np.all(X <= hi)
    assert opt.best_f < 0.8 * initial
    assert np.allclose(opt.space.to_full(opt.best_z[None])[0], opt.best_x, atol=1e-6)  # float32 products


@pytest.mark.parametrize("name", ["de", "cmaes"])
def test_subspace_checkpoint_resume_equals_an_uninterrupted_run(tiny_evaluator, tmp_path, name):
    cfg = SearchConfig(optimizer=name, pop=4, gens=2, seed=3, subspace_dim=8)
    full = run_search(tiny_evaluator, country_target("IND"), cfg, out_dir=tmp_path / "full", progress=False, plot=False)
    part = run_search(tiny_evaluator, country_target("IND"), SearchConfig(optimizer=name, pop=4, gens=1, seed=3, subspace_dim=8),
                      out_dir=tmp_path / "part", progress=False, plot=False)
    assert part.generations == 1
    resumed = run_search(tiny_evaluator, country_target("IND"), cfg, out_dir=tmp_path / "part", resume=True, progress=False, plot=False)
    assert [h["best"] for h in resumed.history] == [h["best"] for h in full.history]
    assert np.array_equal(resumed.best_x, full.best_x) and resumed.best_x.shape == (3 * 64,)
    assert resumed.best_loss <= resumed.initial_best
    # the subspace is part of the checkpoint's identity
    with pytest.raises(PluralignError, match="subspace_dim"):
        run_search(tiny_evaluator, country_target("IND"), SearchConfig(optimizer=name, pop=4, gens=3, seed=3), out_dir=tmp_path / "part",
                   resume=True, progress=False)


def test_search_uses_the_first_initial_candidate_as_offset(tiny_evaluator):
    x0, lo, hi = init_population(tiny_evaluator.model, 3, 4, seed=0)
    opt = make_search_optimizer("pso", x0, lo, hi, seed=0, subspace_dim=8, embedding_std=embedding_std(tiny_evaluator.model))
    assert np.allclose(opt.space.offset, x0[0])
    assert opt.space.std == pytest.approx(float(tiny_evaluator.model.get_input_embeddings().weight.detach().std()))
    with pytest.raises(PluralignError, match="0 \\(off\\) or positive"):
        run_search(tiny_evaluator, country_target("USA"), SearchConfig(pop=4, gens=0, subspace_dim=-1), progress=False)
