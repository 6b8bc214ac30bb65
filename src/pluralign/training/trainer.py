"""Conditional SFT on the transformers :class:`~transformers.Trainer`.

Why the plain ``Trainer`` with an overridden ``compute_loss`` rather than TRL's ``SFTTrainer``:
our supervision is ONE label token per row (hard) or a distribution over the option label tokens
(soft), read at the answer position only; ``SFTTrainer`` is built around token-level language-model
loss on text completions (it tokenises and masks text itself and has no soft-label loss), and it
does not forward per-sample extra arguments such as ``profile_embeds`` to the model. The
``Trainer`` gives everything else unchanged: AdamW, warm-up + cosine schedule, gradient
accumulation, bf16 autocast, checkpoints with optimizer / scheduler / RNG state and resume,
progress bar, logging, and multi-GPU / multi-process data parallelism through accelerate
(``accelerate launch -m pluralign.cli.main train ...``).

Checkpoints hold only the trainable parameters (the adapter, or every weight for ``full``), so a
checkpoint of a LoRA run on an 8B model is megabytes, not gigabytes.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback

from pluralign.training.losses import answer_logits, option_logprobs, soft_cross_entropy

TRAINABLE_FILE = "trainable.safetensors"


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu").contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


class ConditionalTrainer(Trainer):
    """``Trainer`` whose loss is the (soft-label) cross-entropy of the answer label token.

    Batch keys (see :class:`pluralign.training.data.ConditionalCollator`): ``input_ids``,
    ``attention_mask``, ``option_ids``, ``option_mask``, ``target_probs`` and, for
    profile-routed adapters, ``profile_embeds`` (passed to the model's forward). An ``aux_loss``
    returned by the model (MoE load balancing, already scaled) is added to the loss.
    """

    def __init__(self, *args, soft_label_norm: str = "vocab", **kwargs):
        super().__init__(*args, **kwargs)
        self.soft_label_norm = soft_label_norm
        self.model_accepts_loss_kwargs = False  # our loss is a per-batch mean: Trainer divides by GA steps
        self._acc: dict[str, list[float]] = defaultdict(list)

    def train(self, *args, **kwargs):
        # gradients on whatever the caller did before (an evaluation in the same process may have
        # switched autograd off globally with torch.set_grad_enabled(False))
        with torch.enable_grad():
            return super().train(*args, **kwargs)

    # ------------------------------------------------------------------ loss
    @staticmethod
    def forward_extra(inputs: dict) -> dict:
        return {"profile_embeds": inputs["profile_embeds"]} if "profile_embeds" in inputs else {}

    def record(self, name: str, value) -> None:
        self._acc[name].append(float(value.detach()) if torch.is_tensor(value) else float(value))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        logits, aux = answer_logits(model, inputs, self.forward_extra(inputs))
        lp = option_logprobs(logits, inputs["option_ids"], inputs["option_mask"], self.soft_label_norm)
        loss = soft_cross_entropy(lp, inputs["target_probs"])
        self.record("ce", loss)
        if aux is not None and torch.is_tensor(aux):
            self.record("aux_loss", aux)
            loss = loss + aux.to(loss.dtype)
        return (loss, {"logits": logits}) if return_outputs else loss

    def log(self, logs: dict, start_time=None) -> None:
        for k, v in self._acc.items():
            if v:
                logs[k] = round(sum(v) / len(v), 6)
        self._acc.clear()
        super().log(logs, start_time)

    # ------------------------------------------------------------------ checkpoints: trainable weights only
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        from safetensors.torch import save_file

        os.makedirs(output_dir, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        tmp = os.path.join(output_dir, f".{TRAINABLE_FILE}.tmp")
        save_file(trainable_state(model), tmp, metadata={"format": "pt"})
        os.replace(tmp, os.path.join(output_dir, TRAINABLE_FILE))
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        from safetensors.torch import load_file

        from pluralign.errors import PluralignError

        model = model if model is not None else self.model
        f = os.path.join(resume_from_checkpoint, TRAINABLE_FILE)
        if not os.path.isfile(f):
            raise PluralignError("not a pluralign checkpoint (no trainable.safetensors)", file=resume_from_checkpoint)
        sd = load_file(f)
        own = {n: p for n, p in model.named_parameters() if p.requires_grad}
        missing, unexpected = set(own) - set(sd), set(sd) - set(own)
        if missing or unexpected:
            bad = sorted(missing or unexpected)[0]
            raise PluralignError(
                f"checkpoint does not match this model/config ({len(missing)} missing, {len(unexpected)} unexpected parameters, e.g. {bad})",
                file=resume_from_checkpoint,
            )
        with torch.no_grad():
            for n, p in own.items():
                if tuple(sd[n].shape) != tuple(p.shape):
                    raise PluralignError(f"checkpoint parameter {n} has shape {tuple(sd[n].shape)}, model has {tuple(p.shape)}", file=resume_from_checkpoint)
                p.copy_(sd[n].to(p.device, p.dtype))

    def _load_best_model(self) -> None:  # pragma: no cover - we never select a best model
        return None


class JsonlLogger(TrainerCallback):
    """Appends every log record (step, epoch, loss, learning rate, ...) as one JSON line."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rec = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float, str))}}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")
