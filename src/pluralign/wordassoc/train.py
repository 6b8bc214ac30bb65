"""ALIGN training: SFT with LoRA on word associations, then RL with a Spearman ranking reward.

Stage 1 (:func:`train_sft`): TRL ``SFTTrainer`` with a peft ``LoraConfig`` on the generation task
(cue → ``n_targets`` human responses ordered by strength; loss on the completion only). Optionally
the ranking task is mixed in (``tasks="generation,ranking"``).

Stage 2 (:func:`train_rl`): GRPO on the ranking task, continuing the stage-1 LoRA adapter, with a
reward from :data:`pluralign.wordassoc.metrics.REWARDS` (default ``spearman``: Spearman's ρ between
the completion's order of the candidates and the human strengths). The GRPO implementation is
the one of the ``grpo`` training stage (:mod:`pluralign.training.grpo`, an in-house GRPO on the
transformers ``Trainer`` with TRL's loss options; not TRL's ``GRPOTrainer``); rewards keep TRL's
signature ``f(prompts, completions, completion_ids, **columns)``.

**Deviation from the paper.** ALIGN used PPO for the preference stage. TRL removed its PPO trainer,
so this uses GRPO (group-relative advantages over ``num_generations`` completions per prompt, no
value model; with ``beta=0`` no reference policy either, as in TRL's default). The reward and the
data are the paper's; the policy-gradient estimator differs.

Both stages write Hugging Face checkpoints (``checkpoint-N``) every ``save_steps`` and resume from the
newest one when re-run with the same ``output_dir`` and the same settings (recorded in
``<output_dir>/settings.json``; a re-run with other settings is refused, naming them); the final adapter is written to
``<output_dir>/adapter`` (written aside, then renamed, so a crash never leaves a half adapter).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

from pluralign.adapters.config import LoRASettings
from pluralign.data.loaders.swow import SwowData, check_language
from pluralign.errors import PluralignError
from pluralign.io import atomic_write_json
from pluralign.training.config import GRPOSettings
from pluralign.wordassoc.config import RLStage, SFTStage, align_lora


def lora_config(lora: LoRASettings):
    """The peft ``LoraConfig`` of ``lora`` (``("all-linear",)`` is peft's all-linear shorthand)."""
    from peft import LoraConfig

    tm = "all-linear" if tuple(lora.target_modules) == ("all-linear",) else list(lora.target_modules)
    layers = list(lora.layers_to_transform) if lora.layers_to_transform is not None else None
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=tm, use_dora=lora.use_dora,
                      layers_to_transform=layers, task_type="CAUSAL_LM")


#: the GRPO settings an RL stage's record holds at its top level (as before they were pluralign.training's)
_RL_GRPO_KEYS = ("num_generations", "max_completion_length", "temperature", "beta")


def _grpo_record(g: GRPOSettings) -> dict:
    """An RL stage's GRPO settings as its record holds them: the four it always had, the others
    only when not at their default (so a stage recorded before resumes)."""
    d, base = asdict(g), asdict(GRPOSettings())
    return {k: v for k, v in d.items() if k in _RL_GRPO_KEYS or v != base[k]}


def _lora_record(lora: LoRASettings | None) -> dict | None:
    """``lora`` as a stage's settings record holds it: rank, alpha, dropout and the targets as one
    comma-separated string (as recorded before the settings were pluralign.adapters'), DoRA and
    layers only when set, so a stage recorded then resumes."""
    if lora is None:
        return None
    d = {"r": lora.r, "alpha": lora.alpha, "dropout": lora.dropout, "target_modules": ",".join(lora.target_modules)}
    if lora.use_dora:
        d["use_dora"] = True
    if lora.layers_to_transform is not None:
        d["layers_to_transform"] = list(lora.layers_to_transform)
    return d


def _last_checkpoint(out: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(out)) if out.is_dir() else None


