"""Soft prompts: T virtual-token embeddings prepended to a frozen causal LM's input embeddings.

:class:`SoftPromptModel` wraps a Hugging Face causal LM so that ``forward(input_ids, attention_mask,
position_ids, logits_to_keep, ...)`` sees ``[virtual tokens][prompt tokens]``: the attention mask is
extended with ones, positions are shifted by T (the virtual tokens take positions 0..T-1), and
returned logits cover the real tokens only. The existing :class:`~pluralign.evaluation.scoring.OptionScorer`
and ``pluralign eval --soft-prompt`` therefore work unchanged.

With left padding the layout is ``[virtual][pad ... pad][tokens]``: the padding is masked, so each
row computes exactly what ``[virtual][tokens]`` would (same positions, same visible keys).

A saved prompt is ``prompt.safetensors`` (tensor ``soft_prompt``, shape ``[T, hidden]``, fp32) plus
``prompt.json`` (model name, hidden size, tokens, country, loss, ...). :func:`save_soft_prompt`
writes both atomically; :func:`load_soft_prompt` checks them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pluralign.errors import PluralignError

PROMPT_FILE = "prompt.safetensors"
META_FILE = "prompt.json"
TENSOR_KEY = "soft_prompt"


def extend_inputs(
    prompt: torch.Tensor,
    embeds: torch.Tensor,
    attention_mask: torch.Tensor | None,
    position_ids: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``prompt[B or 1, T, H]`` + ``embeds[B, L, H]`` → (inputs_embeds, mask, positions) of length T+L."""
    B, L, _ = embeds.shape
    T = prompt.shape[1]
    dev = embeds.device
    if attention_mask is None:
        attention_mask = torch.ones(B, L, dtype=torch.long, device=dev)
    if position_ids is None:
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    sp = prompt.to(device=dev, dtype=embeds.dtype).expand(B, T, -1)
    x = torch.cat([sp, embeds], dim=1)
    mask = torch.cat([torch.ones(B, T, dtype=attention_mask.dtype, device=dev), attention_mask], dim=1)
    pos = torch.cat([torch.arange(T, device=dev).expand(B, T), position_ids.to(dev) + T], dim=1)
    return x, mask, pos


class SoftPromptModel(nn.Module):
    """A frozen causal LM with ``T`` virtual tokens in front of every input. ``T = 0`` is the base model."""

    def __init__(self, model: nn.Module, prompt: torch.Tensor | None = None, *, meta: dict | None = None) -> None:
        super().__init__()
        hidden = model.get_input_embeddings().weight.shape[1]
        if prompt is None:
            prompt = torch.zeros(0, hidden)
        prompt = torch.as_tensor(prompt).detach()
        if prompt.ndim != 2 or prompt.shape[1] != hidden:
            raise PluralignError(f"soft prompt of shape {list(prompt.shape)} does not fit a model with hidden size {hidden}", field="soft_prompt")
        self.model = model
        emb = model.get_input_embeddings().weight
        self.soft_prompt = nn.Parameter(prompt.to(device=emb.device, dtype=torch.float32), requires_grad=False)
        self.meta = dict(meta or {})

    @property
    def n_tokens(self) -> int:
        return int(self.soft_prompt.shape[0])

    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.soft_prompt.device

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ):
        T = self.n_tokens
        if T == 0:
            return self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              inputs_embeds=inputs_embeds, labels=labels, **kwargs)
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("input_ids or inputs_embeds is required")
            inputs_embeds = self.model.get_input_embeddings()(input_ids)
        x, mask, pos = extend_inputs(self.soft_prompt[None], inputs_embeds, attention_mask, position_ids)
        if labels is not None:
            labels = torch.cat([torch.full((labels.shape[0], T), -100, dtype=labels.dtype, device=labels.device), labels], dim=1)
        out = self.model(inputs_embeds=x, attention_mask=mask, position_ids=pos, labels=labels, **kwargs)
        if getattr(out, "logits", None) is not None and out.logits.shape[1] == x.shape[1]:
            out.logits = out.logits[:, T:]  # full logits: report the real tokens' positions only
        return out


# ------------------------------------------------------------------------------------- files
def save_soft_prompt(out_dir: str | Path, prompt: torch.Tensor, meta: dict) -> Path:
    """Write ``prompt.safetensors`` + ``prompt.json`` atomically into ``out_dir``."""
    from safetensors.torch import save

    from pluralign.io import atomic_write_bytes, atomic_write_json

    out = Path(out_dir)
    t = torch.as_tensor(prompt).detach().to("cpu", torch.float32).contiguous()
    meta = {**meta, "tokens": int(t.shape[0]), "hidden_size": int(t.shape[1]), "format": "pluralign.softprompt/1"}
    atomic_write_bytes(out / PROMPT_FILE, save({TENSOR_KEY: t}, metadata={"format": "pluralign.softprompt/1"}))
    atomic_write_json(out / META_FILE, meta)
    return out / PROMPT_FILE


def load_soft_prompt(path: str | Path) -> tuple[torch.Tensor, dict]:
    """Read a prompt saved by :func:`save_soft_prompt` (the folder or the ``.safetensors`` file)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    f = p / PROMPT_FILE if p.is_dir() else p
    if not f.exists():
        raise PluralignError(f"soft prompt not found (expected a folder with {PROMPT_FILE} or the file itself)", file=f)
    try:
        tensors = load_file(str(f))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise PluralignError(f"corrupted soft prompt file ({msg})", file=f) from None
    if TENSOR_KEY not in tensors:
        raise PluralignError(f"no tensor {TENSOR_KEY!r} in the file (found: {', '.join(tensors) or 'none'})", file=f, field=TENSOR_KEY)
    t = tensors[TENSOR_KEY].float()
    if t.ndim != 2 or not torch.isfinite(t).all():
        raise PluralignError(f"soft prompt must be a finite [tokens, hidden] matrix, got shape {list(t.shape)}", file=f, field=TENSOR_KEY)
    meta: dict = {}
    mf = f.with_name(META_FILE)
    if mf.exists():
        try:
            meta = json.loads(mf.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise PluralignError(f"invalid JSON ({e.msg})", file=mf, row=e.lineno) from None
        except (OSError, UnicodeDecodeError) as e:
            raise PluralignError(f"cannot read ({type(e).__name__})", file=mf) from None
        if not isinstance(meta, dict):
            raise PluralignError(f"must be a JSON object, got a {type(meta).__name__}", file=mf)
        if meta.get("hidden_size") not in (None, t.shape[1]) or meta.get("tokens") not in (None, t.shape[0]):
            raise PluralignError(
                f"metadata says {meta.get('tokens')}x{meta.get('hidden_size')} but the tensor is {t.shape[0]}x{t.shape[1]}", file=mf,
                field="hidden_size",
            )
    return t, meta


def load_soft_prompt_model(model: nn.Module, path: str | Path) -> SoftPromptModel:
    """Wrap ``model`` with the prompt saved at ``path``; a clear error when the hidden sizes differ."""
    t, meta = load_soft_prompt(path)
    hidden = model.get_input_embeddings().weight.shape[1]
    if t.shape[1] != hidden:
        raise PluralignError(
            f"soft prompt has hidden size {t.shape[1]} (made for {meta.get('model', 'another model')}) but the model has {hidden}",
            file=path, field="hidden_size",
        )
    return SoftPromptModel(model, t, meta=meta).eval()


__all__ = ["SoftPromptModel", "extend_inputs", "load_soft_prompt", "load_soft_prompt_model", "save_soft_prompt"]
