"""Gradient-free optimisers behind one ask/tell interface, built on pymoo (DE, PSO, NSGA-II) and cma (CMA-ES).

Every optimiser is minimising, starts from the same initial population ``x0[pop, n]`` (the first
``ask()`` returns it exactly, so "the initial population's best" means the same thing for all),
keeps candidates inside per-coordinate bounds, is seeded, and pickles (checkpoint and resume).
Adding an optimiser is one class decorated with :func:`register_optimizer`.

Multi-objective optimisers (``n_obj > 1``, NSGA-II) are told ``f[P, n_obj]``; ``best_x`` / ``best_f``
then follow the first objective and ``front_X`` / ``front_F`` keep the non-dominated set of
everything evaluated. :mod:`~pluralign.blackbox.subspace` wraps any of them to search in a random
low-dimensional subspace.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pluralign.blackbox.config import OptimizerConfig
from pluralign.errors import PluralignError
from pluralign.registry import Registry


#: the parts of a DE strategy name DE/<selection>/<n_diffs>/<crossover> that pymoo implements
DE_SELECTIONS = ("rand", "best", "target-to-best")
DE_DIFFS = (1, 2)
DE_CROSSOVERS = ("bin", "exp", "hypercube", "line")


def parse_de_variant(variant) -> tuple[str, int, str]:
    """``(selection, n_diffs, crossover)`` of a DE strategy such as ``DE/rand/1/bin``; one
    :class:`PluralignError` naming the bad part otherwise (pymoo would accept any name and fail
    only when the first generation is bred)."""
    want = f"DE/<{'|'.join(DE_SELECTIONS)}>/<{'|'.join(map(str, DE_DIFFS))}>/<{'|'.join(DE_CROSSOVERS)}>"
    parts = variant.split("/") if isinstance(variant, str) else []
    if len(parts) != 4 or parts[0] != "DE":
        raise PluralignError(f"unknown DE variant {variant!r} (use {want}, e.g. DE/rand/1/bin)", field="de_variant")
    _, sel, n, cx = parts
    if sel not in DE_SELECTIONS:
        raise PluralignError(f"unknown DE selection {sel!r} in {variant!r} (valid: {', '.join(DE_SELECTIONS)})", field="de_variant")
    if n not in [str(d) for d in DE_DIFFS]:
        raise PluralignError(f"DE difference count {n!r} in {variant!r} must be 1 or 2", field="de_variant")
    if cx not in DE_CROSSOVERS:
        raise PluralignError(f"unknown DE crossover {cx!r} in {variant!r} (valid: {', '.join(DE_CROSSOVERS)})", field="de_variant")
    return sel, int(n), cx


def de_min_pop(variant) -> int:
    """The smallest population DE/<sel>/<n>/... can breed from: the target plus 1 + 2n distinct parents."""
    return 2 + 2 * parse_de_variant(variant)[1]


#: cmaes with cma_diagonal=None uses the full covariance up to this many dimensions
CMA_FULL_MAX_DIM = 1000
#: cma_sigma=None: the initial step as a fraction of the mean bound width, full space / random subspace
CMA_SIGMA_FULL, CMA_SIGMA_SUBSPACE = 0.3, 0.1


def non_dominated(F: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows of ``F[N, k]`` (minimised) that no other row dominates."""
    F = np.asarray(F, dtype=np.float64)
    keep = np.ones(len(F), dtype=bool)
    for i in range(len(F)):
        dom = np.all(F <= F[i], axis=1) & np.any(F < F[i], axis=1)
        keep[i] = not dom.any()
    return keep


