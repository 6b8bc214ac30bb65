"""Search in a random low-dimensional subspace (Sun et al. 2022, Black-Box Tuning).

A soft prompt of ``T x hidden`` numbers is written as ``x = clip(x_init + A z, lower, upper)``: ``z``
has ``d`` coordinates (``d`` ≈ 500 instead of ``T x hidden`` = 5 760 for SmolLM2 with T = 10),
``A[T*hidden, d]`` is a fixed random matrix and ``x_init`` the initial prompt (the embeddings of
random real tokens, the first member of the full-space initial population). As in BBT, the entries
of ``A`` are drawn from ``N(0, (scale * std_E)^2 / d)`` with ``std_E`` the standard deviation of the
model's embedding matrix: a ``z ~ N(0, I)`` then moves every prompt coordinate by about
``scale * std_E``, a token embedding's spread. ``z`` is kept in ``[-bound, bound]^d`` (BBT: 5).

:class:`SubspaceOptimizer` wraps *any* ask/tell optimiser of :mod:`~pluralign.blackbox.optimizers`
(DE, PSO, CMA-ES, NSGA-II): the inner optimiser sees only ``z`` (CMA-ES starts with BBT's step,
0.1 x the bound width, unless ``cma_sigma`` is set); ``ask()`` hands out full prompts,
so the search loop, the evaluator and the saved prompts are those of the full-space search.

``A`` is not written to checkpoints: it is regenerated from its seed when a checkpoint is loaded
and checked against a stored digest (a different numpy that draws other numbers is an error, not
a silently different run).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np

from pluralign.blackbox.optimizers import CMA_SIGMA_SUBSPACE, Optimizer, OptimizerConfig, make_optimizer
from pluralign.errors import PluralignError

#: mixed into the projection's seed so that A does not share a stream with the initial population
_A_STREAM = 0xBB7


class Subspace:
    """``x = clip(offset + A z, lower, upper)``; ``A[n, dim] ~ N(0, (scale * std)^2 / dim)``, seeded."""

    def __init__(self, dim: int, offset: np.ndarray, lower: np.ndarray, upper: np.ndarray, *, std: float,
                 scale: float = 1.0, bound: float = 5.0, seed: int = 0) -> None:
        if dim < 1:
            raise PluralignError(f"the subspace needs at least one dimension, got {dim}", field="subspace_dim")
        if not (std > 0 and np.isfinite(std)):
            raise PluralignError(f"the embedding standard deviation must be positive, got {std}", field="subspace_scale")
        if scale <= 0 or bound <= 0:
            raise PluralignError("subspace scale and bound must be positive", field="subspace_scale" if scale <= 0 else "subspace_bound")
        self.dim = int(dim)
        self.offset = np.asarray(offset, dtype=np.float64).reshape(-1)
        self.n = int(self.offset.size)
        self.lower = np.asarray(lower, dtype=np.float64).reshape(-1)
        self.upper = np.asarray(upper, dtype=np.float64).reshape(-1)
        self.std, self.scale, self.bound, self.seed = float(std), float(scale), float(bound), int(seed)
        self._A = self._draw()
        self.digest = self._digest(self._A)

    def _draw(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, _A_STREAM])
        A = rng.standard_normal((self.n, self.dim), dtype=np.float32)
        A *= np.float32(self.scale * self.std / np.sqrt(self.dim))
        return A

    @staticmethod
    def _digest(A: np.ndarray) -> str:
        return hashlib.sha1(np.ascontiguousarray(A).tobytes()).hexdigest()

    @property
    def A(self) -> np.ndarray:
        """The projection ``[n, dim]`` (float32)."""
        return self._A

    @property
    def z_lower(self) -> np.ndarray:
        return np.full(self.dim, -self.bound)

    @property
    def z_upper(self) -> np.ndarray:
        return np.full(self.dim, self.bound)

    def to_full(self, Z) -> np.ndarray:
        """``Z[P, dim]`` → prompts ``[P, n]`` (clipped to the full-space bounds)."""
        Z = np.atleast_2d(np.asarray(Z, dtype=np.float64))
        if Z.shape[1] != self.dim:
            raise PluralignError(f"subspace points must have {self.dim} coordinates, got {Z.shape[1]}", field="subspace_dim")
        X = self.offset + (Z.astype(np.float32) @ self._A.T).astype(np.float64)
        return np.clip(X, self.lower, self.upper)

    def initial_population(self, pop: int, seed: int) -> np.ndarray:
        """``z0[pop, dim]``: the offset itself (``z = 0``) and ``pop - 1`` draws of ``N(0, I)`` clipped to the bounds."""
        rng = np.random.default_rng([seed, _A_STREAM, 1])
        z0 = rng.standard_normal((pop, self.dim))
        z0[0] = 0.0
        return np.clip(z0, -self.bound, self.bound)

    # ---- pickling: A is regenerated from the seed and checked against the digest
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_A", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._A = self._draw()
        if self._digest(self._A) != self.digest:
            raise PluralignError("the checkpoint's random projection could not be regenerated from its seed (another numpy?); "
                                 "start the run again without --resume", field="subspace_dim")


class SubspaceOptimizer(Optimizer):
    """Any optimiser run on ``z``; ``ask()`` returns full prompts ``x = space.to_full(z)``, ``best_x``
    is a full prompt (``best_z`` its point in the subspace)."""

    def __init__(self, inner: Optimizer, space: Subspace) -> None:
        self.inner, self.space = inner, space
        super().__init__(space.to_full(inner.x0), space.lower, space.upper, inner.cfg, inner.seed)
        self.name = inner.name
        self.n_obj = getattr(inner, "n_obj", 1)
        self.best_z: np.ndarray | None = None
        self._Z: np.ndarray | None = None

    def ask(self) -> np.ndarray:
        self._Z = np.array(self.inner.ask(), dtype=np.float64)  # a copy: the inner optimiser may reuse its arrays
        return self.space.to_full(self._Z)

    def tell(self, X, f) -> None:
        if self._Z is None:
            raise RuntimeError("tell() without ask()")
        Z, before = self._Z, self.best_f
        self.inner.tell(Z.copy(), f)
        super().tell(X, f)
        if self.best_f < before:
            primary = np.asarray(f, dtype=np.float64)
            primary = primary[:, 0] if primary.ndim == 2 else primary
            self.best_z = Z[int(np.argmin(primary))].copy()
        self._Z = None


def make_search_optimizer(name: str, x0: np.ndarray, lower: np.ndarray, upper: np.ndarray, cfg=None, seed: int = 0, *,
                          subspace_dim: int = 0, embedding_std: float | None = None, subspace_scale: float = 1.0,
                          subspace_bound: float = 5.0) -> Optimizer:
    """``make_optimizer`` in the full space (``subspace_dim = 0``) or wrapped in a random subspace
    whose offset is ``x0[0]`` (the first initial candidate)."""
    if not subspace_dim:
        return make_optimizer(name, x0, lower, upper, cfg, seed=seed)
    if embedding_std is None:
        raise PluralignError("a subspace search needs the embedding standard deviation", field="subspace_dim")
    space = Subspace(subspace_dim, np.clip(x0[0], lower, upper), lower, upper, std=embedding_std, scale=subspace_scale,
                     bound=subspace_bound, seed=seed)
    z0 = space.initial_population(x0.shape[0], seed)
    cfg = cfg or OptimizerConfig()
    if cfg.cma_sigma is None:
        cfg = replace(cfg, cma_sigma=CMA_SIGMA_SUBSPACE)
    inner = make_optimizer(name, z0, space.z_lower, space.z_upper, cfg, seed=seed)
    return SubspaceOptimizer(inner, space)


__all__ = ["Subspace", "SubspaceOptimizer", "make_search_optimizer"]
