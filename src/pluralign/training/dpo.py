"""DPO stage: prefer the human answer over the mean-collapse answer.

Pairs come from the human answers (:func:`pluralign.training.data.encode_dataset` with a
``dpo_reference``): chosen = the respondent's answer (individual task) or the group's majority
answer (distributional task); rejected = the answer a model that collapsed to the mean of the
training groups would give (the mode of the mean distribution), or, when that coincides with the
chosen answer, the option at the far end of the scale.

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


@torch.no_grad()
def reference_logprobs(model, rows, collator, *, batch_size: int = 8, device=None) -> None:
    """Fill ``row.ref = (logp chosen, logp rejected)`` with the current (reference) model."""
    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    for s in range(0, len(rows), batch_size):
        chunk = rows[s : s + batch_size]
        batch = {k: v.to(device) for k, v in collator(chunk).items()}
        logits, _ = answer_logits(model, batch, ConditionalTrainer.forward_extra(batch))
        lp = option_logprobs(logits, batch["option_ids"], batch["option_mask"], "vocab")
        c = lp.gather(1, batch["chosen_index"][:, None])[:, 0]
        r = lp.gather(1, batch["rejected_index"][:, None])[:, 0]
        for row, a, b in zip(chunk, c.tolist(), r.tolist()):
            row.ref = (a, b)
    model.train(was_training)


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

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        logits, aux = answer_logits(model, inputs, self.forward_extra(inputs))
        lp = option_logprobs(logits, inputs["option_ids"], inputs["option_mask"], "vocab")
        pc = lp.gather(1, inputs["chosen_index"][:, None])[:, 0]
        pr = lp.gather(1, inputs["rejected_index"][:, None])[:, 0]
        loss, stats = dpo_loss(pc, pr, inputs["ref_chosen"], inputs["ref_rejected"], self.beta)
        self.record("dpo_loss", loss)
        for k, v in stats.items():
            self.record(k, v)
        if aux is not None and torch.is_tensor(aux):
            self.record("aux_loss", aux)
            loss = loss + aux.to(loss.dtype)
        return (loss, {"logits": logits}) if return_outputs else loss