class Optimizer:
    """Ask/tell minimiser. ``ask()`` → candidates ``[k, n]``; ``tell(X, f)`` with their losses."""

    name = "base"
    n_obj = 1

    def __init__(self, x0: np.ndarray, lower: np.ndarray, upper: np.ndarray, cfg: OptimizerConfig, seed: int) -> None:
        self.x0 = np.clip(np.asarray(x0, dtype=np.float64), lower, upper)
        self.lower = np.asarray(lower, dtype=np.float64)
        self.upper = np.asarray(upper, dtype=np.float64)
        self.cfg = cfg
        self.seed = seed
        self.best_x: np.ndarray | None = None
        self.best_f = float("inf")
        self.n_evals = 0
        self.front_X: np.ndarray | None = None  # multi-objective: non-dominated candidates so far
        self.front_F: np.ndarray | None = None

    @property
    def pop_size(self) -> int:
        return int(self.x0.shape[0])

    def ask(self) -> np.ndarray:
        raise NotImplementedError

    def tell(self, X: np.ndarray, f: np.ndarray) -> None:
        F = np.asarray(f, dtype=np.float64)
        primary = F[:, 0] if F.ndim == 2 else F
        self.n_evals += len(primary)
        i = int(np.argmin(primary))
        if primary[i] < self.best_f:
            self.best_f, self.best_x = float(primary[i]), np.array(X[i], dtype=np.float64)
        if F.ndim == 2 and F.shape[1] > 1:
            X = np.asarray(X, dtype=np.float64)
            allX = X if self.front_X is None else np.concatenate([self.front_X, X])
            allF = F if self.front_F is None else np.concatenate([self.front_F, F])
            _, first = np.unique(allF, axis=0, return_index=True)  # one candidate per distinct objective vector
            first = np.sort(first)
            allX, allF = allX[first], allF[first]
            keep = non_dominated(allF)
            order = np.argsort(allF[keep][:, 0], kind="stable")
            self.front_X, self.front_F = allX[keep][order], allF[keep][order]

    def _check_objectives(self, f) -> np.ndarray:
        F = np.asarray(f, dtype=np.float64)
        if self.n_obj == 1:
            if F.ndim == 2 and F.shape[1] == 1:
                F = F[:, 0]
            if F.ndim != 1:
                raise PluralignError(f"{self.name} minimises one objective, got losses of shape {list(F.shape)}", field="optimizer")
        elif F.ndim != 2 or F.shape[1] != self.n_obj:
            raise PluralignError(f"{self.name} needs {self.n_obj} objectives per candidate, got losses of shape {list(F.shape)}",
                                 field="optimizer")
        return F


OPTIMIZERS: Registry[type[Optimizer]] = Registry("optimizer", field="optimizer")


def register_optimizer(cls: type[Optimizer]) -> type[Optimizer]:
    """Class decorator: register an :class:`Optimizer` under its ``name``."""
    return OPTIMIZERS.add(cls.name, cls)


def make_optimizer(name: str, x0, lower, upper, cfg: OptimizerConfig | None = None, seed: int = 0) -> Optimizer:
    return OPTIMIZERS.get(name)(x0, lower, upper, cfg or OptimizerConfig(), seed)


class _PymooOptimizer(Optimizer):
    def __init__(self, x0, lower, upper, cfg, seed):
        super().__init__(x0, lower, upper, cfg, seed)
        from pymoo.core.problem import Problem
        from pymoo.core.termination import NoTermination

        self.problem = Problem(n_var=self.x0.shape[1], n_obj=self.n_obj, xl=self.lower, xu=self.upper)
        self.algorithm = self._build()
        self.algorithm.setup(self.problem, termination=NoTermination(), seed=seed, verbose=False)
        self._pending: Any = None

    def _build(self):
        raise NotImplementedError

    def ask(self) -> np.ndarray:
        self._pending = self.algorithm.ask()
        return np.asarray(self._pending.get("X"), dtype=np.float64)

    def tell(self, X, f) -> None:
        from pymoo.core.evaluator import Evaluator
        from pymoo.problems.static import StaticProblem

        if self._pending is None:
            raise RuntimeError("tell() without ask()")
        f = self._check_objectives(f)
        Evaluator().eval(StaticProblem(self.problem, F=f if f.ndim == 2 else f[:, None]), self._pending)
        self.algorithm.tell(infills=self._pending)
        self._pending = None
        super().tell(X, f)


