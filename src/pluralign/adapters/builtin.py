"""The built-in adapter methods (each is one ``register_method`` call)."""

from __future__ import annotations

from torch import nn

from pluralign.adapters.config import (
    FullSettings,
    LoRASettings,
    MoELoRAConfig,
    PrefixSettings,
    register_method,
)
from pluralign.adapters.model import AdaptedModel
from pluralign.adapters.moe_lora import install_moe_lora, linear_module_names
from pluralign.errors import PluralignError


# ----------------------------------------------------------------------------- MoE-LoRA family
def _moe_builder(method: str):
    def build(model: nn.Module, cfg: MoELoRAConfig) -> AdaptedModel:
        install_moe_lora(model, cfg)
        return AdaptedModel(model, method, cfg)

    return build


register_method(
    "cuma", lambda: MoELoRAConfig(router_input="hidden+profile", shared_A=False), _moe_builder("cuma"),
    "CuMA: LoRA experts routed on the token state and the demographic profile embedding",
)
register_method(
    "mixlora", lambda: MoELoRAConfig(router_input="hidden", shared_A=False), _moe_builder("mixlora"),
    "MixLoRA: LoRA experts routed on the token state only",
)
register_method(
    "hydralora", lambda: MoELoRAConfig(router_input="hidden", shared_A=True), _moe_builder("hydralora"),
    "HydraLoRA: one shared A, one B per expert, routed on the token state",
)


# ----------------------------------------------------------------------------- peft baselines
def _check_targets(model: nn.Module, targets) -> None:
    found = {n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    missing = [t for t in targets if t not in found]
    if missing:
        raise PluralignError(
            f"target module(s) {', '.join(missing)} not found in {type(model).__name__} "
            f"(linear modules: {', '.join(linear_module_names(model))})",
            field="target_modules",
        )


def _lora_builder(method: str):
    def build(model: nn.Module, cfg: LoRASettings) -> AdaptedModel:
        from peft import LoraConfig, get_peft_model

        _check_targets(model, cfg.target_modules)
        for n, m in model.named_modules():
            if isinstance(m, nn.Linear) and n.split(".")[-1] in cfg.target_modules and cfg.r > min(m.in_features, m.out_features):
                raise PluralignError(f"rank r={cfg.r} is larger than layer {n} ({m.in_features} -> {m.out_features})", field="r")
        pc = LoraConfig(
            r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(cfg.target_modules),
            use_dora=cfg.use_dora or method == "dora", task_type="CAUSAL_LM", bias="none",
        )
        return AdaptedModel(get_peft_model(model, pc), method, cfg)

    return build


register_method("lora", LoRASettings, _lora_builder("lora"), "LoRA (peft) on the target linears")
register_method("dora", lambda: LoRASettings(use_dora=True), _lora_builder("dora"), "DoRA (peft): weight-decomposed LoRA")


def _prefix_builder(model: nn.Module, cfg: PrefixSettings) -> AdaptedModel:
    from peft import PrefixTuningConfig, get_peft_model

    pc = PrefixTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=cfg.num_virtual_tokens, prefix_projection=cfg.prefix_projection,
        encoder_hidden_size=cfg.encoder_hidden_size,
    )
    return AdaptedModel(get_peft_model(model, pc), "ptuning-v2", cfg)


register_method(
    "ptuning-v2", PrefixSettings, _prefix_builder,
    "P-tuning v2: trainable key/value prefixes in every layer (peft prefix tuning)",
)


# ----------------------------------------------------------------------------- full fine-tuning
def _full_builder(model: nn.Module, cfg: FullSettings) -> AdaptedModel:
    for p in model.parameters():
        p.requires_grad_(True)
    if not cfg.train_embeddings:
        emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        if emb is not None:
            emb.weight.requires_grad_(False)
    return AdaptedModel(model, "full", cfg)


register_method("full", FullSettings, _full_builder, "Full fine-tuning of every weight")
