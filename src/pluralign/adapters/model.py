"""The adapted model: one wrapper for every method, with a uniform forward signature.

``forward(input_ids, attention_mask, ..., profile_embeds=None, **kw)`` returns the backbone's
``CausalLMOutputWithPast`` with one extra attribute ``aux_loss``: the routers' load-balancing
(+ z) losses summed over layers, already weighted by their coefficients (a 0 tensor for methods
without routers). ``out.loss`` stays the language-model loss only: train on ``out.loss + out.aux_loss``.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import torch
from torch import nn

from pluralign.adapters.config import MoELoRAConfig
from pluralign.adapters.moe_lora import RoutingContext, checkpoint_context_fn, collect_aux_loss, routers_of, routing
from pluralign.errors import PluralignError


class AdaptedModel(nn.Module):
    """A backbone (or a peft model around it) plus the method's trainable parts."""

    def __init__(self, model: nn.Module, method: str, config: Any):
        super().__init__()
        self.model = model
        self.method = method
        self.adapter_config = config
        self.is_moe = isinstance(config, MoELoRAConfig)
        self.needs_profile = self.is_moe and config.uses_profile

    # ------------------------------------------------------------------ attribute passthrough
    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("model", "_modules", "_parameters", "_buffers"):
                raise
            return getattr(self._modules["model"], name)

    @property
    def config(self):
        return self._modules["model"].config

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(p for p in self.model.parameters()).dtype

    # ------------------------------------------------------------------ calls
    def _context(self, profile_embeds, attention_mask, collect_aux: bool) -> RoutingContext:
        if self.needs_profile:
            if profile_embeds is None:
                raise PluralignError(
                    f"method {self.method!r} routes on the demographic profile: pass profile_embeds "
                    "(Tensor[B, D], see ProfileEncoder)", field="profile_embeds"
                )
            if profile_embeds.dim() != 2 or profile_embeds.shape[-1] != self.adapter_config.profile_dim:
                raise PluralignError(
                    f"profile_embeds must have shape [batch, {self.adapter_config.profile_dim}], got {tuple(profile_embeds.shape)}",
                    field="profile_embeds",
                )
            profile_embeds = profile_embeds.to(self.device)
        else:
            profile_embeds = None
        mask = attention_mask if (attention_mask is not None and attention_mask.dim() == 2) else None
        ctx = RoutingContext(profile=profile_embeds, token_mask=mask, collect_aux=collect_aux)
        if profile_embeds is not None:
            # W_d d for every layer, once per call and outside any checkpointed region
            dt = self._activation_dtype()
            for key, router in self._routers().items():
                if router.uses_profile:
                    ctx.profile_parts[key] = router.profile_part(profile_embeds, dt)
        return ctx

    @contextlib.contextmanager
    def adapters_disabled(self):
        """Inside the block the model computes as its frozen backbone (MoE-LoRA: every expert
        branch and router is skipped; peft: ``disable_adapter``). Used by the backbone profile
        encoder, which reads what the LLM itself knows about a group."""
        if self.is_moe:
            with routing(RoutingContext(bypass=True)):
                yield
        elif hasattr(self.model, "disable_adapter"):
            with self.model.disable_adapter():
                yield
        else:
            raise PluralignError(f"method {self.method!r} has no frozen backbone to fall back on", field="method")

    # ------------------------------------------------------------------ the decoder-layer stack
    def decoder_layers(self) -> tuple[nn.Module, str, nn.ModuleList]:
        """``(parent, attribute, layers)``: the ModuleList of decoder layers (``model.layers`` of a
        Llama / Qwen decoder, found as the list with ``num_hidden_layers`` entries)."""
        hit = self.__dict__.get("_layers_cache")
        if hit is not None:
            return hit
        cfg = self.config.get_text_config() if hasattr(self.config, "get_text_config") else self.config
        n = getattr(cfg, "num_hidden_layers", None)
        for name, mod in self.model.named_modules():
            if isinstance(mod, nn.ModuleList) and len(mod) == n and name:
                parent_name, _, attr = name.rpartition(".")
                parent = self.model.get_submodule(parent_name) if parent_name else self.model
                hit = (parent, attr, mod)
                self.__dict__["_layers_cache"] = hit
                return hit
        raise PluralignError(f"cannot find the decoder layers of {type(self.model).__name__}", field="model")

    def first_adapted_layer(self) -> int:
        """Index of the lowest decoder layer holding a trainable parameter. Every layer below it,
        and the embeddings, are frozen and unadapted, so their output can be cached (the "trunk");
        raises when something below the layers (embeddings, prefixes) is trainable."""
        _, _, layers = self.decoder_layers()
        inside = set()
        first = None
        for i, layer in enumerate(layers):
            ps = [p for p in layer.parameters() if p.requires_grad]
            inside.update(id(p) for p in ps)
            if ps and first is None:
                first = i
        outside = [n for n, p in self.named_parameters() if p.requires_grad and id(p) not in inside]
        low = [n for n in outside if not any(k in n for k in ("lm_head", ".norm.", "final_layernorm", "model.norm"))]
        if first is None or low:
            raise PluralignError(
                f"method {self.method!r} trains parameters outside the decoder layers ({(low or ['none in the layers'])[0]}): "
                "no frozen trunk to cache", field="top_layers",
            )
        return first

    def _decoder_path(self) -> str:
        """Dotted name, under ``self.model``, of the decoder-layer ModuleList."""
        hit = self.__dict__.get("_layers_path")
        if hit is None:
            _, _, layers = self.decoder_layers()
            hit = next(name for name, mod in self.model.named_modules() if mod is layers)
            self.__dict__["_layers_path"] = hit
        return hit

    def _from_layer(self, start: int) -> nn.Module:
        """The backbone as it runs only decoder layers ``start..``, for one call: shallow copies of
        the modules on the path from ``self.model`` down to the decoder, the last holding a new
        ModuleList of layers ``start..``. Layers, weights, buffers and hooks are the model's own
        (parameter names and gradients unchanged); the shared model is never modified, so a call
        made meanwhile (another thread, a hook running the full model) sees every layer."""
        _, _, layers = self.decoder_layers()
        names = self._decoder_path().split(".")
        chain = [self.model]
        for name in names[:-1]:
            chain.append(chain[-1]._modules[name])
        child: nn.Module = nn.ModuleList(list(layers)[start:])
        for mod, name in zip(reversed(chain), reversed(names)):
            if "forward" in vars(mod):  # a forward bound to the module itself (e.g. accelerate's device hooks)
                raise PluralignError(
                    f"{type(mod).__name__} has a per-instance forward; the cached-trunk fast path cannot run only the "
                    "top layers of this model: train with --no-cache-trunk", field="cache_trunk",
                )
            view = copy.copy(mod)
            view.__dict__["_modules"] = {**mod._modules, name: child}
            child = view
        return child

    @torch.no_grad()
    def trunk_states(self, input_ids, attention_mask, position_ids, start: int) -> torch.Tensor:
        """Hidden states ``[B, T, H]`` entering decoder layer ``start``: the frozen trunk's output,
        computed by running the backbone up to that layer (the forward stops there)."""
        _, _, layers = self.decoder_layers()
        box: dict = {}

        class _Stop(Exception):
            pass

        def hook(module, args, kwargs):
            box["h"] = args[0] if args else kwargs["hidden_states"]
            raise _Stop

        handle = layers[start].register_forward_pre_hook(hook, with_kwargs=True)
        try:
            # no routing context: every layer below ``start`` is a plain frozen layer
            self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
        except _Stop:
            pass
        finally:
            handle.remove()
        if "h" not in box:
            raise PluralignError(f"decoder layer {start} was never reached", field="top_layers")
        return box["h"]

    def _routers(self):
        r = self.__dict__.get("_router_cache")
        if r is None:
            r = routers_of(self.model)
            self.__dict__["_router_cache"] = r
        return r

    def _activation_dtype(self) -> torch.dtype:
        emb = self.model.get_input_embeddings() if hasattr(self.model, "get_input_embeddings") else None
        return emb.weight.dtype if emb is not None else self.dtype

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor | None = None,
        profile_embeds: torch.Tensor | None = None,
        start_layer: int | None = None,
        **kwargs,
    ):
        """Run the backbone. ``profile_embeds`` ``[B, D]``: one demographic embedding per sample
        (required by profile-routed methods, ignored by the others). ``start_layer``: run only the
        decoder layers from this index on, from ``inputs_embeds`` = the hidden states entering it
        (see :meth:`trunk_states`); exact when no layer below it is adapted."""
        if start_layer:
            if inputs_embeds is None:
                raise PluralignError("start_layer needs inputs_embeds (the cached trunk states)", field="start_layer")
            backbone, input_ids = self._from_layer(start_layer), None  # from the cached states only
        else:
            backbone = self.model
        named = dict(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            past_key_values=past_key_values, inputs_embeds=inputs_embeds, labels=labels, use_cache=use_cache,
            logits_to_keep=logits_to_keep,
        )
        kwargs.update({k: v for k, v in named.items() if v is not None})
        if not self.is_moe:
            out = backbone(**kwargs)
            _set_aux(out, torch.zeros((), device=self.device))
            return out
        ctx = self._context(profile_embeds, attention_mask, collect_aux=self.training and torch.is_grad_enabled())
        try:
            with routing(ctx):
                out = backbone(**kwargs)
            _set_aux(out, collect_aux_loss(ctx, self.device))
        finally:  # a checkpoint recomputation in backward re-routes but must not collect again
            ctx.collect_aux = False
            ctx.router_logits.clear()
        return out

    @torch.no_grad()
    def generate(self, *args, profile_embeds: torch.Tensor | None = None, **kwargs):
        """``generate`` of the backbone; ``profile_embeds`` ``[B, D]`` routes every decode step."""
        if not self.is_moe:
            return self.model.generate(*args, **kwargs)
        ctx = self._context(profile_embeds, None, collect_aux=False)
        with routing(ctx):
            return self.model.generate(*args, **kwargs)

    # ------------------------------------------------------------------ training helpers
    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        """Non-reentrant checkpointing; MoE routing is re-entered in the recomputation."""
        kw = dict(gradient_checkpointing_kwargs or {})
        kw.setdefault("use_reentrant", False)
        if self.is_moe:
            if kw["use_reentrant"]:
                raise PluralignError("MoE-LoRA adapters need non-reentrant gradient checkpointing (use_reentrant=False)")
            kw["context_fn"] = checkpoint_context_fn
        inner = self.model
        inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kw)
        if hasattr(inner, "config"):
            inner.config.use_cache = False

    def gradient_checkpointing_disable(self) -> None:
        self.model.gradient_checkpointing_disable()

    def cast_adapters(self, dtype: torch.dtype) -> "AdaptedModel":
        """Store expert and router weights in ``dtype`` (e.g. the backbone's bf16 for inference:
        no per-call casts of fp32 master weights)."""
        from pluralign.adapters.moe_lora import MoELoRALinear, MoERouter

        for mod in self.modules():
            if isinstance(mod, MoERouter):
                mod.to(dtype)
            elif isinstance(mod, MoELoRALinear):
                mod.lora_A.data = mod.lora_A.data.to(dtype)
                mod.lora_B.data = mod.lora_B.data.to(dtype)
        return self

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.named_parameters() if p.requires_grad}

    def parameter_counts(self) -> tuple[int, int]:
        """(trainable, total) parameter counts."""
        seen, total, train = set(), 0, 0
        for p in self.parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            total += p.numel()
            train += p.numel() if p.requires_grad else 0
        return train, total


def _set_aux(out, aux) -> None:
    try:
        object.__setattr__(out, "aux_loss", aux)
    except (AttributeError, TypeError):  # tuple outputs (return_dict=False)
        pass


def uses_profile(model) -> bool:
    """True when the model's routers read the demographic profile (router input hidden+profile / profile)."""
    return bool(getattr(model, "needs_profile", False))


def gate_probs(model) -> dict[str, torch.Tensor]:
    """Per decoder layer (``model.layers.3`` ...), the gates of the last forward call:
    ``[B, T, E]`` (``[B, 1, E]`` for profile-only routing), rows summing to 1 with ``top_k`` non-zeros
    (before the alpha / r scaling). Empty for methods without routers."""
    return {k: r.last_gates for k, r in routers_of(model).items() if r.last_gates is not None}