@register_optimizer
class DifferentialEvolution(_PymooOptimizer):
    """pymoo DE: ``de_variant`` (e.g. DE/rand/1/bin), ``de_F``, ``de_CR``; greedy one-to-one selection."""

    name = "de"

    def _build(self):
        from pymoo.algorithms.soo.nonconvex.de import DE

        parse_de_variant(self.cfg.de_variant)
        if self.pop_size < de_min_pop(self.cfg.de_variant):
            raise PluralignError(f"{self.cfg.de_variant} needs a population of at least {de_min_pop(self.cfg.de_variant)}, "
                                 f"got {self.pop_size}", field="pop")
        try:
            return DE(pop_size=self.pop_size, sampling=self.x0, variant=self.cfg.de_variant, F=self.cfg.de_F,
                      CR=self.cfg.de_CR, prob_mut=self.cfg.de_prob_mut)
        except Exception as e:  # pymoo raises a bare Exception for a malformed variant
            raise PluralignError(f"bad DE variant {self.cfg.de_variant!r}: {e}", field="de_variant") from None


@register_optimizer
class ParticleSwarm(_PymooOptimizer):
    """pymoo PSO with (optionally adaptive) inertia and acceleration weights."""

    name = "pso"

    def _build(self):
        from pymoo.algorithms.soo.nonconvex.pso import PSO

        return PSO(pop_size=self.pop_size, sampling=self.x0, w=self.cfg.pso_w, c1=self.cfg.pso_c1,
                   c2=self.cfg.pso_c2, adaptive=self.cfg.pso_adaptive)


@register_optimizer
class NSGA2(_PymooOptimizer):
    """pymoo NSGA-II (SBX crossover, polynomial mutation, non-dominated sorting with crowding) for
    two objectives: told ``f[P, 2]``."""

    name = "nsga2"
    n_obj = 2

    def _build(self):
        from pymoo.algorithms.moo.nsga2 import NSGA2 as _NSGA2
        from pymoo.operators.crossover.sbx import SBX
        from pymoo.operators.mutation.pm import PM

        return _NSGA2(pop_size=self.pop_size, sampling=self.x0, crossover=SBX(prob=0.9, eta=self.cfg.nsga2_eta_crossover),
                      mutation=PM(eta=self.cfg.nsga2_eta_mutation), eliminate_duplicates=True)


@register_optimizer
class CMAES(Optimizer):
    """cma's CMAEvolutionStrategy: full covariance up to 1000 dimensions (a subspace), diagonal
    above (the full T x hidden space) unless ``cma_diagonal`` says otherwise. The first ask returns
    ``x0``; the search distribution is then centred on its best member with step ``cma_sigma`` x
    mean bound width."""

    name = "cmaes"

    def __init__(self, x0, lower, upper, cfg, seed):
        super().__init__(x0, lower, upper, cfg, seed)
        self.es = None
        self._first = True

    def ask(self) -> np.ndarray:
        if self._first:
            return self.x0.copy()
        return np.asarray(self.es.ask(), dtype=np.float64)

    def diagonal(self) -> bool:
        if self.cfg.cma_diagonal is None:
            return self.x0.shape[1] > CMA_FULL_MAX_DIM
        return bool(self.cfg.cma_diagonal)

    def tell(self, X, f) -> None:
        f = self._check_objectives(f)
        if self._first:
            import cma

            frac = CMA_SIGMA_FULL if self.cfg.cma_sigma is None else self.cfg.cma_sigma
            sigma = float(frac * np.mean(self.upper - self.lower))
            opts = {"popsize": self.pop_size, "seed": self.seed + 1, "bounds": [self.lower.tolist(), self.upper.tolist()],
                    "CMA_diagonal": self.diagonal(), "verbose": -9, "verb_log": 0, "verb_disp": 0}
            self.es = cma.CMAEvolutionStrategy(X[int(np.argmin(f))].tolist(), sigma, opts)
            self._first = False
        else:
            self.es.tell(list(X), f.tolist())
        super().tell(X, f)


@register_optimizer
class SepCMAES(CMAES):
    """Separable CMA-ES (cma's ``CMA_diagonal=True``): a diagonal covariance, linear cost in the dimension."""

    name = "sep-cmaes"

    def diagonal(self) -> bool:
        return True


__all__ = ["CMA_FULL_MAX_DIM", "OPTIMIZERS", "Optimizer", "OptimizerConfig", "de_min_pop", "make_optimizer", "non_dominated",
           "parse_de_variant", "register_optimizer"]
