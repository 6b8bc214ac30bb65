"""Losses on the answer position: hard / soft-label cross-entropy over option labels, and DPO.

All three read ONE position per row: the logits predicting the answer label token (the last
prompt token; rows are left-padded and end with the answer token, so it is position ``-2``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def answer_logits(model, batch: dict, extra: dict | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Forward pass returning ``(logits [B, V] predicting the answer token, aux_loss or None)``.

    Position ids follow the attention mask (left padding must not shift rotary positions, exactly
    as the evaluation scorer does); ``logits_to_keep=2`` avoids the full ``[B, L, V]`` logits."""
    ids, att = batch["input_ids"], batch["attention_mask"]
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    kw = dict(extra or {})
    if "inputs_embeds" in batch:  # cached-trunk fast path: run only the adapted top layers
        out = model(inputs_embeds=batch["inputs_embeds"], start_layer=batch["start_layer"], attention_mask=att,
                    position_ids=pos, logits_to_keep=2, use_cache=False, **kw)
        return out.logits[:, -2, :].float(), getattr(out, "aux_loss", None)
    try:
        out = model(input_ids=ids, attention_mask=att, position_ids=pos, logits_to_keep=2, use_cache=False, **kw)
    except TypeError as e:  # a wrapper without logits_to_keep
        if "logits_to_keep" not in str(e):
            raise
        out = model(input_ids=ids, attention_mask=att, position_ids=pos, use_cache=False, **kw)
    aux = getattr(out, "aux_loss", None)
    if aux is None and isinstance(out, dict):
        aux = out.get("aux_loss")
    return out.logits[:, -2, :].float(), aux


def option_logprobs(logits: torch.Tensor, option_ids: torch.Tensor, option_mask: torch.Tensor, norm: str = "vocab") -> torch.Tensor:
    """Log-probabilities ``[B, K]`` of the option label tokens (0 where masked).

    ``norm='vocab'``: log-softmax over the whole vocabulary; ``'options'``: renormalised over the
    row's option labels (the distribution evaluation reports)."""
    if norm == "vocab":
        lp = torch.log_softmax(logits, dim=-1).gather(1, option_ids)
    elif norm == "options":
        g = logits.gather(1, option_ids).masked_fill(~option_mask, float("-inf"))
        lp = torch.log_softmax(g, dim=-1)
    else:
        raise ValueError(f"unknown norm {norm!r}")
    return lp.masked_fill(~option_mask, 0.0)


def option_mass_nll(logits: torch.Tensor, option_ids: torch.Tensor, option_mask: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``-log m``, ``m`` the next-token probability mass on the row's option label
    tokens (the option-mass term). For any target ``t`` summing to 1,
    ``CE_options(t) + option_mass_nll = CE_vocab(t)``: the 'vocab' loss is the 'options' loss plus this
    term with weight 1."""
    lse_all = torch.logsumexp(logits, dim=-1)
    g = logits.gather(1, option_ids).masked_fill(~option_mask, float("-inf"))
    return (lse_all - torch.logsumexp(g, dim=-1)).mean()


def soft_cross_entropy(logprobs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``-sum_k target_k log p_k``; with one-hot targets this is the ordinary
    cross-entropy on the answer token (identical to a causal-LM loss with labels ``-100`` except
    the answer token)."""
    return -(target * logprobs).sum(-1).mean()


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
) -> tuple[torch.Tensor, dict]:
    """Sigmoid DPO loss (Rafailov et al. 2023): ``-log σ(β[(π_c - ref_c) - (π_r - ref_r)])``.

    Inputs are per-row log-probabilities of the chosen / rejected answers (single label tokens, so
    the sequence log-likelihood is one token's log-probability). Returns the mean loss and
    statistics (reward accuracy and margin)."""
    chosen_reward = beta * (policy_chosen - ref_chosen)
    rejected_reward = beta * (policy_rejected - ref_rejected)
    margin = chosen_reward - rejected_reward
    loss = -F.logsigmoid(margin).mean()
    stats = {
        "rewards/accuracy": (margin > 0).float().mean().item(),
        "rewards/margin": margin.mean().item(),
    }
    return loss, stats
