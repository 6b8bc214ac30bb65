"""Soft prompts: T virtual-token embeddings prepended to a frozen causal LM's input embeddings.

The prompt's file format and the model wrapper, on the adapters floor (a soft prompt is an adapter:
``pluralign eval`` and ``pluralign serve`` load it as they load one); the search that finds prompts
(``pluralign softprompt``) is :mod:`pluralign.blackbox`'s. ``pluralign.blackbox.softprompt`` re-exports
this module.

:class:`SoftPromptModel` wraps a Hugging Face causal LM so that ``forward(input_ids, attention_mask,
position_ids, logits_to_keep, ...)`` sees ``[virtual tokens][prompt tokens]``: the attention mask is
extended with ones, positions are shifted by T (the virtual tokens take positions 0..T-1), and
returned logits cover the real tokens only. The existing :class:`~pluralign.evaluation.scoring.OptionScorer`
and ``pluralign eval --soft-prompt`` therefore work unchanged.

With left padding the layout is ``[virtual][pad ... pad][tokens]``: the padding is masked, so each
row computes exactly what ``[virtual][tokens]`` would (same positions, same visible keys).

A saved prompt is ``prompt.safetensors`` (tensor ``soft_prompt``, shape ``[T, hidden]``, fp32) plus
``prompt.json`` (model name, hidden size, tokens, country, loss, ...), and the same prompt as a peft
PromptTuning adapter: ``adapter_config.json`` + ``adapter_model.safetensors`` (tensor
``prompt_embeddings``), the files ``PeftModel.save_pretrained`` writes, so that
``peft.PeftModel.from_pretrained(base, folder)`` applies it. :func:`save_soft_prompt` writes the four
files, each atomically; :func:`load_soft_prompt` checks them and reads ``prompt.safetensors``, or in
a folder without it a peft PromptTuning adapter (so folders saved before the peft files, and
PromptTuning adapters trained with peft, load alike).

peft puts the virtual tokens at positions ``0..T-1`` as :class:`SoftPromptModel` does but ignores
``position_ids`` (positions count from the first column): on unpadded or right-padded inputs both
compute the same logits (peft's start with the T virtual positions); under left padding only
:class:`SoftPromptModel` shifts each row's positions past its padding.
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
#: the peft PromptTuning adapter beside them (peft's file and tensor names)
PEFT_CONFIG_FILE = "adapter_config.json"
PEFT_WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_KEY = "prompt_embeddings"


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
def peft_prompt_config(tokens: int, hidden: int, *, model_config=None, base_model: str | None = None) -> dict:
    """The ``adapter_config.json`` that ``PeftModel.save_pretrained`` writes for a PromptTuning
    adapter of ``tokens`` virtual tokens on a causal LM: peft's own :class:`~peft.PromptTuningConfig`,
    filled from ``model_config`` (the backbone's config: layer and head counts) as
    ``get_peft_model`` fills it, in inference mode as ``save_pretrained`` leaves it. Without
    ``model_config`` those counts stay ``null`` (peft fills them from the base model when it loads
    the adapter; the prompt itself needs only ``token_dim``)."""
    from peft import PromptTuningConfig
    from peft.utils.other import _prepare_prompt_learning_config

    cfg = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=int(tokens), token_dim=int(hidden),
                             base_model_name_or_path=base_model or None, inference_mode=True)
    cfg.num_transformer_submodules = 1  # what PeftModel sets for a decoder-only model
    if model_config is not None:
        _prepare_prompt_learning_config(cfg, model_config)
    return {k: (list(v) if isinstance(v, set) else v) for k, v in cfg.to_dict().items()}


def save_soft_prompt(out_dir: str | Path, prompt: torch.Tensor, meta: dict, *, model_config=None) -> Path:
    """Write ``prompt.safetensors`` + ``prompt.json``, and the same prompt as a peft PromptTuning
    adapter (``adapter_model.safetensors`` + ``adapter_config.json``; ``model_config``: the
    backbone's config, for the counts peft records, see :func:`peft_prompt_config`), into
    ``out_dir``, each file atomically. Returns the ``prompt.safetensors`` path."""
    from safetensors.torch import save

    from pluralign.io import atomic_write_bytes, atomic_write_json, atomic_write_text

    out = Path(out_dir)
    t = torch.as_tensor(prompt).detach().to("cpu", torch.float32).contiguous()
    meta = {**meta, "tokens": int(t.shape[0]), "hidden_size": int(t.shape[1]), "format": "pluralign.softprompt/1"}
    peft_cfg = peft_prompt_config(t.shape[0], t.shape[1], model_config=model_config, base_model=meta.get("model"))
    atomic_write_bytes(out / PEFT_WEIGHTS_FILE, save({PEFT_KEY: t}, metadata={"format": "pt"}))  # peft's metadata
    atomic_write_text(out / PEFT_CONFIG_FILE, json.dumps(peft_cfg, indent=2, sort_keys=True))  # as peft writes it
    atomic_write_bytes(out / PROMPT_FILE, save({TENSOR_KEY: t}, metadata={"format": "pluralign.softprompt/1"}))
    atomic_write_json(out / META_FILE, meta)
    return out / PROMPT_FILE


def _read_tensors(f: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(f))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise PluralignError(f"corrupted soft prompt file ({msg})", file=f) from None


def _read_json_object(f: Path) -> dict:
    try:
        obj = json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise PluralignError(f"invalid JSON ({e.msg})", file=f, row=e.lineno) from None
    except (OSError, UnicodeDecodeError) as e:
        raise PluralignError(f"cannot read ({type(e).__name__})", file=f) from None
    if not isinstance(obj, dict):
        raise PluralignError(f"must be a JSON object, got a {type(obj).__name__}", file=f)
    return obj


def _load_peft_prompt(folder: Path) -> tuple[torch.Tensor, dict]:
    """A peft PromptTuning adapter's ``prompt_embeddings`` and a record (``model``: its
    ``base_model_name_or_path``)."""
    cf, wf = folder / PEFT_CONFIG_FILE, folder / PEFT_WEIGHTS_FILE
    cfg = _read_json_object(cf)
    if cfg.get("peft_type") != "PROMPT_TUNING":
        raise PluralignError(f"not a soft prompt: a {cfg.get('peft_type') or 'non-peft'} adapter config (a soft prompt folder "
                             f"has {PROMPT_FILE} or a peft PROMPT_TUNING adapter)", file=cf, field="peft_type")
    if cfg.get("num_transformer_submodules") not in (None, 1):
        raise PluralignError(f"a prompt for {cfg['num_transformer_submodules']} transformer submodules (an encoder-decoder "
                             "model); soft prompts are for decoder-only models", file=cf, field="num_transformer_submodules")
    if not wf.exists():
        raise PluralignError(f"the PromptTuning adapter has no {PEFT_WEIGHTS_FILE}", file=wf)
    tensors = _read_tensors(wf)
    if PEFT_KEY not in tensors:
        raise PluralignError(f"no tensor {PEFT_KEY!r} in the file (found: {', '.join(tensors) or 'none'})", file=wf, field=PEFT_KEY)
    t = tensors[PEFT_KEY]
    if t.ndim == 2 and cfg.get("num_virtual_tokens") not in (None, t.shape[0]):
        raise PluralignError(f"the config says {cfg['num_virtual_tokens']} virtual tokens but the tensor has {t.shape[0]} rows",
                             file=cf, field="num_virtual_tokens")
    return t, ({"model": cfg["base_model_name_or_path"]} if cfg.get("base_model_name_or_path") else {})


def load_soft_prompt(path: str | Path) -> tuple[torch.Tensor, dict]:
    """Read a prompt saved by :func:`save_soft_prompt` (the folder or the ``.safetensors`` file), or
    a folder holding only a peft PromptTuning adapter (``adapter_config.json`` +
    ``adapter_model.safetensors``, for a decoder-only model)."""
    p = Path(path)
    f = p / PROMPT_FILE if p.is_dir() else p
    if p.is_dir() and not f.exists() and (p / PEFT_CONFIG_FILE).exists():
        f, key = p / PEFT_WEIGHTS_FILE, PEFT_KEY
        t, meta = _load_peft_prompt(p)
    else:
        if not f.exists():
            raise PluralignError(f"soft prompt not found (expected a folder with {PROMPT_FILE}, or with a peft PromptTuning "
                                 f"adapter, or the file itself)", file=f)
        tensors = _read_tensors(f)
        key = TENSOR_KEY
        if key not in tensors:
            raise PluralignError(f"no tensor {key!r} in the file (found: {', '.join(tensors) or 'none'})", file=f, field=key)
        t, meta = tensors[key], {}
    t = t.float()
    if t.ndim != 2 or not torch.isfinite(t).all():
        raise PluralignError(f"soft prompt must be a finite [tokens, hidden] matrix, got shape {list(t.shape)}", file=f, field=key)
    mf = f.with_name(META_FILE)
    if mf.exists():
        meta = _read_json_object(mf)
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


__all__ = ["SoftPromptModel", "extend_inputs", "load_soft_prompt", "load_soft_prompt_model", "peft_prompt_config", "save_soft_prompt"]
