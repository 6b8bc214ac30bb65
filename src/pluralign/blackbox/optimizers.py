"""Gradient-free optimisers behind one ask/tell interface, built on pymoo (DE, PSO) and cma (CMA-ES).

Every optimiser is minimising, starts from the same initial population ``x0[pop, n]`` (the first
``ask()`` returns it exactly, so "the initial population's best" means the same thing for all),
keeps candidates inside per-coordinate bounds, is seeded, and pickles (checkpoint and resume).
Adding an optimiser is one class decorated with :func:`register_optimizer`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pluralign.errors import PluralignError


@dataclass
class OptimizerConfig:
    # differential evolution (pymoo DE)
    de_variant: str = field(default="DE/rand/1/bin", metadata={"help": "DE strategy DE/<selection>/<n_diffs>/<crossover> (pymoo): rand|best|target-to-best, 1|2, bin|exp."})
    de_F: float = field(default=0.5, metadata={"help": "DE differential weight F (mutation scale)."})
    de_CR: float = field(default=0.9, metadata={"help": "DE crossover probability CR."})
    de_prob_mut: float = field(default=0.0, metadata={"help": "Extra polynomial-mutation probability pymoo applies after crossover (0 = classic DE)."})
    # particle swarm (pymoo PSO)
    pso_w: float = field(default=0.9, metadata={"help": "PSO inertia weight."})
    pso_c1: float = field(default=2.0, metadata={"help": "PSO cognitive weight (personal best)."})
    pso_c2: float = field(default=2.0, metadata={"help": "PSO social weight (global best)."})
    pso_adaptive: bool = field(default=True, metadata={"help": "Let pymoo adapt w, c1, c2 during the run."})
    # CMA-ES (cma)
    cma_sigma: float = field(default=0.3, metadata={"help": "CMA-ES initial step size, as a fraction of the mean bound width."})
    cma_diagonal: bool = field(default=True, metadata={"help": "Separable (diagonal) CMA-ES: needed for thousands of dimensions (T x hidden)."})


class Optimizer:
    """Ask/tell minimiser. ``ask()`` → candidates ``[k, n]``; ``tell(X, f)`` with their losses."""

    name = "base"

    def __init__(self, x0: np.ndarray, lower: np.ndarray, upper: np.ndarray, cfg: OptimizerConfig, seed: int) -> None:
        self.x0 = np.clip(np.asarray(x0, dtype=np.float64), lower, upper)
        self.lower = np.asarray(lower, dtype=np.float64)
        self.upper = np.asarray(upper, dtype=np.float64)
        self.cfg = cfg
        self.seed = seed
        self.best_x: np.ndarray | None = None
        self.best_f = float("inf")
        self.n_evals = 0

    @property
    def pop_size(self) -> int:
        return int(self.x0.shape[0])

    def ask(self) -> np.ndarray:
        raise NotImplementedError

    def tell(self, X: np.ndarray, f: np.ndarray) -> None:
        f = np.asarray(f, dtype=np.float64)
        self.n_evals += len(f)
        i = int(np.argmin(f))
        if f[i] < self.best_f:
            self.best_f, self.best_x = float(f[i]), np.array(X[i], dtype=np.float64)


OPTIMIZERS: dict[str, type[Optimizer]] = {}


def register_optimizer(cls: type[Optimizer]) -> type[Optimizer]:
    OPTIMIZERS[cls.name] = cls
    return cls


def make_optimizer(name: str, x0, lower, upper, cfg: OptimizerConfig | None = None, seed: int = 0) -> Optimizer:
    if name not in OPTIMIZERS:
        raise PluralignError(f"unknown optimizer {name!r} (available: {', '.join(sorted(OPTIMIZERS))})", field="optimizer")
    return OPTIMIZERS[name](x0, lower, upper, cfg or OptimizerConfig(), seed)


class _PymooOptimizer(Optimizer):
    def __init__(self, x0, lower, upper, cfg, seed):
        super().__init__(x0, lower, upper, cfg, seed)
        from pymoo.core.problem import Problem
        from pymoo.core.termination import NoTermination

        self.problem = Problem(n_var=self.x0.shape[1], n_obj=1, xl=self.lower, xu=self.upper)
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
        f = np.asarray(f, dtype=np.float64)
        Evaluator().eval(StaticProblem(self.problem, F=f[:, None]), self._pending)
        self.algorithm.tell(infills=self._pending)
        self._pending = None
        super().tell(X, f)


@register_optimizer
class DifferentialEvolution(_PymooOptimizer):
    """pymoo DE: ``de_variant`` (e.g. DE/rand/1/bin), ``de_F``, ``de_CR``; greedy one-to-one selection."""

    name = "de"

    def _build(self):
        from pymoo.algorithms.soo.nonconvex.de import DE

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
class CMAES(Optimizer):
    """cma's CMAEvolutionStrategy (diagonal by default). The first ask returns ``x0``; the search
    distribution is then centred on its best member with step ``cma_sigma`` x mean bound width."""

    name = "cmaes"

    def __init__(self, x0, lower, upper, cfg, seed):
        super().__init__(x0, lower, upper, cfg, seed)
        self.es = None
        self._first = True

    def ask(self) -> np.ndarray:
        if self._first:
            return self.x0.copy()
        return np.asarray(self.es.ask(), dtype=np.float64)

    def tell(self, X, f) -> None:
        f = np.asarray(f, dtype=np.float64)
        if self._first:
            import cma

            sigma = float(self.cfg.cma_sigma * np.mean(self.upper - self.lower))
            opts = {"popsize": self.pop_size, "seed": self.seed + 1, "bounds": [self.lower.tolist(), self.upper.tolist()],
                    "CMA_diagonal": bool(self.cfg.cma_diagonal), "verbose": -9, "verb_log": 0, "verb_disp": 0}
            self.es = cma.CMAEvolutionStrategy(X[int(np.argmin(f))].tolist(), sigma, opts)
            self._first = False
        else:
            self.es.tell(list(X), f.tolist())
        super().tell(X, f)


__all__ = ["OPTIMIZERS", "Optimizer", "OptimizerConfig", "make_optimizer", "register_optimizer"]
