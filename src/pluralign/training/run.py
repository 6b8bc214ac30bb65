"""End-to-end training run: data → split → prompts → adapter → Trainer → saved adapter.

Survey data runs here (:func:`train_survey`, stages ``sft`` and ``dpo`` registered in
:mod:`pluralign.training.stages`); preference / prompt data (PRISM, Community Alignment, BLEnD) and
the ``grpo`` stage run in :mod:`pluralign.training.textrun` (same output layout).
:func:`pluralign.training.train` runs either.

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
import math
from pathlib import Path

import torch

from pluralign._fields import flatten
from pluralign.errors import PluralignError
from pluralign.io import atomic_write_json, read_json
from pluralign.training.config import TrainConfig
from pluralign.training.stages import StageContext, get_stage, register_stage

log = logging.getLogger(__name__)

#: config fields that may change between a run and its resumption
RESUMABLE_CHANGES = {"strict", "out", "trunk_cache_dir", "resume", "progress", "save_steps", "save_total_limit", "logging_steps", "num_workers", "device"}


def resolve_split_by(cfg: TrainConfig, kind: str) -> str:
    from pluralign.data.splits import resolve_auto_split

    if cfg.split != "auto":
        return cfg.split
    return resolve_auto_split(kind)


def load_split(cfg: TrainConfig):
    """The dataset and its deterministic split (same function ``pluralign eval --split-from`` uses)."""
    from pluralign.data import load_dataset, split_dataset
    from pluralign.training.data import check_task

    ds = load_dataset(cfg.data, strict=True if cfg.strict else None)
    if cfg.countries or cfg.questions:
        ds = ds.filter(countries=cfg.countries or None, questions=cfg.questions or None)
    check_task(ds, cfg.task)
    if getattr(cfg, "enrich_profile", False):
        from pluralign.data.culture import enrich_dataset

        ds = enrich_dataset(ds, before=getattr(cfg, "map_before", None))
    by = resolve_split_by(cfg, ds.kind)
    sp = split_dataset(ds, by, test_frac=cfg.test_frac, seed=cfg.seed, test_units=cfg.test_units or None,
                       val_frac=getattr(cfg, "val_frac", 0.0), test_questions=getattr(cfg, "test_questions", None) or None,
                       question_test_frac=getattr(cfg, "question_test_frac", None))
    return ds, sp


def split_record(cfg: TrainConfig, ds, sp) -> dict:
    from pluralign.data.splits import unit_of
    from pluralign.training.data import eval_method_for

    units = sorted({unit_of(e, sp.by) for e in sp.test.examples}) if sp.country_part is None else \
        [f"country:{c}" for c in sp.units("country", "test")] + [f"question:{q}" for q in sp.units("question", "test")]
    from pluralign.data.fingerprint import data_files
    from pluralign.models.loading import model_files

    rec = {
        "data": cfg.data,
        "data_files": data_files(cfg.data),  # absolute path -> SHA-256: a resume refuses edited data
        "model_files": model_files(cfg.model),  # absolute path -> size + digest of both ends: a resume refuses a replaced model
        "by": sp.by,
        "requested_by": cfg.split,  # "auto" resolves through pluralign.data.splits.resolve_auto_split
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
        "enrich_profile": bool(getattr(cfg, "enrich_profile", False)),
        "test_questions": list(getattr(cfg, "test_questions", []) or []),
        "question_test_frac": getattr(cfg, "question_test_frac", None),
        "val_frac": float(getattr(cfg, "val_frac", 0.0)),
        "map_before": getattr(cfg, "map_before", None),
    }
    if sp.country_part is not None:
        rec["val_unit_list"] = [f"country:{c}" for c in sp.units("country", "val")] + \
            [f"question:{q}" for q in sp.units("question", "val")]
    if sp.by != "respondent":  # respondent ids stay out of run folders (licensed microdata)
        rec["test_unit_list"] = units
    return rec


#: split-record fields an --init-adapter run (DPO after SFT) must share with the new run
SPLIT_IDENTITY = ("data", "by", "test_frac", "seed", "test_units", "countries", "questions", "test_questions",
                  "question_test_frac", "val_frac")


def check_init_adapter_split(cfg: TrainConfig, rec: dict) -> None:
    """Refuse an ``--init-adapter`` trained on another data selection or split than this run
    (``rec``, its :func:`split_record`): its training rows could be this run's test rows."""
    from pluralign.adapters import read_adapter_config

    meta = read_adapter_config(cfg.init_adapter)
    old = (meta.get("extra") or {}).get("split")
    if not isinstance(old, dict):
        raise PluralignError(
            "--init-adapter records no training split (not saved by `pluralign train`?), so it cannot be checked "
            "against this run's held-out part", file=cfg.init_adapter, field="init_adapter",
        )
    for k in SPLIT_IDENTITY:
        a, b = old.get(k), rec.get(k)
        if k == "test_frac":
            a, b = (float(a) if a is not None else None), float(b)
        elif k == "val_frac":  # runs before the two-way split recorded none: 0
            a, b = float(a or 0.0), float(b or 0.0)
        elif isinstance(b, list):
            a = list(a or [])
        elif k == "data":  # a run before paths were recorded absolute: as it resolves from here
            from pluralign.data.fingerprint import absolute_spec

            a, b = absolute_spec(a), absolute_spec(b)
        if a != b:
            raise PluralignError(
                f"--init-adapter was trained on another data selection or split ({k}: {a!r} there, {b!r} here); "
                "use the same --data/--split/--test-frac/--seed/--test-units/--countries/--questions",
                file=cfg.init_adapter, field=k,
            )


