"""Open-ended completions for training: prompts of :class:`~pluralign.data.preferences.PromptRecord`,
completion log-probabilities with the profile on the router, text SFT and sequence-level DPO.

The survey stages (:mod:`pluralign.training.data`, :mod:`pluralign.training.dpo`) train ONE label
token per row. Preference data (PRISM, Community Alignment, BLEnD) has free-text completions, so
these rows are ``prompt tokens + completion tokens``:

* a batch is packed as ``[left-padded prompts | right-padded completions]`` (:func:`pack`), one
  forward pass, position ids from the attention mask (left padding does not shift rotary
  positions, as in evaluation), ``logits_to_keep`` = the completion span only;
* ``profile_embeds`` ``[B, D]`` go to the adapted model's forward for profile-routed adapters, one
  row per sequence: for DPO the chosen and the rejected completion of a pair run in the same
  batch with the SAME profile row (:class:`TextCollator` stacks ``[chosen; rejected]`` and repeats
  the profile embeddings), so the router sees the rater's / region's profile for both;
* text SFT (:class:`TextSFTTrainer`): mean negative log-likelihood of the completion tokens (the
  chosen response; for BLEnD the region's most frequent answer), EOS included so the model learns
  to stop;
* sequence DPO (:class:`TextDPOTrainer`): the sigmoid DPO loss
  (:func:`pluralign.training.losses.dpo_loss`) on summed completion log-probabilities; the
  reference is the model at the start of the stage (the ``--init-adapter`` SFT model, or the
  fresh adapter, which equals the backbone), its log-probabilities computed once per pair, when the
  pair is first trained on, with the start-of-stage trainable weights swapped in (or beforehand
  with :func:`text_reference_logprobs`), dropout off in the whole model for the stage (so the implicit
  reward is exactly 0 at step 0, as in :mod:`pluralign.training.dpo`).

The prompt is the record's conversation with, when ``profile_prompt``, a system turn describing
the profile (:func:`pluralign.data.preferences.profile_system`), rendered with the model's chat
template (:func:`pluralign.models.generation.prompt_text`, tokens by
:func:`~pluralign.models.generation.encode_prompt`); what is trained is what ``pluralign
generate-eval`` generates from.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Sequence

import torch

from pluralign.data.preferences import PreferencePair, PromptRecord
from pluralign.data.profile import Profile
from pluralign.errors import PluralignError
from pluralign.models.generation import encode_prompt, prompt_text
from pluralign.training.dpo import recorded_dpo_loss
from pluralign.training.trainer import ConditionalTrainer


# --------------------------------------------------------------------------- prompts and tokens
def encode_completion(tok, text: str, max_tokens: int | None = None) -> list[int]:
    """Completion tokens + EOS (truncated to ``max_tokens`` including the EOS)."""
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if max_tokens is not None:
        ids = ids[: max(0, max_tokens - 1)]
    eos = tok.eos_token_id
    return ids + ([eos] if eos is not None else [])


@dataclass
class TextRow:
    """One encoded example: prompt + completion (SFT target / DPO chosen) [+ rejected]."""

    prompt_ids: list[int]
    completion_ids: list[int]
    profile: Profile
    record_id: str
    rejected_ids: list[int] | None = None
    ref: tuple[float, float] | None = None  # reference log-probs (chosen, rejected), DPO


def sft_targets(records: Sequence[PromptRecord], pairs: Sequence[PreferencePair]) -> list[tuple[PromptRecord, str]]:
    """``(record, completion)`` to imitate: each record's human answer when it has one (BLEnD:
    the most frequent group's first variant), else the distinct chosen completions of its pairs."""
    out: list[tuple[PromptRecord, str]] = []
    chosen: dict[str, list[str]] = {}
    for p in pairs:
        lst = chosen.setdefault(p.record.id, [])
        if p.chosen not in lst:
            lst.append(p.chosen)
    for r in records:
        if r.answers:
            out.append((r, r.answers[0][0]))
        else:
            out.extend((r, c) for c in chosen.get(r.id, []))
    return out


