"""The soft-prompt search's settings, light to import (no torch, no numpy): the optimiser, the
population scoring, the VSM loss and the search. ``pluralign softprompt`` builds its flags, their
help, defaults and accepted values from these fields (:mod:`pluralign.cli.softprompt`); the
modules that use them re-export them (``pluralign.blackbox.search.SearchConfig``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pluralign._fields import helpfield, shared_field
from pluralign.errors import PluralignError


def _dimensions() -> tuple[str, ...]:
    from pluralign.data.loaders.hofstede import DIMENSIONS

    return tuple(DIMENSIONS)


@dataclass
class OptimizerConfig:
    # differential evolution (pymoo DE)
    de_variant: str = helpfield("DE/rand/1/bin", "DE strategy (pymoo) DE/SEL/N/CR: SEL = rand, best or target-to-best; N = 1 or 2 difference "
                                "vectors; CR = bin or exp crossover (e.g. DE/best/2/exp).",
                                check="de_variant", flag="--de-variant")
    de_F: float = helpfield(0.5, "DE differential weight F (mutation scale).", flag="--de-f", lo=0, hi=2, open_lo=True)
    de_CR: float = helpfield(0.9, "DE crossover probability CR.", flag="--de-cr", lo=0, hi=1)
    de_prob_mut: float = helpfield(0.0, "Extra polynomial-mutation probability pymoo applies after crossover (0 = classic DE).", cli=False)
    # particle swarm (pymoo PSO)
    pso_w: float = helpfield(0.9, "PSO inertia weight.", lo=0)
    pso_c1: float = helpfield(2.0, "PSO cognitive weight (personal best).", cli=False)
    pso_c2: float = helpfield(2.0, "PSO social weight (global best).", cli=False)
    pso_adaptive: bool = helpfield(True, "Let pymoo adapt w, c1, c2 during the run.", cli=False)
    # CMA-ES (cma)
    cma_sigma: float | None = helpfield(None, "CMA-ES initial step size, as a fraction of the mean bound width (unset: 0.3 in the full space, 0.1 in a "
                                              "random subspace: BBT's sigma = 1 for z in [-5, 5]).", lo=0, open_lo=True)
    cma_diagonal: bool | None = helpfield(None, "cmaes: separable (diagonal) covariance; None = when the search space has more than 1000 dimensions "
                                                "(the full T x hidden space), full covariance in a subspace. sep-cmaes is always diagonal.", cli=False)
    # NSGA-II (pymoo)
    nsga2_eta_crossover: float = helpfield(15.0, "NSGA-II SBX crossover distribution index.", cli=False)
    nsga2_eta_mutation: float = helpfield(20.0, "NSGA-II polynomial mutation distribution index.", cli=False)


@dataclass
class PopulationConfig:
    tokens: int = helpfield(10, "Virtual tokens T prepended to every prompt.", lo=1)
    batch_size: int = shared_field("batch_size", 64, "(candidate, prompt) rows per forward pass.")
    prefix_cache: bool = helpfield(True, "Run the token prefix shared by all prompts once per candidate and reuse its KV cache.",
                                   flag="--prefix-cache/--no-prefix-cache")
    group_cache: bool = helpfield(True, "Also run the stem shared by a group of prompts once per (candidate, group) (needs prefix_cache).", cli=False)
    chat_template: bool | None = helpfield(None, "Use the tokenizer's chat template (None = when it has one).", cli=False)
    contexts: tuple[str | None, ...] = helpfield((None,), "System messages, one set of 24 prompts each (personas / paraphrases); None = the "
                                                          "model's default. Item means are averaged over contexts.", cli=False)
    min_mass: float = helpfield(0.05, "Warn when the mean probability on the option labels is below this.", cli=False)
    memo: int = helpfield(0, "Remember the label log-probabilities of up to this many candidates (re-asked or shared initial populations "
                             "are not re-run); 0 = off.", cli=False)
    autocast: str = helpfield("off", "off, or bf16: run the matrix products of an fp32 model in bfloat16 (torch.autocast; about 1.9x faster on "
                                     "CPUs with AVX512-BF16 or AMX, about 5x slower on AVX2-only CPUs, where a warning says so; scores differ "
                                     "slightly from fp32). `pluralign softprompt` keeps the baselines, the best prompt's reported score and the "
                                     "reworded check in fp32 (`rescore_exact`).", choices=("off", "bf16"))


@dataclass
class VSMConfig:
    constants: dict[str, float] = field(
        default_factory=lambda: {d: 50.0 for d in _dimensions()},
        metadata={"help": "The constant C of each index (PDI, IDV, MAS, UAI, LTO, IVR); 50 centres a neutral respondent.", "cli": False},
    )
    reduction: str = helpfield("mean", "L1 loss over the target's measured dimensions: mean (comparable when some are missing) or sum.",
                               choices=("mean", "sum"))

    def __post_init__(self) -> None:
        import math

        dims = _dimensions()
        unknown = set(self.constants) - set(dims)
        if unknown:
            raise PluralignError(f"unknown dimension(s) {sorted(unknown)} in VSM constants (known: {', '.join(dims)})", field="constants")
        consts = {}
        for d in dims:
            v = self.constants.get(d, 50.0)
            try:
                f = float(v)
            except (TypeError, ValueError, OverflowError):
                raise PluralignError(f"the VSM constant of {d} must be a number, got {v!r}", field="constants") from None
            if isinstance(v, bool) or not math.isfinite(f):
                raise PluralignError(f"the VSM constant of {d} must be a finite number, got {v!r}", field="constants")
            consts[d] = f
        self.constants = consts
        if self.reduction not in ("mean", "sum"):
            raise PluralignError(f"reduction must be 'mean' or 'sum', got {self.reduction!r}", field="reduction")


@dataclass
class SearchConfig:
    optimizer: str = helpfield("de", "de (differential evolution, pymoo), pso (particle swarm, pymoo), cmaes (cma; full covariance up to 1000 "
                                     "dimensions, diagonal above), sep-cmaes (separable CMA-ES), nsga2 (pymoo NSGA-II: VSM loss and BLEnD "
                                     "accuracy, needs --knowledge).", choices="pluralign.blackbox.optimizers:OPTIMIZERS")
    pop: int = helpfield(32, "Population size (candidates per generation).", lo=2)
    gens: int = helpfield(50, "Generations after the initial population.", lo=0)
    seed: int = helpfield(0, "Seed of the initial population and of the optimiser.", lo=0)
    init_scale: float = helpfield(1.0, "Initial candidates: embeddings of random real tokens times this.", lo=0, open_lo=True)
    bound_scale: float = helpfield(1.0, "Bounds: per coordinate, the embedding matrix's minimum and maximum times this.", lo=0, open_lo=True)
    patience: int = helpfield(0, "Early stop after this many generations without improvement (0 = off).", lo=0)
    min_delta: float = helpfield(1e-3, "Smallest decrease of the best loss that counts as an improvement.", cli=False)
    target_loss: float = helpfield(0.0, "Stop once the best loss is at or below this.", cli=False)
    subspace_dim: int = helpfield(0, "Search a random subspace of this many dimensions, prompt = x_init + A z (BBT); 0 = the full T x hidden "
                                     "space (also used when the dimension is not below T x hidden).", lo=0, cli_default=500)
    subspace_scale: float = helpfield(1.0, "A ~ N(0, (scale x embedding std)^2 / d): a unit z moves each prompt coordinate by about scale x std.",
                                      lo=0, open_lo=True)
    subspace_bound: float = helpfield(5.0, "z is kept in [-bound, bound] per coordinate (BBT: 5).", lo=0, open_lo=True)
    opt: OptimizerConfig = field(default_factory=OptimizerConfig, metadata={"help": "Optimiser hyper-parameters.", "prefix": ""})


__all__ = ["OptimizerConfig", "PopulationConfig", "SearchConfig", "VSMConfig"]
