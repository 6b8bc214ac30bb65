"""Black-box soft-prompt alignment to Hofstede's cultural dimensions (VSM 2013).

The model stays frozen; T virtual-token embeddings are searched with gradient-free optimisers
(differential evolution, particle swarm, CMA-ES / separable CMA-ES; NSGA-II for the VSM loss and
BLEnD knowledge together) so that the model's answers to the 24 VSM 2013 items give a country's
published dimension scores, in the full T x hidden space or a random subspace (BBT).

* :mod:`~pluralign.blackbox.vsm`: index formulas, dimension scores, L1 loss;
* :mod:`~pluralign.blackbox.objective`: objectives that do not depend on the VSM constant C
  (C calibrated on other countries, between-country differences), the three item wordings, the
  batched scoring of several wordings at once;
* :mod:`~pluralign.adapters.softprompt`: :class:`SoftPromptModel`, saving / loading prompts (the
  prompt folder is an adapter, so it lives on the adapters floor; re-exported here);
* :mod:`~pluralign.blackbox.population`: batched scoring of a whole population (the hot loop);
* :mod:`~pluralign.blackbox.optimizers`: ask/tell optimisers on pymoo and cma;
* :mod:`~pluralign.blackbox.subspace`: the random-projection subspace around any optimiser;
* :mod:`~pluralign.blackbox.search`: the search loop with checkpoints, logs and plots;
* :mod:`~pluralign.blackbox.knowledge`: a BLEnD multiple-choice knowledge check.
"""

#: exported names and the module each is read from on first use (``import pluralign.blackbox`` and
#: its settings, :mod:`pluralign.blackbox.config`, stay light: the CLI builds its flags from them)
_EXPORTS = {
    **dict.fromkeys(("SoftPromptModel", "load_soft_prompt", "load_soft_prompt_model", "save_soft_prompt"), "pluralign.adapters.softprompt"),
    **dict.fromkeys(("DIMENSIONS", "country_target", "load_hofstede_scores", "load_vsm_items"), "pluralign.data.loaders.hofstede"),
}


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pluralign.blackbox' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)


__all__ = [
    "DIMENSIONS",
    "SoftPromptModel",
    "country_target",
    "load_hofstede_scores",
    "load_soft_prompt",
    "load_soft_prompt_model",
    "load_vsm_items",
    "save_soft_prompt",
]