def encode_rows(tok, items, *, role: str, profile_prompt: bool = True, chat_template: bool = True,
                max_length: int | None = None, max_completion_tokens: int | None = 256) -> list[TextRow]:
    """Encode ``(record, completion)`` items (SFT) or :class:`PreferencePair` items (DPO)."""
    cache: dict[str, list[int]] = {}
    rows: list[TextRow] = []
    for it in items:
        if isinstance(it, PreferencePair):
            rec, comp, rej = it.record, it.chosen, it.rejected
        else:
            (rec, comp), rej = it, None
        if rec.id not in cache:
            cache[rec.id] = encode_prompt(tok, prompt_text(tok, rec, role=role, profile_prompt=profile_prompt, chat_template=chat_template), max_length)
        c = encode_completion(tok, comp, max_completion_tokens)
        r = encode_completion(tok, rej, max_completion_tokens) if rej is not None else None
        if len(c) <= 1 or (r is not None and len(r) <= 1):
            raise PluralignError("empty completion after tokenisation", field="chosen" if len(c) <= 1 else "rejected",
                                 file=None, row=rec.source_row)
        if r is not None and r == c:
            continue  # identical after truncation: no preference signal left
        rows.append(TextRow(cache[rec.id], c, rec.profile, rec.id, r))
    return rows


