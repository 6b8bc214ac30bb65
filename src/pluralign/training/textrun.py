"""Training runs on open-ended preference / prompt data (PRISM, Community Alignment, BLEnD):
text SFT, sequence DPO and GRPO, with the same output layout as survey runs
(:mod:`pluralign.training.run`): ``train_config.json``, ``split.json``, ``checkpoints/``,
``log.jsonl``, ``adapter/``, ``train_summary.json``.

* ``--stage sft``: imitate each record's human answer (BLEnD) or its chosen responses (PRISM /
  Community Alignment) (:class:`pluralign.training.text.TextSFTTrainer`);
* ``--stage dpo``: the chosen ≻ rejected pairs, reference = the model at the start of the stage
  (:class:`pluralign.training.text.TextDPOTrainer`);
* ``--stage grpo``: sampled groups scored by the ``--reward`` functions
  (:mod:`pluralign.training.grpo`); ``--batch-size`` counts prompts.

The split is by unit (``--split auto`` = question: the BLEnD question id, shared across regions,
or the conversation; also profile, country, respondent); ``split.json`` records it and
``pluralign generate-eval --split-from RUN`` rebuilds the held-out part.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from pluralign.errors import PluralignError
from pluralign.io import atomic_write_json
from pluralign.training.config import TrainConfig
from pluralign.training.run import _check_out, build_model, check_init_adapter_split, make_training_args
from pluralign.training.stages import StageContext, get_stage, register_stage

log = logging.getLogger(__name__)


def load_text_split(cfg_or_rec, *, strict: bool | None = None):
    """``(dataset, split)`` of a TrainConfig, or of a ``split.json`` record (``generate-eval --split-from``)."""
    from pluralign.data.loaders import load_preferences

    get = (lambda k, d=None: cfg_or_rec.get(k, d)) if isinstance(cfg_or_rec, dict) else (lambda k, d=None: getattr(cfg_or_rec, k, d))
    ds = load_preferences(get("data"), strict=strict)
    if get("countries") or get("questions"):
        ds = ds.filter(countries=get("countries") or None, questions=get("questions") or None)
    by = get("by") or get("split") or "auto"
    sp = ds.split(by, test_frac=float(get("test_frac", 0.2)), seed=int(get("seed", 0)), test_units=get("test_units") or None)
    return ds, sp


def text_split_record(cfg: TrainConfig, ds, sp) -> dict:
    from pluralign.data.preferences import unit_of_record

    units = sorted({unit_of_record(r, sp.by) for r in sp.test.records})
    from pluralign.data.fingerprint import data_files

    rec = {
        "data": cfg.data, "data_files": data_files(cfg.data), "by": sp.by, "requested_by": cfg.split, "test_frac": cfg.test_frac, "seed": cfg.seed,
        "test_units": list(cfg.test_units), "countries": list(cfg.countries), "questions": list(cfg.questions),
        "sizes": sp.describe(), "n_test_units": len(units),
        "test_units_sha256": hashlib.sha256("\n".join(units).encode()).hexdigest(),
        "eval_method": "generate", "kind": "preference", "profile_role": ds.profile_role,
        "profile_prompt": cfg.profile_prompt, "chat_template": cfg.chat_template,
    }
    if sp.by != "respondent":  # rater ids stay out of run folders
        rec["test_unit_list"] = units
    return rec


def grpo_rows(tok, records, *, role: str, profile_prompt: bool, chat_template: bool, max_length: int | None):
    from pluralign.models.generation import encode_prompt, prompt_text
    from pluralign.training.grpo import PromptRow

    rows = []
    for r in records:
        text = prompt_text(tok, r, role=role, profile_prompt=profile_prompt, chat_template=chat_template)
        rows.append(PromptRow(prompt_ids=encode_prompt(tok, text, max_length), prompt=r.prompt, key=r.id, profile=r.profile,
                              columns={"answers": list(r.answers) or None, "answer_counts": list(r.answer_counts) or None,
                                       "record_ids": r.id, "units": r.unit}))
    return rows


def judge_factory(cfg: TrainConfig, role: str = "user"):
    def make():
        from pluralign.evaluation.generate import make_judge

        return make_judge(model=cfg.judge_model or cfg.model, url=cfg.judge_url, api_model=cfg.judge_api_model or None,
                          device=cfg.device, dtype=cfg.dtype, role=role)

    return make


def train_text(cfg: TrainConfig) -> dict:
    """Run one text SFT / DPO / GRPO job on preference / prompt data; returns the run summary."""
    import dataclasses
    import math
    import os

    from transformers import set_seed

    from pluralign.training.data import profile_table, subsample
    from pluralign.training.methods import save_trained
    from pluralign.training.trainer import JsonlLogger
    from pluralign.training.text import ListDataset

    cfg.validate()
    stage = get_stage(cfg.stage, "text")
    out = Path(cfg.out)
    ckpt = _check_out(cfg, out)
    set_seed(cfg.seed)
    from pluralign.data.loaders import is_preference_spec

    if not is_preference_spec(cfg.data):
        raise PluralignError(f"stage {cfg.stage} on text needs preference / prompt data (prism:DIR, community-alignment:CSV, blend), "
                             f"not the survey data {cfg.data!r}", field="data")
    ds, sp = load_text_split(cfg, strict=True if cfg.strict else None)
    rec = text_split_record(cfg, ds, sp)
    if cfg.init_adapter:
        check_init_adapter_split(cfg, rec)
    model, tok, encoder, spec, routed, device, bf16, n_trainable = build_model(cfg)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    role = ds.profile_role
    enc_kw = dict(role=role, profile_prompt=cfg.profile_prompt, chat_template=cfg.chat_template, max_length=cfg.max_length)
    rows = stage.rows(tok, sp, cfg, source=ds.source, **enc_kw)
    rows = subsample(rows, cfg.max_examples, cfg.seed)
    if not rows:
        raise PluralignError("no training rows", field="data")
    run_cfg = cfg
    if cfg.epochs:
        per_step = cfg.batch_size * cfg.grad_accum * max(1, int(os.environ.get("WORLD_SIZE", "1")))
        run_cfg = dataclasses.replace(cfg, steps=max(1, math.ceil(cfg.epochs * len(rows) / per_step)))
    from pluralign.io import claim_output

    claim_output(out, "train", field="--out")  # created and locked now that the run writes into it
    atomic_write_json(out / "train_config.json", cfg.to_dict())
    atomic_write_json(out / "split.json", rec)
    table = profile_table(encoder, rows) if encoder is not None else None
    args = make_training_args(run_cfg, out, device=device, bf16=bf16)
    common = dict(model=model, args=args, train_dataset=ListDataset(rows), callbacks=[JsonlLogger(out / "log.jsonl")])
    trainer = stage.trainer(StageContext(cfg=cfg, model=model, tok=tok, rows=rows, common=common, profile_table=table,
                                         device=device, bf16=bf16, records=sp.train.records, role=role))
    result = trainer.train(resume_from_checkpoint=ckpt)
    totals = trainer.run_totals(result)
    summary = {
        "method": cfg.method, "task": "text", "stage": cfg.stage, "model": cfg.model, "steps": trainer.state.global_step,
        "resumed_from": ckpt, "train_loss": totals["train_loss"],
        "last_log": next((h for h in reversed(trainer.state.log_history) if "loss" in h), {}),
        "rows": len(rows), "profiles": len({r.profile.key() for r in rows}), "trainable_parameters": n_trainable,
        "profile_routed": routed, "seconds": totals["seconds"], "device": device, "processes": trainer.args.world_size,
        "split": sp.describe(), "dataset": {"name": ds.name, "dropped": dict(ds.meta.get("dropped") or {})},
        "eval_method": "generate", "profile_role": role, "main_process": bool(trainer.args.should_save), "max_steps": run_cfg.steps,
        "profile_encoder": encoder.name if encoder is not None else None,
    }
    rewards = getattr(trainer, "reward_funcs", None)
    if rewards is not None:  # GRPO
        hist = trainer.state.log_history
        summary["rewards"] = [h["reward"] for h in hist if "reward" in h]
        summary["reward_functions"] = [getattr(f, "__name__", type(f).__name__) for f in rewards]
        summary["judge_off_format"] = sum(getattr(f, "off_format", 0) for f in rewards)
    if trainer.args.should_save:
        extra = {"train_config": cfg.to_dict(), "split": rec, "eval_method": "generate", "profile_role": role}
        if encoder is not None:
            extra["profile_encoder"] = spec
        save_trained(trainer.accelerator.unwrap_model(trainer.model), out / "adapter", base_model=cfg.model, extra=extra)
        atomic_write_json(out / "train_summary.json", summary)
    return summary


# ----------------------------------------------------------------------------- the text stages
@register_stage("sft", "text", run=train_text)
class TextSFT:
    """Imitate each record's human answer (BLEnD) or its chosen responses (PRISM / Community Alignment)."""

    @staticmethod
    def rows(tok, sp, cfg: TrainConfig, *, source=None, **encode) -> list:
        from pluralign.training.text import encode_rows, sft_targets

        return encode_rows(tok, sft_targets(sp.train.records, sp.train.pairs), max_completion_tokens=cfg.completion_max_length, **encode)

    @staticmethod
    def trainer(ctx: StageContext):
        from pluralign.training.text import TextCollator, TextSFTTrainer

        return TextSFTTrainer(data_collator=TextCollator(ctx.tok.pad_token_id, profile_table=ctx.profile_table), **ctx.common)


