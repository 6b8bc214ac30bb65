"""Adapters for conditional fine-tuning: a mixture of LoRA experts (CuMA / MixLoRA / HydraLoRA),
peft baselines (LoRA, DoRA, P-tuning v2) and full fine-tuning, behind one API.

    model = build_adapted_model(backbone, "cuma", adapter_config("cuma", n_experts=8, top_k=2))
    out = model(input_ids=ids, attention_mask=att, labels=labels, profile_embeds=emb)
    (out.loss + out.aux_loss).backward()
    save_adapter(model, "runs/cuma/adapter", base_model="smollm2-135m")
    model, profile_kwargs = load_adapter_for_eval(fresh_backbone, "runs/cuma/adapter")

A soft prompt (``pluralign softprompt``: virtual tokens found by the black-box search of
:mod:`pluralign.blackbox`) is an adapter too: :mod:`pluralign.adapters.softprompt` holds its folder
format (also a peft PromptTuning adapter) and :class:`SoftPromptModel`, the wrapper that runs a model
with it, so evaluation and serve load it from this floor.
"""

from __future__ import annotations

from pluralign.adapters import builtin  # noqa: F401  (registers the built-in methods before any lookup)
from pluralign.adapters.builtin import adapted_from_peft
from pluralign.adapters.checkpoint import (
    load_adapter,
    load_adapter_for_eval,
    read_adapter_config,
    read_adapter_weights,
    save_adapter,
    torch_file_problem,
    weights_problem,
)
from pluralign.adapters.config import (
    ADAPTER_METHODS,
    METHODS,
    FullSettings,
    LoRASettings,
    MoELoRAConfig,
    PrefixSettings,
    adapter_config,
    config_help,
    get_method,
    register_method,
)
from pluralign.adapters.model import AdaptedModel, gate_probs, uses_profile
from pluralign.adapters.moe_lora import MoELoRALinear, MoERouter
from pluralign.adapters.softprompt import SoftPromptModel, load_soft_prompt, load_soft_prompt_model, save_soft_prompt
from pluralign.errors import PluralignError


def build_adapted_model(model, method: str, config=None) -> AdaptedModel:
    """Make ``model`` (a causal LM; modified in place) ready to train with ``method``.

    MoE methods freeze the backbone and wrap the target linears with :class:`MoELoRALinear`;
    ``lora``/``dora``/``ptuning-v2`` go through peft; ``full`` trains every weight. ``config``:
    the method's config (see :func:`adapter_config`); default: the method's defaults."""
    m = get_method(method)
    if config is None:
        config = adapter_config(method)
    elif not isinstance(config, type(m.config_factory())):
        raise PluralignError(
            f"method {method!r} takes a {type(m.config_factory()).__name__}, got {type(config).__name__}", field="config"
        )
    else:
        from pluralign.adapters.config import validate_config

        validate_config(method, config)
    return m.builder(model, config)


__all__ = [
    "ADAPTER_METHODS", "METHODS", "AdaptedModel", "adapted_from_peft", "FullSettings", "LoRASettings", "MoELoRAConfig", "MoELoRALinear",
    "MoERouter", "PrefixSettings", "adapter_config", "build_adapted_model", "config_help", "gate_probs",
    "get_method", "load_adapter", "load_adapter_for_eval", "read_adapter_config", "read_adapter_weights", "register_method",
    "save_adapter", "torch_file_problem", "uses_profile", "weights_problem",
    "SoftPromptModel", "load_soft_prompt", "load_soft_prompt_model", "save_soft_prompt",
]