def pack(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """``[left-padded prompt | right-padded completion]`` per row: ``input_ids``, ``attention_mask``
    ``[B, P + L]``, ``completion_ids`` / ``completion_mask`` ``[B, L]``."""
    B = len(prompts)
    P = max(len(p) for p in prompts)
    L = max(1, max(len(c) for c in completions))
    ids = torch.full((B, P + L), int(pad_id), dtype=torch.long)
    att = torch.zeros((B, P + L), dtype=torch.long)
    cmask = torch.zeros((B, L), dtype=torch.float32)
    for b, (p, c) in enumerate(zip(prompts, completions)):
        ids[b, P - len(p) : P] = torch.tensor(list(p), dtype=torch.long)
        att[b, P - len(p) : P] = 1
        if len(c):
            ids[b, P : P + len(c)] = torch.tensor(list(c), dtype=torch.long)
            att[b, P : P + len(c)] = 1
            cmask[b, : len(c)] = 1.0
    return {"input_ids": ids, "attention_mask": att, "completion_ids": ids[:, P:].clone(), "completion_mask": cmask}


def completion_logps(model, batch: dict, extra: dict | None = None, *, temperature: float = 1.0):
    """``(per-token log-probs [B, L] of the completion tokens, aux_loss or None)`` in one forward
    pass (``logits_to_keep`` = the completion span + 1). Masked positions hold garbage: multiply
    by ``completion_mask``."""
    ids, att = batch["input_ids"], batch["attention_mask"]
    comp = batch["completion_ids"]
    L = comp.shape[1]
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    kw = dict(extra or {})
    try:
        out = model(input_ids=ids, attention_mask=att, position_ids=pos, logits_to_keep=L + 1, use_cache=False, **kw)
    except TypeError as e:
        if "logits_to_keep" not in str(e):
            raise
        out = model(input_ids=ids, attention_mask=att, position_ids=pos, use_cache=False, **kw)
    logits = out.logits[:, -(L + 1) : -1, :].float()
    if temperature != 1.0:
        logits = logits / temperature
    lp = torch.log_softmax(logits, dim=-1).gather(-1, comp.unsqueeze(-1)).squeeze(-1)
    aux = getattr(out, "aux_loss", None)
    return lp, aux


class TextCollator:
    """Packs :class:`TextRow` lists; with ``dpo``, ``[chosen rows; rejected rows]`` sharing each
    pair's profile row, and the reference log-probs."""

    def __init__(self, pad_token_id: int, *, profile_table: dict | None = None, dpo: bool = False):
        self.pad = int(pad_token_id)
        self.profile_table = profile_table
        self.dpo = dpo

    def __call__(self, rows: list[TextRow]) -> dict:
        if self.dpo:
            if any(r.rejected_ids is None for r in rows):
                raise PluralignError("DPO rows need a rejected completion", field="rejected")
            batch = pack([r.prompt_ids for r in rows] * 2, [r.completion_ids for r in rows] + [r.rejected_ids for r in rows], self.pad)
            if all(r.ref is not None for r in rows):
                batch["ref_chosen"] = torch.tensor([r.ref[0] for r in rows], dtype=torch.float32)
                batch["ref_rejected"] = torch.tensor([r.ref[1] for r in rows], dtype=torch.float32)
            else:
                batch["rows"] = list(rows)  # the trainer fills row.ref on first sight
        else:
            batch = pack([r.prompt_ids for r in rows], [r.completion_ids for r in rows], self.pad)
        if self.profile_table is not None:
            emb = torch.stack([self.profile_table[r.profile.key()] for r in rows])
            batch["profile_embeds"] = torch.cat([emb, emb]) if self.dpo else emb
        return batch


def _extra(inputs: dict) -> dict:
    return {"profile_embeds": inputs["profile_embeds"]} if "profile_embeds" in inputs else {}


class TextSFTTrainer(ConditionalTrainer):
    """Mean NLL of the completion tokens (prompt tokens are context only)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        lp, aux = completion_logps(model, inputs, _extra(inputs))
        m = inputs["completion_mask"].to(lp.dtype)
        loss = -(lp * m).sum() / m.sum().clamp(min=1.0)
        self.record("nll", loss)
        if aux is not None and torch.is_tensor(aux):
            self.record("aux_loss", aux)
            loss = loss + aux.to(loss.dtype)
        return (loss, {"logps": lp}) if return_outputs else loss


def snapshot_trainable(model) -> dict[str, torch.Tensor]:
    """A copy of the trainable weights (the reference policy of a DPO / GRPO stage)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@contextlib.contextmanager
def use_weights(model, state: dict[str, torch.Tensor]):
    """Inside the block the trainable weights of ``model`` are ``state`` (restored afterwards;
    pointer swaps, no copy of the frozen backbone)."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    saved = {}
    with torch.no_grad():
        for n, p in params.items():
            saved[n] = p.data
            p.data = state[n].to(device=p.device, dtype=p.dtype)
    try:
        yield
    finally:
        for n, p in params.items():
            p.data = saved[n]


class TextDPOTrainer(ConditionalTrainer):
    """Sigmoid DPO on summed completion log-probs. The reference log-probs come with the batch
    (rows precomputed by :func:`text_reference_logprobs`) or are computed when a row is first
    seen, with the start-of-stage weights swapped in (a copy of the trainable weights only), and
    cached in the row: a large preference set costs no reference pass over rows never trained on."""

    def __init__(self, *args, beta: float = 0.1, **kwargs):
        from pluralign.training.dpo import disable_dropout

        super().__init__(*args, **kwargs)
        self.beta = beta
        disable_dropout(self.model)
        self._ref_state = snapshot_trainable(self.model)

    def _reference(self, model, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        if "ref_chosen" in inputs:
            return inputs["ref_chosen"], inputs["ref_rejected"]
        with torch.no_grad(), use_weights(self.accelerator.unwrap_model(model), self._ref_state):
            lp, _ = completion_logps(model, inputs, _extra(inputs))
        seq = (lp * inputs["completion_mask"].to(lp.dtype)).sum(-1).float()
        B = seq.shape[0] // 2
        for row, c, r in zip(inputs.get("rows") or [], seq[:B].tolist(), seq[B:].tolist()):
            row.ref = (c, r)
        return seq[:B], seq[B:]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ref_c, ref_r = self._reference(model, inputs)
        lp, aux = completion_logps(model, inputs, _extra(inputs))
        seq = (lp * inputs["completion_mask"].to(lp.dtype)).sum(-1)
        B = seq.shape[0] // 2
        loss = recorded_dpo_loss(self, seq[:B], seq[B:], ref_c.to(seq), ref_r.to(seq), self.beta, aux)
        return (loss, {"logps": lp}) if return_outputs else loss


@torch.no_grad()
def text_reference_logprobs(model, rows: list[TextRow], collator: TextCollator, *, batch_size: int = 8, device=None,
                            bf16: bool = False) -> None:
    """Fill ``row.ref`` with the current (reference) model's summed log-probs of (chosen, rejected)."""
    from pluralign.training.dpo import reference_batches

    for chunk, batch in reference_batches(model, rows, collator, batch_size=batch_size, device=device, bf16=bf16):
        lp, _ = completion_logps(model, batch, _extra(batch))
        seq = (lp * batch["completion_mask"]).sum(-1).float().cpu()
        B = len(chunk)
        for r, c, j in zip(chunk, seq[:B].tolist(), seq[B:].tolist()):
            r.ref = (c, j)


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, rows: list):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        return self.rows[i]


__all__ = ["TextRow", "TextCollator", "TextSFTTrainer", "TextDPOTrainer", "pack", "completion_logps",
           "encode_completion", "encode_rows", "sft_targets", "text_reference_logprobs", "snapshot_trainable", "use_weights"]