#: each stage's folder records the settings it was trained with (a re-run must use the same)
STAGE_SETTINGS = "settings.json"
#: stage fields a re-run may change (more steps continue; intervals only change what is logged / saved)
RESUMABLE_STAGE_CHANGES = ("max_steps", "epochs", "save_steps", "logging_steps")
#: settings named as the `pluralign wordassoc train` flags that set them
_FLAGS = {"tasks": "--sft-tasks", "learning_rate": "--sft-lr / --rl-lr", "lora": "--lora-r", "sample_seed": "--seed",
          "training_data.sample_seed": "--seed", "training_data.split_seed": "--split-seed", "training_data.data": "--data",
          "training_data.train_cues": "--train-cues", "training_data.min_responses": "--min-responses",
          "training_data.held_out_pairs": "--held-out-pairs", "training_data.previous": "--adapter (its training data)",
          "init_adapter": "--adapter"}


def stage_settings(stage, extra: dict | None = None) -> dict:
    """What a stage's training depends on: its configuration less the output folder and the fields
    of :data:`RESUMABLE_STAGE_CHANGES`, with ``extra`` (model, data record, start adapter), as JSON."""
    d = {k: v for k, v in asdict(stage).items() if k != "output_dir" and k not in RESUMABLE_STAGE_CHANGES}
    d["lora"] = _lora_record(stage.lora)
    if isinstance(getattr(stage, "grpo", None), GRPOSettings):
        d.pop("grpo")
        d.update(_grpo_record(stage.grpo))
    return json.loads(json.dumps({**d, **(extra or {})}, default=str))


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k == "training_data":
            out.update(_flat(v, f"{k}."))
        else:
            out[prefix + k] = v
    return out


def check_stage(out: str | Path, settings: dict, *, max_steps: int | None = None) -> None:
    """Before training a stage into ``out``: refuse a folder holding a stage trained with other
    settings (naming each flag that differs), checkpoints whose settings were never recorded, or a
    checkpoint past ``max_steps`` (fewer steps than already trained would save the old weights
    under the new settings)."""
    from pluralign.io import read_json

    out = Path(out)
    ck, rec = _last_checkpoint(out), out / STAGE_SETTINGS
    if ck is None and not (out / "adapter").exists():
        return None
    if not rec.is_file():
        raise PluralignError("holds checkpoints or an adapter whose settings were not recorded (another run?); give another --out",
                             file=out, field="--out")
    old = read_json(rec)
    old = _flat(old if isinstance(old, dict) else {})
    new = _flat(settings)
    diff = [k for k in sorted(set(old) | set(new)) if k not in RESUMABLE_STAGE_CHANGES and old.get(k) != new.get(k)]
    if diff:
        said = ", ".join(f"{_FLAGS.get(k, '--' + k.split('.')[-1].replace('_', '-'))} ({old.get(k)!r} -> {new.get(k)!r})" for k in diff)
        raise PluralignError(f"this stage was trained with other settings: {said}; give the same values to continue it, "
                             "or another --out", file=rec, field="--out")
    step = int(Path(ck).name.rsplit("-", 1)[-1]) if ck else 0
    if max_steps is not None and 0 < max_steps < step:
        raise PluralignError(f"this stage already ran {step} steps, more than the {max_steps} asked for; ask for at least "
                             f"{step} steps to continue it, or give another --out", file=ck, field="--out")


def _finished(out: Path, max_steps: int) -> dict | None:
    """The summary of a stage that already ran ``max_steps`` steps into ``out`` (its adapter saved)."""
    from pluralign.io import read_json

    summ = out / "summary.json"
    if not (summ.is_file() and (out / "adapter").is_dir() and (out / STAGE_SETTINGS).is_file()):
        return None
    done = read_json(summ)
    if not isinstance(done, dict) or int((done.get("config") or {}).get("max_steps") or -2) != int(max_steps):
        return None
    return done


def _begin_stage(out: Path, stage, extra: dict | None) -> dict | None:
    settings = stage_settings(stage, extra)
    check_stage(out, settings, max_steps=stage.max_steps)
    done = _finished(out, stage.max_steps)
    if done is not None:
        return {**done, "already_finished": True}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / STAGE_SETTINGS, settings)
    return None