def _check_out(cfg: TrainConfig, out: Path) -> str | None:
    """Refuse to clobber an earlier run; on --resume, return the newest COMPLETE checkpoint (and
    say on stderr which one), or raise :class:`RunFinished` when the run already ended."""
    import sys

    from pluralign.io import claim_output
    from pluralign.training.trainer import RunFinished, checkpoint_step, find_resumable

    ckdir = out / "checkpoints"
    prev_cfg = out / "train_config.json"
    claim_output(out, "train", field="--out", create=False)  # not an eval's or another kind's folder; one writer at a time
    last, skipped = find_resumable(ckdir)
    if not cfg.resume:
        if (out / "adapter").exists() or last is not None:
            raise PluralignError("output folder already holds a run; use --resume to continue it or another --out", file=out)
        return None  # at most incomplete checkpoints of a run that crashed before its first save: start afresh
    if not prev_cfg.exists():
        raise PluralignError("nothing to resume (no train_config.json)", file=out)
    old = read_json(prev_cfg)
    if not isinstance(old, dict):
        raise PluralignError("not a training configuration (expected a JSON object)", file=prev_cfg)
    old = flatten(TrainConfig, old)  # one key per setting; records before the GRPO block was nested are flat already
    new = cfg.flat_dict()
    # a field the earlier run's config lacks (added to TrainConfig since) counts as its default
    defaults = TrainConfig().flat_dict()
    from pluralign.data.fingerprint import absolute_spec, check_data_files

    for k in ("data", "model"):  # runs before paths were recorded absolute: as they resolve from here
        if isinstance(old.get(k), str):
            old[k] = absolute_spec(old[k]) if k == "data" else _absolute_path(old[k])
    diff = sorted(k for k in set(old) | set(new) if k not in RESUMABLE_CHANGES and old.get(k, defaults.get(k)) != new.get(k))
    if diff:
        raise PluralignError(
            f"--resume with a different configuration ({diff[0]}: {old.get(diff[0])!r} -> {new.get(diff[0])!r})",
            file=prev_cfg,
            field=diff[0],
        )
    split_file = out / "split.json"
    if split_file.is_file():
        rec = read_json(split_file)
        if isinstance(rec, dict) and isinstance(rec.get("data_files"), dict):
            check_data_files(rec["data_files"], record_file=split_file)
        if isinstance(rec, dict) and isinstance(rec.get("model_files"), dict):
            from pluralign.models.loading import check_model_files

            check_model_files(rec["model_files"], record_file=split_file)
    summary_file = out / "train_summary.json"
    if (out / "adapter").exists() and summary_file.exists():
        done = read_json(summary_file)
        if isinstance(done, dict) and isinstance(done.get("steps"), int) and done["steps"] >= int(done.get("max_steps") or 0):
            raise RunFinished(out, done)
    if last is None:
        why = "; ".join(f"{n}: {w}" for n, w in skipped)
        raise PluralignError(
            "nothing to resume (no complete checkpoint-* folder" + (f"; incomplete: {why}" if skipped else "")
            + "); start afresh without --resume", file=ckdir,
        )
    note = f" (passed over incomplete {', '.join(n for n, _ in skipped)})" if skipped else ""
    print(f"resuming from {last} (step {checkpoint_step(last)}){note}", file=sys.stderr, flush=True)
    return last


def _absolute_path(p: str) -> str:
    """A local path made absolute; a hub id or short name (no such path here) as given."""
    return str(Path(p).resolve()) if p and Path(p).exists() else p


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
        warmup_steps=int(math.ceil(cfg.warmup_ratio * cfg.steps)),  # an int: transformers 4.x reads a float < 1 as 0 steps
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