@register_stage("dpo", "text", run=train_text)
class TextDPO:
    """The chosen > rejected pairs; reference: the model at the start of the stage."""

    @staticmethod
    def rows(tok, sp, cfg: TrainConfig, *, source=None, **encode) -> list:
        from pluralign.training.text import encode_rows

        if not sp.train.pairs:
            raise PluralignError("no preference pair in the training part", file=source, field="stage")
        return encode_rows(tok, sp.train.pairs, max_completion_tokens=cfg.completion_max_length, **encode)

    @staticmethod
    def trainer(ctx: StageContext):
        from pluralign.training.text import TextCollator, TextDPOTrainer

        # reference log-probs: computed per pair when first trained on (TextDPOTrainer), not for every pair up front
        return TextDPOTrainer(data_collator=TextCollator(ctx.tok.pad_token_id, profile_table=ctx.profile_table, dpo=True),
                              beta=ctx.cfg.dpo_beta, **ctx.common)


@register_stage("grpo", "text", run=train_text)
class TextGRPO:
    """Sampled groups scored by the reward functions (``--grpo-reward``); ``--batch-size`` counts prompts."""

    @staticmethod
    def rows(tok, sp, cfg: TrainConfig, *, source=None, **encode) -> list:
        return grpo_rows(tok, sp.train.records, **encode)

    @staticmethod
    def trainer(ctx: StageContext):
        from pluralign.training.grpo import GRPOConditionalTrainer, resolve_reward

        cfg = ctx.cfg
        names = list(cfg.grpo.reward) or (["blend-match"] if any(r.answers for r in ctx.records) else ["judge"])
        rewards = [resolve_reward(n, judge_factory=judge_factory(cfg, ctx.role)) for n in names]
        return GRPOConditionalTrainer(reward_funcs=rewards, settings=cfg.grpo, tokenizer=ctx.tok,
                                      profile_table=ctx.profile_table, **ctx.common)


__all__ = ["train_text", "load_text_split", "text_split_record", "grpo_rows"]
