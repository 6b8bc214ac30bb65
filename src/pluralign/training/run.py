"""End-to-end training run: data → split → prompts → adapter → Trainer → saved adapter.

Output folder layout (``cfg.out``)::

    train_config.json   the TrainConfig (a resume must match it)
    split.json          how the held-out part was made (``pluralign eval --split-from OUT``)
    checkpoints/        resumable checkpoints (trainable weights, optimizer, scheduler, RNG)
    log.jsonl           one JSON line per logging step (loss, ce, aux_loss, learning rate)
    adapter/            the final adapter (``pluralign eval --adapter OUT/adapter``)
    train_summary.json  steps, final loss, seconds, rows
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import time
from pathlib import Path

import torch

from pluralign.errors import PluralignError
from pluralign.io import atomic_write_json, read_json
from pluralign.training.config import TrainConfig

log = logging.getLogger(__name__)

#: config fields that may change between a run and its resumption
RESUMABLE_CHANGES = {"resume", "progress", "save_steps", "save_total_limit", "logging_steps", "num_workers", "device"}


def resolve_split_by(cfg: TrainConfig, kind: str) -> str:
    if cfg.split != "auto":
        return cfg.split
    return "respondent" if kind == "individual" else "question"


def load_split(cfg: TrainConfig):
    """The dataset and its deterministic split (same function ``pluralign eval --split-from`` uses)."""
    from pluralign.data import load_dataset, split_dataset
    from pluralign.training.data import check_task

    ds = load_dataset(cfg.data)
    if cfg.countries or cfg.questions:
        ds = ds.filter(countries=cfg.countries or None, questions=cfg.questions or None)
    check_task(ds, cfg.task)
    by = resolve_split_by(cfg, ds.kind)
    sp = split_dataset(ds, by, test_frac=cfg.test_frac, seed=cfg.seed, test_units=cfg.test_units or None)
    return ds, sp


def split_record(cfg: TrainConfig, ds, sp) -> dict:
    from pluralign.data.splits import unit_of
    from pluralign.training.data import eval_method_for

    units = sorted({unit_of(e, sp.by) for e in sp.test.examples})
    rec = {
        "data": cfg.data,
        "by": sp.by,
        "test_frac": cfg.test_frac,
        "seed": cfg.seed,
        "test_units": list(cfg.test_units),
        "countries": list(cfg.countries),
        "questions": list(cfg.questions),
        "sizes": sp.describe(),
        "n_test_units": len(units),
        "test_units_sha256": hashlib.sha256("\n".join(units).encode()).hexdigest(),
        "eval_method": eval_method_for(cfg.profile_prompt),
        "labels": cfg.labels,
        "chat_template": cfg.chat_template,
    }
    if sp.by != "respondent":  # respondent ids stay out of run folders (licensed microdata)
        rec["test_unit_list"] = units
    return rec


def _check_out(cfg: TrainConfig, out: Path) -> str | None:
    """Refuse to clobber an earlier run; on --resume, return the latest checkpoint."""
    from transformers.trainer_utils import get_last_checkpoint

    ckdir = out / "checkpoints"
    prev_cfg = out / "train_config.json"
    if not cfg.resume:
        if (out / "adapter").exists() or (ckdir.exists() and any(ckdir.iterdir())):
            raise PluralignError("output folder already holds a run; use --resume to continue it or another --out", file=out)
        return None
    if not prev_cfg.exists():
        raise PluralignError("nothing to resume (no train_config.json)", file=out)
    old = read_json(prev_cfg)
    new = cfg.to_dict()
    diff = sorted(k for k in set(old) | set(new) if k not in RESUMABLE_CHANGES and old.get(k) != new.get(k))
    if diff:
        raise PluralignError(
            f"--resume with a different configuration ({diff[0]}: {old.get(diff[0])!r} -> {new.get(diff[0])!r})",
            file=prev_cfg,
            field=diff[0],
        )
    last = get_last_checkpoint(str(ckdir)) if ckdir.exists() else None
    if last is None:
        raise PluralignError("nothing to resume (no checkpoint-* folder)", file=ckdir)
    return last


def make_training_args(cfg: TrainConfig, out: Path, *, device: str, bf16: bool):
    from transformers import TrainingArguments

    report = ["tensorboard"] if importlib.util.find_spec("tensorboard") else []
    kw = dict(
        output_dir=str(out / "checkpoints"),
        max_steps=cfg.steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        lr_scheduler_type=cfg.scheduler,
        max_grad_norm=cfg.max_grad_norm,
        optim="adamw_torch",
        bf16=bf16,
        save_strategy="steps" if cfg.save_steps else "no",
        save_steps=cfg.save_steps or cfg.steps,
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        logging_dir=str(out / "tensorboard"),
        report_to=report,
        disable_tqdm=not cfg.progress,
        remove_unused_columns=False,
        dataloader_num_workers=cfg.num_workers,
        dataloader_pin_memory=device.startswith("cuda"),
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=device == "cpu",
        ddp_find_unused_parameters=False,
    )
    known = TrainingArguments.__dataclass_fields__
    return TrainingArguments(**{k: v for k, v in kw.items() if k in known})


def build_trainer(model, tok, rows, cfg: TrainConfig, out: Path, *, profile_encoder=None, device: str = "cpu", bf16: bool = False):
    """A ready :class:`ConditionalTrainer` (or DPO trainer for ``cfg.stage == 'dpo'``) over
    encoded ``rows``. ``profile_encoder`` (or None) supplies ``profile_embeds``."""
    from pluralign.training.data import ConditionalCollator, RowDataset, profile_table
    from pluralign.training.dpo import DPOCollator, DPOConditionalTrainer, reference_logprobs
    from pluralign.training.trainer import ConditionalTrainer, JsonlLogger

    table = profile_table(profile_encoder, rows) if profile_encoder is not None else None
    collator = ConditionalCollator(tok.pad_token_id, hard_labels=cfg.task == "individual", profile_table=table)
    args = make_training_args(cfg, out, device=device, bf16=bf16)
    common = dict(model=model, args=args, train_dataset=RowDataset(rows), callbacks=[JsonlLogger(out / "log.jsonl")])
    if cfg.stage == "dpo":
        if any(r.rejected is None for r in rows):
            raise PluralignError("DPO rows need rejected answers (encode with dpo_reference)", field="stage")
        if any(r.ref is None for r in rows):
            reference_logprobs(model, rows, collator, batch_size=cfg.batch_size, device=torch.device(device))
        return DPOConditionalTrainer(data_collator=DPOCollator(collator), beta=cfg.dpo_beta, **common)
    return ConditionalTrainer(data_collator=collator, soft_label_norm=cfg.soft_label_norm, **common)


def train(cfg: TrainConfig) -> dict:
    """Run one training job described by ``cfg``; returns the run summary."""
    from transformers import set_seed

    from pluralign.models.loading import parse_dtype, pick_device
    from pluralign.models import load_backbone
    from pluralign.training.data import encode_dataset, eval_method_for, subsample
    from pluralign.training.methods import build_trainable, make_profile_encoder, save_trained

    cfg.validate()
    out = Path(cfg.out)
    ckpt = _check_out(cfg, out)
    set_seed(cfg.seed)
    ds, sp = load_split(cfg)

    device = pick_device(cfg.device)
    if cfg.dtype == "auto":
        load_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    else:
        load_dtype = parse_dtype(cfg.dtype, device)
    bf16 = load_dtype == torch.bfloat16
    base, tok = load_backbone(cfg.model, dtype=load_dtype, device=device)
    base.config.use_cache = False
    model, adapter_conf, routed = build_trainable(base, cfg)
    if cfg.gradient_checkpointing:  # non-reentrant; the adapter re-enters its routing in the recomputation
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if bf16:  # trainable weights in fp32 (AdamW state), frozen backbone in bf16, bf16 autocast
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.float()
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if n_trainable == 0:
        raise PluralignError(f"method {cfg.method!r} left no trainable parameter", field="method")

    rows = encode_dataset(
        tok, sp.train, profile_prompt=cfg.profile_prompt, labels=cfg.labels, chat_template=cfg.chat_template,
        max_length=cfg.max_length, dpo_reference=sp.train if cfg.stage == "dpo" else None,
    )
    rows = subsample(rows, cfg.max_examples, cfg.seed)
    encoder = make_profile_encoder(cfg.profile_encoder) if routed else None

    atomic_write_json(out / "train_config.json", cfg.to_dict())
    atomic_write_json(out / "split.json", split_record(cfg, ds, sp))
    trainer = build_trainer(model, tok, rows, cfg, out, profile_encoder=encoder, device=device, bf16=bf16)
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=ckpt)
    seconds = time.perf_counter() - t0

    summary = {
        "method": cfg.method,
        "task": cfg.task,
        "stage": cfg.stage,
        "model": cfg.model,
        "steps": trainer.state.global_step,
        "resumed_from": ckpt,
        "train_loss": float(result.training_loss),
        "last_log": next((h for h in reversed(trainer.state.log_history) if "loss" in h), {}),
        "rows": len(rows),
        "profiles": len({r.profile.key() for r in rows}),
        "trainable_parameters": n_trainable,
        "profile_routed": routed,
        "seconds": seconds,
        "device": device,
        "processes": trainer.args.world_size,
        "split": sp.describe(),
        "eval_method": eval_method_for(cfg.profile_prompt),
        "main_process": bool(trainer.args.should_save),
    }
    if trainer.args.should_save:
        extra = {"train_config": cfg.to_dict(), "split": split_record(cfg, ds, sp), "eval_method": summary["eval_method"]}
        if encoder is not None:
            extra["profile_encoder"] = cfg.profile_encoder
        save_trained(trainer.accelerator.unwrap_model(trainer.model), out / "adapter", base_model=cfg.model, extra=extra)
        atomic_write_json(out / "train_summary.json", summary)
    return summary