def build_trainer(
    model, tok, rows, cfg: TrainConfig, out: Path, *, profile_encoder=None, device: str = "cpu", bf16: bool = False,
    start_layer: int | None = None,
):
    """A ready Trainer of the survey stage ``cfg.stage`` (:class:`ConditionalTrainer` for ``sft``,
    the DPO trainer for ``dpo``) over encoded ``rows``. ``profile_encoder`` (or None) supplies
    ``profile_embeds``; ``start_layer``: the rows carry cached trunk states and batches run only the
    layers from there on."""
    from pluralign.training.data import ConditionalCollator, RowDataset, profile_table
    from pluralign.training.trainer import JsonlLogger

    table = profile_table(profile_encoder, rows) if profile_encoder is not None else None
    collator = ConditionalCollator(
        tok.pad_token_id, hard_labels=cfg.task == "individual", profile_table=table, start_layer=start_layer
    )
    args = make_training_args(cfg, out, device=device, bf16=bf16)
    common = dict(model=model, args=args, train_dataset=RowDataset(rows), callbacks=[JsonlLogger(out / "log.jsonl")])
    ctx = StageContext(cfg=cfg, model=model, tok=tok, rows=rows, common=common, collator=collator, device=device, bf16=bf16)
    return get_stage(cfg.stage, "survey").trainer(ctx)


def build_model(cfg: TrainConfig):
    """The backbone with the run's adapter, as every training stage uses it: ``(model, tok, encoder
    or None, spec, routed, device, bf16, n_trainable)``."""
    from pluralign.models import load_backbone
    from pluralign.models.loading import parse_dtype, pick_device
    from pluralign.training.methods import build_trainable, encoder_spec, make_profile_encoder, method_uses_profile

    device = pick_device(cfg.device)
    if cfg.dtype == "auto":
        load_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    else:
        load_dtype = parse_dtype(cfg.dtype, device)
    bf16 = load_dtype == torch.bfloat16
    base, tok = load_backbone(cfg.model, dtype=load_dtype, device=device)
    base.config.use_cache = False
    # the profile encoder comes first: its embedding size is the router's profile input
    spec = encoder_spec(cfg)
    encoder = make_profile_encoder(spec, backbone=(base, tok)) if method_uses_profile(cfg) else None
    model, _, routed = build_trainable(base, cfg, profile_dim=encoder.dim if encoder is not None else None)
    if encoder is not None and hasattr(encoder, "bind"):
        encoder.bind(model)  # the backbone encoder runs the adapted wrapper with its adapters off
    if not routed:
        encoder = None
    if cfg.gradient_checkpointing:  # non-reentrant; the adapter re-enters its routing in the recomputation
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if bf16:  # trainable weights in fp32 (AdamW state), frozen backbone in bf16, bf16 autocast
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.float()
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if n_trainable == 0:
        raise PluralignError(f"method {cfg.method!r} left no trainable parameter", field="method")
    return model, tok, encoder, spec, routed, device, bf16, n_trainable


