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
#: FFN linears of Llama-style decoders, and their attention linears
_FFN = ("gate_proj", "up_proj", "down_proj")
_ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")

register_method(
    # Li et al. 2024 (TUDB-Labs/MixLoRA): top-2 LoRA experts in the FFN, a linear gate on the MLP
    # input, independent plain LoRA on q/k/v/o, auxiliary load-balancing loss (coef 0.01)
    "mixlora",
    lambda: MoELoRAConfig(
        router_input="hidden", router="linear", shared_A=False, top_k=2, target_modules=_FFN,
        route_from="post_attention_layernorm", dense_modules=_ATTN, balance_coef=0.01,
    ),
    _moe_builder("mixlora"),
    "MixLoRA (Li et al. 2024): top-2 LoRA experts on gate/up/down with a linear router on the MLP input, "
    "plain LoRA on q/k/v/o, load-balancing loss",
)
register_method(
    # Tian et al. 2024 (Clin0212/HydraLoRA): per adapted linear one A and N B heads, mixed by a dense
    # softmax over a linear router on that linear's input; no top-k, no balance loss; the repository's
    # script adapts gate_proj, down_proj, up_proj
    "hydralora",
    lambda: MoELoRAConfig(
        router_input="hidden", router="linear", shared_A=True, top_k=0, target_modules=_FFN,
        route_from="module", balance_coef=0.0,
    ),
    _moe_builder("hydralora"),
    "HydraLoRA (Tian et al. 2024): per linear one shared A and N B heads mixed by a dense softmax of a "
    "linear router on that linear's input, on gate/up/down, no balance loss",
)
register_method(
    "mixlora-qv", lambda: MoELoRAConfig(router_input="hidden", shared_A=False), _moe_builder("mixlora-qv"),
    "The CuMA authors' MixLoRA baseline configuration: top-2 LoRA experts on q/v, MLP router on the attention input",
)
register_method(
    "hydralora-qv", lambda: MoELoRAConfig(router_input="hidden", shared_A=True), _moe_builder("hydralora-qv"),
    "The CuMA authors' HydraLoRA baseline configuration: shared A, one B per expert on q/v, top-2 MLP router "
    "on the attention input",
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
            layers_to_transform=list(cfg.layers_to_transform) if cfg.layers_to_transform is not None else None,
        )
        return AdaptedModel(get_peft_model(model, pc), method, cfg)

    return build


register_method("lora", LoRASettings, _lora_builder("lora"), "LoRA (peft) on the target linears")
register_method("dora", lambda: LoRASettings(use_dora=True), _lora_builder("dora"), "DoRA (peft): weight-decomposed LoRA")


def adapted_from_peft(peft_model: nn.Module) -> AdaptedModel:
    """An :class:`AdaptedModel` (method ``lora`` or ``dora``) around a peft LoRA model built
    elsewhere (the word-association trainers), with the settings that rebuild it: its resolved
    target modules (``all-linear`` becomes the last names of the modules it matched), rank, alpha,
    dropout, layers. For :func:`~pluralign.adapters.save_adapter`; ``peft_model`` is not changed."""
    pcs = getattr(peft_model, "peft_config", None) or {}
    pc = pcs.get("default")
    if len(pcs) != 1 or pc is None or getattr(pc.peft_type, "value", pc.peft_type) != "LORA":
        raise PluralignError("not a peft model with one LoRA adapter named 'default'", field="model")
    plain = dict(bias="none", rank_pattern={}, alpha_pattern={}, use_rslora=False, modules_to_save=None)
    odd = [k for k, v in plain.items() if (getattr(pc, k, v) or v) != v]
    if odd:
        raise PluralignError(f"a LoRA with {', '.join(odd)} set cannot be saved as a pluralign adapter", field="model")
    layers = pc.layers_to_transform
    cfg = LoRASettings(
        r=int(pc.r), alpha=float(pc.lora_alpha), dropout=float(pc.lora_dropout),
        # peft resolves all-linear into module paths; the names' last components rebuild the same set
        target_modules=tuple(sorted({t.rsplit(".", 1)[-1] for t in ([pc.target_modules] if isinstance(pc.target_modules, str)
                                                                    else pc.target_modules)})),
        use_dora=bool(pc.use_dora), layers_to_transform=None if layers is None else tuple([layers] if isinstance(layers, int) else layers),
    )
    return AdaptedModel(peft_model, "dora" if cfg.use_dora else "lora", cfg)


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
