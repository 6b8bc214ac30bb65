"""DPO stage: prefer the human answer over the answer of a model collapsed to the mean.

What this is, honestly: a DPO-style stage we built on survey data; it is not a replication of a
published recipe. The CuMA paper applies DPO / GRPO only to preference datasets, not to
WorldValuesBench; survey answers carry no human preference pairs, so the pairs here are
constructed from the answers themselves (:func:`pluralign.training.data.encode_dataset` with a
``dpo_reference``, the training set; ``mean`` below is, per item, the mean over the training
groups of their answer distributions, i.e. what a mean-collapsed model says):

* individual task: chosen = the respondent's answer; rejected = the mode of ``mean`` when it
  differs from the answer, otherwise, for ordinal items, the option at the far end of the scale
  from the answer, and for nominal items (no scale, ``item.ordinal`` False) the option with the
  lowest target probability (one-hot targets: any other option; ties go to the lowest share in
  ``mean``, then the lowest index).
* distributional task: with ``h`` the group's human distribution and ``d = h - mean``, the pair is
  the (chosen, rejected) with ``h[chosen] > h[rejected]`` (the group really prefers chosen) that
  maximises ``d[chosen] - d[rejected]`` (chosen is under-predicted by the mean, rejected is
  over-predicted: the mean-collapse error). Rows where no such pair has a positive gap are
  skipped (``h == mean``, or the mean already over-weights the group's preferred option, which a
  preference pair cannot correct); the row's ``answer`` is the chosen option. A single pair per
  row is a weak signal about a whole distribution; the distributional SFT loss is the direct one.

Reference and policy are computed under identical conditions, so the implicit reward is exactly
zero at step 0: dropout is switched off in the whole model for the stage (every ``nn.Dropout``
gets ``p = 0``, as TRL's ``disable_dropout_in_model``; LoRA / expert dropout included), and the
reference log-probabilities are computed under the same bf16 autocast as training when training
runs in bf16.

Why not TRL's ``DPOTrainer``: our answers are single label tokens, so one forward pass over the
prompt gives the log-probabilities of both the chosen and the rejected answer (TRL concatenates and
runs two completions per pair), and profile-routed adapters need ``profile_embeds`` per sample,
which TRL does not forward to the model. The loss is the standard sigmoid DPO loss
(:func:`pluralign.training.losses.dpo_loss`); the reference policy is the model at the start of the
stage (the SFT adapter), whose log-probabilities are computed once before training, so no second
copy of the model is kept in memory.
"""

from __future__ import annotations

import torch

from pluralign.training.losses import answer_logits, dpo_loss, option_logprobs
from pluralign.training.trainer import ConditionalTrainer


def disable_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Set ``p = 0`` on every ``nn.Dropout`` of ``model`` (and zero float ``attention_dropout``
    attributes of attention modules), so train-mode and eval-mode forwards agree."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if isinstance(getattr(m, "attention_dropout", None), float):
            m.attention_dropout = 0.0
    return model


def reference_batches(model, rows, collator, *, batch_size: int = 8, device=None, bf16: bool = False):
    """``(chunk, batch)`` over ``rows`` for filling reference log-probs: the model in eval mode with
    dropout off, tensors on ``device``, each step under the bf16 autocast the trainer uses (with
    ``bf16``) and without gradients; the model's train mode is restored at the end."""
    disable_dropout(model)
    was_training = model.training
    model.eval()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    try:
        for s in range(0, len(rows), batch_size):
            chunk = rows[s : s + batch_size]
            batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in collator(chunk).items()}
            with torch.no_grad(), torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
                yield chunk, batch
    finally:
        model.train(was_training)


@torch.no_grad()
def reference_logprobs(model, rows, collator, *, batch_size: int = 8, device=None, bf16: bool = False) -> None:
    """Fill ``row.ref = (logp chosen, logp rejected)`` with the current (reference) model, dropout
    off and, with ``bf16``, under the bf16 autocast the trainer uses."""
    for chunk, batch in reference_batches(model, rows, collator, batch_size=batch_size, device=device, bf16=bf16):
        logits, _ = answer_logits(model, batch, ConditionalTrainer.forward_extra(batch))
        lp = option_logprobs(logits, batch["option_ids"], batch["option_mask"], "vocab")
        c = lp.gather(1, batch["chosen_index"][:, None])[:, 0]
        r = lp.gather(1, batch["rejected_index"][:, None])[:, 0]
        for row, a, b in zip(chunk, c.tolist(), r.tolist()):
            row.ref = (a, b)


def recorded_dpo_loss(trainer: ConditionalTrainer, pc, pr, ref_c, ref_r, beta: float, aux) -> torch.Tensor:
    """The sigmoid DPO loss of (policy, reference) log-probs of chosen and rejected, plus the
    router's auxiliary loss; every term logged through ``trainer.record`` (the survey-answer and
    the text DPO stage alike)."""
    loss, stats = dpo_loss(pc, pr, ref_c, ref_r, beta)
    trainer.record("dpo_loss", loss)
    for k, v in stats.items():
        trainer.record(k, v)
    if aux is not None and torch.is_tensor(aux):
        trainer.record("aux_loss", aux)
        loss = loss + aux.to(loss.dtype)
    return loss


class DPOCollator:
    """Wraps a :class:`ConditionalCollator`, adding the reference log-probabilities."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, rows):
        batch = self.inner(rows)
        batch["ref_chosen"] = torch.tensor([r.ref[0] for r in rows], dtype=torch.float32)
        batch["ref_rejected"] = torch.tensor([r.ref[1] for r in rows], dtype=torch.float32)
        return batch


class DPOConditionalTrainer(ConditionalTrainer):
    """:class:`ConditionalTrainer` with the DPO loss on (chosen, rejected) answer labels."""

    def __init__(self, *args, beta: float = 0.1, **kwargs):
        super().__init__(*args, **kwargs)
        self.beta = beta
        disable_dropout(self.model)  # the reference was computed without dropout: so is the policy

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        logits, aux = answer_logits(model, inputs, self.forward_extra(inputs))
        lp = option_logprobs(logits, inputs["option_ids"], inputs["option_mask"], "vocab")
        pc = lp.gather(1, inputs["chosen_index"][:, None])[:, 0]
        pr = lp.gather(1, inputs["rejected_index"][:, None])[:, 0]
        loss = recorded_dpo_loss(self, pc, pr, inputs["ref_chosen"], inputs["ref_rejected"], self.beta, aux)
        return (loss, {"logits": logits}) if return_outputs else loss