def train_survey(cfg: TrainConfig) -> dict:
    """Run one training job on survey data described by ``cfg``; returns the run summary."""
    from transformers import set_seed

    from pluralign.training.data import eval_method_for, subsample
    from pluralign.training.methods import save_trained

    cfg.validate()
    stage = get_stage(cfg.stage, "survey")
    out = Path(cfg.out)
    ckpt = _check_out(cfg, out)
    set_seed(cfg.seed)
    ds, sp = load_split(cfg)
    if cfg.init_adapter and cfg.stage == "dpo":
        check_init_adapter_split(cfg, split_record(cfg, ds, sp))

    model, tok, encoder, spec, routed, device, bf16, n_trainable = build_model(cfg)

    rows = stage.rows(tok, sp, cfg)
    rows = subsample(rows, cfg.max_examples, cfg.seed)
    if not rows:
        raise PluralignError("no training rows", field="data")
    run_cfg = cfg
    if cfg.epochs:  # steps from epochs (the recorded config keeps what the user asked for)
        import dataclasses
        import math
        import os

        per_step = cfg.batch_size * cfg.grad_accum * max(1, int(os.environ.get("WORLD_SIZE", "1")))  # processes
        run_cfg = dataclasses.replace(cfg, steps=max(1, math.ceil(cfg.epochs * len(rows) / per_step)))

    from pluralign.io import claim_output

    claim_output(out, "train", field="--out")  # created and locked now that the run writes into it
    atomic_write_json(out / "train_config.json", cfg.to_dict())
    atomic_write_json(out / "split.json", split_record(cfg, ds, sp))
    start_layer, trunk_stats = None, None
    if cfg.top_layers and cfg.cache_trunk:
        from pluralign.training.fastpath import attach_trunk, verify_fast_path

        start_layer = model.first_adapted_layer()
        if start_layer > 0:
            log.info("caching the frozen trunk (layers 0-%d) for %d rows", start_layer - 1, len(rows))
            tdir = cfg.trunk_cache_dir
            if tdir == "auto":
                from pluralign.paths import cache_dir

                tdir = str(cache_dir() / "trunk")
            trunk_stats = attach_trunk(model, rows, start=start_layer, batch_size=max(8, cfg.batch_size), device=device,
                                       progress=cfg.progress, cache_dir=None if tdir in ("", "none") else tdir)
        else:
            start_layer = None
    trainer = build_trainer(model, tok, rows, run_cfg, out, profile_encoder=encoder, device=device, bf16=bf16,
                            start_layer=start_layer)
    if start_layer:
        trunk_stats["verify_max_logit_diff"] = verify_fast_path(model, rows, trainer.data_collator, device=device)
    result = trainer.train(resume_from_checkpoint=ckpt)
    totals = trainer.run_totals(result)  # the whole run, also across a resumption

    summary = {
        "method": cfg.method,
        "task": cfg.task,
        "stage": cfg.stage,
        "model": cfg.model,
        "steps": trainer.state.global_step,
        "resumed_from": ckpt,
        "train_loss": totals["train_loss"],
        "last_log": next((h for h in reversed(trainer.state.log_history) if "loss" in h), {}),
        "rows": len(rows),
        "profiles": len({r.profile.key() for r in rows}),
        "trainable_parameters": n_trainable,
        "profile_routed": routed,
        "seconds": totals["seconds"],
        "device": device,
        "processes": trainer.args.world_size,
        "split": sp.describe(),
        "dataset": {"name": ds.name, "dropped": dict(ds.meta.get("dropped") or {})},  # unusable cells the loader skipped
        "eval_method": eval_method_for(cfg.profile_prompt),
        "main_process": bool(trainer.args.should_save),
        "max_steps": run_cfg.steps,
        "epochs": run_cfg.steps * cfg.batch_size * cfg.grad_accum * trainer.args.world_size / len(rows),
        "profile_encoder": encoder.name if encoder is not None else None,
        "trunk_cache": trunk_stats,
    }
    if trainer.args.should_save:
        extra = {"train_config": cfg.to_dict(), "split": split_record(cfg, ds, sp), "eval_method": summary["eval_method"]}
        if encoder is not None:
            extra["profile_encoder"] = spec
        save_trained(trainer.accelerator.unwrap_model(trainer.model), out / "adapter", base_model=cfg.model, extra=extra)
        atomic_write_json(out / "train_summary.json", summary)
    return summary


# ----------------------------------------------------------------------------- the survey stages
def _survey_rows(tok, sp, cfg: TrainConfig, *, dpo: bool) -> list:
    from pluralign.training.data import encode_dataset

    return encode_dataset(
        tok, sp.train, profile_prompt=cfg.profile_prompt, labels=cfg.labels, chat_template=cfg.chat_template,
        max_length=cfg.max_length, dpo_reference=sp.train if dpo else None,
    )


@register_stage("sft", "survey", run=train_survey)
class SurveySFT:
    """Answer-token cross-entropy (individual task) or the soft-label loss (distributional task)."""

    @staticmethod
    def rows(tok, sp, cfg: TrainConfig) -> list:
        return _survey_rows(tok, sp, cfg, dpo=False)

    @staticmethod
    def trainer(ctx: StageContext):
        from pluralign.training.trainer import ConditionalTrainer

        return ConditionalTrainer(data_collator=ctx.collator, soft_label_norm=ctx.cfg.soft_label_norm,
                                  option_mass_weight=ctx.cfg.option_mass_weight, **ctx.common)


@register_stage("dpo", "survey", run=train_survey)
class SurveyDPO:
    """The human answer preferred over the mean-collapse answer."""

    @staticmethod
    def rows(tok, sp, cfg: TrainConfig) -> list:
        return _survey_rows(tok, sp, cfg, dpo=True)

    @staticmethod
    def trainer(ctx: StageContext):
        from pluralign.training.dpo import DPOCollator, DPOConditionalTrainer, reference_logprobs

        rows, cfg = ctx.rows, ctx.cfg
        if any(r.rejected is None for r in rows):
            raise PluralignError("DPO rows need rejected answers (encode with dpo_reference)", field="stage")
        if any(r.ref is None for r in rows):
            reference_logprobs(ctx.model, rows, ctx.collator, batch_size=cfg.batch_size, device=torch.device(ctx.device), bf16=ctx.bf16)
        return DPOConditionalTrainer(data_collator=DPOCollator(ctx.collator), beta=cfg.dpo_beta, **ctx.common)