def _save_adapter(model, tok, target: Path, meta: dict) -> Path:
    """Write the adapter folder ``target``: a LoRA as :func:`pluralign.adapters.save_adapter` writes
    it (peft's files and pluralign's record, so ``pluralign eval --adapter`` and ``serve`` load it as
    well as :func:`load_with_adapter`), a model trained without LoRA (``lora=None``) as its
    ``save_pretrained`` writes it; with the tokenizer and the word-association record; staged aside
    and put in place by :func:`pluralign.io.replace_dir`."""
    from pluralign.adapters import adapted_from_peft, save_adapter
    from pluralign.io import replace_dir

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        staged = tmp / target.name
        if hasattr(model, "peft_config"):
            base = getattr(getattr(model, "config", None), "_name_or_path", None) or ""
            save_adapter(adapted_from_peft(model), staged, base_model=str(base), extra={"wordassoc_stage": meta.get("stage")})
        else:
            model.save_pretrained(staged)
        tok.save_pretrained(staged)
        atomic_write_json(staged / "pluralign_wordassoc.json", meta)
        replace_dir(staged, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _every(n: int, max_steps: int) -> int:
    """A logging / saving interval no longer than the run (``max_steps`` > 0), so that a short run
    still logs its loss and leaves a checkpoint."""
    return max(1, min(int(n), int(max_steps))) if max_steps and max_steps > 0 else max(1, int(n))


def _cpu_flags() -> dict:
    import torch

    cuda = torch.cuda.is_available()
    return {"bf16": bool(cuda and torch.cuda.is_bf16_supported()), "use_cpu": not cuda}


def sft_records(data: SwowData, stage: SFTStage) -> list[dict]:
    from pluralign.wordassoc.tasks import generation_examples, ranking_examples

    tasks = [t.strip() for t in stage.tasks.split(",") if t.strip()]
    bad = set(tasks) - {"generation", "ranking"}
    if bad or not tasks:
        raise PluralignError(f"unknown SFT task(s) {sorted(bad)} (generation, ranking)", field="tasks")
    recs: list[dict] = []
    if "generation" in tasks:
        recs += [{"prompt": r["prompt"], "completion": r["completion"]} for r in
                 generation_examples(data, n_targets=stage.n_targets, samples_per_cue=stage.samples_per_cue)]
    if "ranking" in tasks:
        recs += [{"prompt": r["prompt"], "completion": [{"role": "assistant", "content": r["target"]}]} for r in
                 ranking_examples(data, n_candidates=stage.n_candidates, seed=stage.seed)]
    return recs


def train_sft(model, tok, data: SwowData, stage: SFTStage | None = None, *, callbacks: Sequence = (), progress: bool = True,
              extra_meta: dict | None = None, settings: dict | None = None) -> dict:
    """Stage 1. ``model`` is the base causal LM (not a PeftModel). Returns a summary with the loss
    curve and the adapter path. ``extra_meta`` is added to the summary and the adapter's record
    (``pluralign_wordassoc.json``), e.g. which cues and pairs were held out.

    The stage's settings (its configuration, ``extra_meta`` and ``settings``, e.g. the model) are
    recorded in ``output_dir/settings.json``; a re-run into the same folder continues its newest
    checkpoint only with the same settings (:func:`check_stage`; ``max_steps`` may grow) and
    returns the earlier summary (``already_finished``) when the stage had already ended."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    stage = stage or SFTStage()
    check_language(data, data.language)
    out = Path(stage.output_dir)
    done = _begin_stage(out, stage, {**(extra_meta or {}), **(settings or {})})
    if done is not None:
        return done
    recs = sft_records(data, stage)
    _check_lengths(tok, recs, stage.max_length)
    ds = Dataset.from_list(recs).shuffle(seed=stage.seed)
    args = SFTConfig(
        output_dir=str(out), max_steps=stage.max_steps, num_train_epochs=stage.epochs,
        per_device_train_batch_size=stage.batch_size, gradient_accumulation_steps=stage.grad_accum,
        learning_rate=stage.learning_rate, lr_scheduler_type="cosine", warmup_steps=max(1, stage.max_steps // 20) if stage.max_steps > 0 else 0,
        logging_steps=_every(stage.logging_steps, stage.max_steps), save_steps=_every(stage.save_steps, stage.max_steps),
        save_total_limit=2, seed=stage.seed, max_length=stage.max_length, report_to="none", disable_tqdm=not progress, dataloader_num_workers=0,
        completion_only_loss=True, **_cpu_flags(),
    )
    _ensure_pad(tok)
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                         peft_config=lora_config(stage.lora), callbacks=list(callbacks))
    resume = _last_checkpoint(out)
    result = trainer.train(resume_from_checkpoint=resume)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    meta = {"stage": "sft", "config": asdict(stage), "n_records": len(recs), "n_cues": len(data), "language": data.language,
            "losses": losses, "resumed_from": resume, "train_runtime": result.metrics.get("train_runtime"), **(extra_meta or {})}
    adapter = _save_adapter(trainer.model, tok, out / "adapter", meta)
    meta["adapter"] = str(adapter)
    atomic_write_json(out / "summary.json", meta)
    return meta


def _check_lengths(tok, recs: list[dict], max_length: int) -> None:
    """TRL truncates prompt+completion to ``max_length`` and silently drops records whose completion
    is cut off entirely; fail early with a clear message instead of an empty-sampler error."""
    from pluralign.models.chat import build_chat_prompt

    too_long = 0
    for r in recs:
        text = build_chat_prompt(tok, r["prompt"])
        if len(tok(text, add_special_tokens=False)["input_ids"]) >= max_length:
            too_long += 1
    if too_long == len(recs):
        raise PluralignError(f"every training prompt is at least max_length={max_length} tokens long, so no completion "
                             "token would be trained; raise max_length", field="max_length")
    if too_long:
        import logging

        logging.getLogger(__name__).warning("%d of %d SFT records exceed max_length=%d and are dropped", too_long, len(recs), max_length)


def _ensure_pad(tok) -> None:
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token


def rl_records(data: SwowData, stage: RLStage) -> list[dict]:
    from pluralign.wordassoc.tasks import generation_examples, ranking_examples

    if stage.reward == "spearman":
        return [{"prompt": r["prompt"], "candidates": r["candidates"], "strengths": r["strengths"]}
                for r in ranking_examples(data, n_candidates=stage.n_candidates, seed=stage.seed)]
    if stage.reward == "precision":
        return [{"prompt": r["prompt"], "human": [a.response for a in data.cues[r["cue"]]], "k": stage.n_targets}
                for r in generation_examples(data, n_targets=stage.n_targets)]
    raise PluralignError(f"no dataset for reward {stage.reward!r}", field="reward")


def train_rl(
    model, tok, data: SwowData | None = None, stage: RLStage | None = None, *, records: list[dict] | None = None,
    reward_fn: Callable | None = None, callbacks: Sequence = (), progress: bool = True, extra_meta: dict | None = None,
    settings: dict | None = None,
) -> dict:
    """Stage 2 (GRPO, :mod:`pluralign.training.grpo`). ``model``: a PeftModel holding the trainable
    SFT adapter (it is trained further), or a plain model (a fresh LoRA from ``stage.lora`` is
    added; ``lora=None`` trains every weight in place). ``records`` and ``reward_fn`` override the
    SWOW ranking data and the registered reward (tests use a toy reward). ``extra_meta`` and
    ``settings``: as in :func:`train_sft` (a re-run continues only with the same settings)."""
    import torch
    from peft import PeftModel, get_peft_model
    from transformers import TrainingArguments

    from pluralign.models.chat import build_chat_prompt
    from pluralign.training.grpo import PromptRow, build_grpo_trainer
    from pluralign.wordassoc.metrics import REWARDS

    stage = stage or RLStage()
    if reward_fn is None:
        if stage.reward not in REWARDS:
            raise PluralignError(f"unknown reward {stage.reward!r} (available: {', '.join(sorted(REWARDS))})", field="reward")
        reward_fn = REWARDS[stage.reward]
    if records is None:
        if data is None:
            raise PluralignError("train_rl needs SWOW data or records", field="data")
        check_language(data, data.language)
        records = rl_records(data, stage)
    if stage.batch_size % stage.grpo.num_generations:
        raise PluralignError(f"batch_size {stage.batch_size} must be a multiple of num_generations {stage.grpo.num_generations}", field="batch_size")
    out = Path(stage.output_dir)
    done = _begin_stage(out, stage, {**(extra_meta or {}), **(settings or {})})
    if done is not None:
        return done
    _ensure_pad(tok)
    torch.manual_seed(stage.seed)
    if not isinstance(model, PeftModel) and stage.lora is not None:
        model = get_peft_model(model, lora_config(stage.lora))
    rows = []
    for i, r in enumerate(records):
        prompt = r["prompt"]
        text = build_chat_prompt(tok, prompt) if isinstance(prompt, list) else str(prompt)
        add = not (tok.bos_token and text.startswith(tok.bos_token))
        rows.append(PromptRow(prompt_ids=tok(text, add_special_tokens=add)["input_ids"], prompt=prompt, key=str(i),
                              columns={k: v for k, v in r.items() if k != "prompt"}))
    flags = _cpu_flags()
    args = TrainingArguments(
        output_dir=str(out), max_steps=stage.max_steps, per_device_train_batch_size=stage.batch_size // stage.grpo.num_generations,
        learning_rate=stage.learning_rate, lr_scheduler_type="linear", warmup_steps=0,
        logging_steps=_every(stage.logging_steps, stage.max_steps), save_strategy="steps", save_steps=_every(stage.save_steps, stage.max_steps), save_total_limit=2, seed=stage.seed, data_seed=stage.seed,
        report_to=[], disable_tqdm=not progress, dataloader_num_workers=0, remove_unused_columns=False,
        bf16=flags["bf16"], use_cpu=flags["use_cpu"],
    )
    trainer = build_grpo_trainer(model, tok, rows, [reward_fn], stage.grpo, args, callbacks=callbacks)
    resume = _last_checkpoint(out)
    result = trainer.train(resume_from_checkpoint=resume)
    hist = trainer.state.log_history
    rewards = [h["reward"] for h in hist if "reward" in h]
    meta = {"stage": "rl", "algorithm": "GRPO (pluralign.training.grpo)", "config": asdict(stage), "n_records": len(records),
            "rewards": rewards, "resumed_from": resume, "train_runtime": result.metrics.get("train_runtime"),
            "deviation": "ALIGN used PPO; TRL removed PPO, so GRPO is used with the same Spearman reward."}
    if data is not None:
        meta.update(n_cues=len(data), language=data.language)
    meta.update(extra_meta or {})
    adapter = _save_adapter(trainer.model, tok, out / "adapter", meta)
    meta["adapter"] = str(adapter)
    atomic_write_json(out / "summary.json", meta)
    return meta


def load_with_adapter(model, adapter: str | Path, *, trainable: bool = False):
    """Apply a saved word-association adapter to ``model`` (a PeftModel)."""
    from peft import PeftModel

    import torch

    from pluralign.adapters.checkpoint import weights_problem
    from pluralign.io import read_json

    p = Path(adapter)
    if not p.is_dir():
        raise PluralignError("adapter folder not found" if not p.exists() else "not an adapter folder (a file)", file=p)
    if not (p / "adapter_config.json").is_file():
        raise PluralignError("not an adapter folder (no adapter_config.json)", file=p)
    cfg = read_json(p / "adapter_config.json")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("peft_type"), str):
        raise PluralignError("not a peft adapter config (a JSON object with 'peft_type')", file=p / "adapter_config.json")
    weights = p / "adapter_model.safetensors"
    if weights.is_file():
        why = weights_problem(weights)
        if why:
            raise PluralignError(f"damaged adapter weights: {why}", file=weights)
    try:
        model = PeftModel.from_pretrained(model, str(p), is_trainable=trainable)
    except PluralignError:
        raise
    except Exception as e:  # peft / safetensors raise many kinds on a damaged folder
        msg = " ".join(str(e).split())[:200] or type(e).__name__
        raise PluralignError(f"cannot load the adapter ({type(e).__name__}: {msg})", file=p) from None
    for n, t in model.named_parameters():
        if "lora_" in n and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise PluralignError(f"tensor {n} holds NaN or inf values: the adapter cannot be used", file=weights, field=n)
    return model


def read_meta(adapter: str | Path) -> dict:
    p = Path(adapter) / "pluralign_wordassoc.json"
    if not p.exists():
        return {}
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise PluralignError(f"unreadable adapter record ({type(e).__name__})", file=p) from None
    return meta if isinstance(meta, dict) else {}


__all__ = ["align_lora", "lora_config", "SFTStage", "RLStage", "train_sft", "train_rl", "check_stage", "stage_settings", "sft_records", "rl_records", "load_with_adapter", "read_meta"]
