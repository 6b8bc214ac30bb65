"""``pluralign train``: conditional SFT, DPO and GRPO of an adapter on survey answers or preference data."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pluralign.cli._common import BatchSize, ChatTemplate, Device, Dtype, Model, Progress, quiet_libraries
from pluralign.errors import PluralignError

TRAIN_HELP = """Fine-tune a causal LM to answer survey questions as a demographic profile would.

Every method is an adapter on the same backbone: cuma (mixture of LoRA experts routed on the token state AND the profile embedding); mixlora (the MixLoRA paper: top-2 LoRA experts on the FFN gate/up/down with a linear gate on the MLP input, plain LoRA on q/k/v/o); hydralora (the HydraLoRA paper: one shared A and N B heads, dense softmax router, no balance loss); mixlora-qv and hydralora-qv (the CuMA authors' baseline configurations: top-2 q/v mixtures with an MLP router); lora, dora, ptuning-v2 (deep prefix tuning), full (all weights).

Fast path: --top-layers N adapts only the top N decoder layers; the frozen layers below run once per row and are cached across epochs (exact; checked against the full forward before training). --epochs sets the number of steps from passes over the data.

Tasks: individual = one respondent's answer (WVS respondent probe), loss on the answer label token only, profile in the system prompt; distributional = a group's answer shares (WVS country shares), cross-entropy against the human distribution over the option labels. Training prompts are exactly the prompts `pluralign eval --method persona` (or vanilla with --no-profile-prompt) scores.

The held-out part is never trained on: its recipe is written to OUT/split.json, and `pluralign eval --split-from OUT` rebuilds the same split.

Preference / prompt data (--data prism:DIR, community-alignment:CSV, blend[:DIR]): --stage sft imitates the chosen / human answer text, --stage dpo trains on its chosen > rejected pairs (reference: the --init-adapter model), --stage grpo samples --num-generations completions per prompt (--batch-size counts prompts) with the profile on the router and scores them with --reward (blend-match, blend-weighted, judge, module:function); an in-house GRPO (group-normalised advantages, clipped ratio, KL to the reference with --grpo-beta), not TRL's trainer. Evaluate with `pluralign generate-eval --adapter OUT/adapter --split-from OUT`.

Examples:

  pluralign train --method cuma --task individual --data wvs-probe --steps 200 --out runs/cuma
  pluralign eval --adapter runs/cuma/adapter --split-from runs/cuma --method persona
  pluralign train --method lora --task distributional --data wvs-shares --out runs/lora-shares
  pluralign train --method cuma --stage dpo --init-adapter runs/cuma/adapter --out runs/cuma-dpo
  pluralign train --method cuma --data blend --stage sft --out runs/blend-sft        # BLEnD short answers
  pluralign train --method cuma --data blend --stage grpo --reward blend-match --init-adapter runs/blend-sft/adapter --out runs/blend-grpo
  pluralign train --method cuma --no-demographic-routing --out runs/abl-norouting   # ablations
  pluralign train ... --out runs/cuma --resume                                      # continue
  accelerate launch --multi_gpu --num_processes 4 -m pluralign.cli.main train --method cuma ...  # 4 GPUs

Outputs (OUT): adapter/, checkpoints/, log.jsonl, train_config.json, split.json, train_summary.json.
"""


def register(app: typer.Typer) -> None:
    app.command("train", help=TRAIN_HELP)(train_cmd)


def train_cmd(
    config: Optional[Path] = typer.Option(None, help="A JSON file of training settings (field names of TrainConfig, e.g. configs/train/cuma-probe.json); flags given on the command line win."),
    method: str = typer.Option("cuma", help="cuma, mixlora, hydralora, mixlora-qv, hydralora-qv, lora, dora, ptuning-v2, full (see above)."),
    task: str = typer.Option("individual", help="individual (respondent answers) or distributional (group answer shares)."),
    stage: str = typer.Option("sft", help="sft, dpo (survey data: human answer preferred over the mean-collapse answer; preference data: its chosen > rejected pairs; start from --init-adapter), or grpo (preference / prompt data, with --reward)."),
    model: str = Model(),
    data: str = typer.Option("wvs-probe", help="Dataset: wvs-probe (individual), wvs-shares (distributional), or a path."),
    strict: bool = typer.Option(False, "--strict", help="Fail on the first unusable cell of the data (default: skip it and count it per reason, reported as dataset.dropped); for loaders that skip cells."),
    split: str = typer.Option("auto", help="Hold-out unit: respondent, question, country, profile, or country,question (two-way: countries and questions held out at once; training sees training countries x training questions only; eval reports the cells unseen_questions, unseen_countries, unseen_both); auto = respondent (individual) / country (distributional), as `pluralign eval`."),
    test_frac: float = typer.Option(0.2, help="Fraction of units held out for testing (two-way split: of countries)."),
    test_units: Optional[str] = typer.Option(None, help="Comma-separated test units (e.g. countries for --split country or country,question)."),
    test_questions: Optional[str] = typer.Option(None, help="Two-way split: comma-separated test question ids (default: a hashed --question-test-frac)."),
    question_test_frac: Optional[float] = typer.Option(None, help="Two-way split: fraction of questions held out for testing (default: --test-frac)."),
    val_frac: float = typer.Option(0.0, help="Fraction of units kept for validation: never trained on or tested; `pluralign eval` chooses reference settings (map k, text-similarity k) there. Two-way split: on both axes."),
    countries: Optional[str] = typer.Option(None, help="Restrict to these countries before splitting."),
    questions: Optional[str] = typer.Option(None, help="Restrict to these question ids before splitting."),
    max_examples: Optional[int] = typer.Option(None, help="Train on at most N rows (deterministic sample)."),
    steps: int = typer.Option(100, help="Optimizer steps (ignored with --epochs)."),
    epochs: Optional[float] = typer.Option(None, help="Passes over the training rows (sets the number of steps; e.g. 3)."),
    top_layers: Optional[int] = typer.Option(None, help="Adapt only the top N decoder layers (lora, dora, MoE-LoRA methods). With --cache-trunk (default) the frozen layers below run once per row and are cached: a SmolLM2 step on the top 8 of 30 layers is several times faster."),
    cache_trunk: bool = typer.Option(True, "--cache-trunk/--no-cache-trunk", help="With --top-layers: cache the frozen trunk's output across epochs (exact; verified against the full forward before training)."),
    trunk_cache_dir: str = typer.Option("auto", help="Where cached trunk states are kept on disk and reused across runs (auto: $PLURALIGN_CACHE/trunk; none: memory only)."),
    enrich_profile: bool = typer.Option(False, "--enrich-profile/--no-enrich-profile", help="Country profiles also carry their Inglehart-Welzel cultural-map position and zone (persona text; router features with --profile-encoder ...+culture-map)."),
    map_before: Optional[int] = typer.Option(None, help="Cultural-map wave: each country's latest coordinates from a survey year before this one (e.g. 2017 for WVS-7 data, so no side information comes from the evaluation data's own wave); applies to --enrich-profile and the culture-map encoder. Default: the latest coordinates."),
    batch_size: int = BatchSize(8, help="Rows per device per forward pass (stage grpo: prompts)."),
    grad_accum: int = typer.Option(1, help="Gradient accumulation steps."),
    lr: float = typer.Option(2e-4, help="Peak AdamW learning rate (warm-up then cosine decay)."),
    warmup_ratio: float = typer.Option(0.05, help="Fraction of steps of linear warm-up."),
    scheduler: str = typer.Option("cosine", help="Learning-rate schedule (transformers name)."),
    weight_decay: float = typer.Option(0.0, help="AdamW weight decay."),
    rank: Optional[int] = typer.Option(None, help="LoRA rank (per expert for mixtures); default: the method's."),
    alpha: Optional[float] = typer.Option(None, help="LoRA alpha; default: the method's."),
    experts: Optional[int] = typer.Option(None, help="Experts of mixture methods; default: the method's."),
    top_k: Optional[int] = typer.Option(None, help="Experts per token; default: the method's."),
    target_modules: Optional[str] = typer.Option(None, help="Comma-separated linear layers to adapt (default q_proj,v_proj)."),
    profile_prompt: bool = typer.Option(True, "--profile-prompt/--no-profile-prompt", help="Profile in the system prompt (off: ablation; evaluate with --method vanilla)."),
    demographic_routing: bool = typer.Option(True, "--demographic-routing/--no-demographic-routing", help="CuMA router sees the profile embedding (off: hidden-state routing, ablation)."),
    balance_loss: bool = typer.Option(True, "--balance-loss/--no-balance-loss", help="Load-balancing loss of mixtures (off: ablation)."),
    soft_routing: bool = typer.Option(False, "--soft-routing", help="Route every token to all experts (top-k = experts; ablation)."),
    soft_label_norm: str = typer.Option("vocab", help="Distributional loss over the full vocabulary (vocab) or renormalised over the option labels (options)."),
    option_mass_weight: float = typer.Option(0.0, help="Add this weight x -log(next-token mass on the option labels) to the loss, so the model keeps saying a label (options + weight 1 = vocab exactly; eval reports option_mass)."),
    profile_encoder: str = typer.Option("minilm-l6", help="Profile encoder of profile-routed methods: a sentence encoder (minilm-l6, hub id, folder), backbone[:LAYER] (the LLM's own hidden state of the profile text), culture-map (numeric map features), or several joined by '+'."),
    init_adapter: Optional[Path] = typer.Option(None, help="Start from a trained adapter (e.g. SFT before DPO)."),
    dpo_beta: float = typer.Option(0.1, help="DPO beta (stage dpo)."),
    completion_max_length: int = typer.Option(256, help="Preference data: tokens kept of each target / chosen / rejected completion."),
    grpo_reward: Optional[list[str]] = typer.Option(None, "--grpo-reward", help="GRPO reward (repeat to sum several): blend-match, blend-weighted, judge, or module:function (f(prompts, completions, completion_ids, **columns) -> list of floats). Default: blend-match with human answers (BLEnD), else judge."),
    grpo_reward_weights: Optional[str] = typer.Option(None, help="GRPO: comma-separated weights, one per --grpo-reward."),
    grpo_num_generations: int = typer.Option(4, help="GRPO: completions per prompt (the group); --batch-size counts prompts."),
    grpo_max_completion_length: int = typer.Option(32, help="GRPO: new tokens per sampled completion."),
    grpo_temperature: float = typer.Option(1.0, help="GRPO: sampling temperature."),
    grpo_top_p: float = typer.Option(1.0, help="GRPO: nucleus sampling mass."),
    grpo_top_k: int = typer.Option(0, help="GRPO: top-k sampling (0: off)."),
    grpo_beta: float = typer.Option(0.0, help="GRPO: KL coefficient to the reference (the model at the start of the stage); 0 = none."),
    grpo_epsilon: float = typer.Option(0.2, help="GRPO: clipping epsilon of the policy ratio."),
    grpo_epsilon_high: Optional[float] = typer.Option(None, help="GRPO: upper clipping epsilon (default: --grpo-epsilon)."),
    grpo_num_iterations: int = typer.Option(1, help="GRPO: optimizer steps per generation batch (>1 makes the clip active)."),
    grpo_loss_type: str = typer.Option("dapo", help="GRPO loss aggregation: grpo, dapo, bnpo, dr_grpo."),
    grpo_scale_rewards: str = typer.Option("group", help="GRPO advantage scaling: group, batch, none."),
    grpo_mask_truncated: bool = typer.Option(False, "--grpo-mask-truncated", help="GRPO: leave completions that hit the length limit out of the loss."),
    judge_model: Optional[str] = typer.Option(None, help="Judge reward: a local judge model (default: --model, a separate frozen copy)."),
    judge_url: Optional[str] = typer.Option(None, help="Judge reward: an OpenAI-compatible endpoint instead (e.g. http://127.0.0.1:8000/v1 from `pluralign serve`)."),
    judge_api_model: Optional[str] = typer.Option(None, help="Model name sent to --judge-url (default: its first model)."),
    labels: str = typer.Option("auto", help="Option labels: auto, digits, letters (must match evaluation)."),
    chat_template: bool = ChatTemplate(),
    max_length: Optional[int] = typer.Option(None, help="Keep only the last N prompt tokens."),
    dtype: str = Dtype(),
    device: str = Device(),
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing", help="Trade compute for memory."),
    seed: int = typer.Option(0, help="Seed of the split, sampling and initialisation."),
    out: Path = typer.Option(Path("runs/train"), help="Output folder."),
    save_steps: Optional[int] = typer.Option(None, help="Checkpoint every N steps (0: none before the end). Default: scaled to the run, a fifth of --steps, between 1 and 50 (50 with --epochs), so a short run can be resumed too."),
    logging_steps: int = typer.Option(5, help="Log every N steps (OUT/log.jsonl)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint in OUT (same configuration)."),
    progress: bool = Progress(),
) -> None:
    from pluralign.cli.main import run_guarded

    run_guarded(_run, **locals())


def _csv(s: str | None) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()] if s else []


def _list(v) -> list[str]:
    """A repeated option (or a config-file list / comma string) as a list of names."""
    if not v:
        return []
    if isinstance(v, str):
        return _csv(v)
    return [x for item in v for x in (_csv(item) if isinstance(item, str) and "," in item and ":" not in item else [item])]


def _floats(v) -> list[float]:
    if not v:
        return []
    parts = v if isinstance(v, list) else _csv(str(v))
    try:
        return [float(x) for x in parts]
    except (TypeError, ValueError):
        raise PluralignError(f"must be comma-separated numbers, got {v!r}", field="--grpo-reward-weights") from None


def _apply_config_file(a: dict) -> None:
    """Values from ``--config`` replace the flags still at their defaults (explicit flags win)."""
    import inspect

    from pluralign.io import read_json
    from pluralign.training import TrainConfig

    data = read_json(a["config"])
    if not isinstance(data, dict):
        raise PluralignError("a training config must be a JSON object of TrainConfig fields", file=a["config"])
    known = set(TrainConfig.help())
    defaults = {k: p.default.default for k, p in inspect.signature(train_cmd).parameters.items() if hasattr(p.default, "default")}
    for k, v in data.items():
        if k not in known:
            raise PluralignError("unknown field (see `pluralign train --help`)", file=a["config"], field=k)
        cli = k if k in a else None
        if cli is None:
            raise PluralignError("this field cannot be set from a config file", file=a["config"], field=k)
        if a[cli] == defaults.get(cli) or (defaults.get(cli) is not None and str(a[cli]) == str(defaults.get(cli))):
            a[cli] = ",".join(map(str, v)) if isinstance(v, list) else v


def _absolute(p) -> str:
    """A local path made absolute; a hub id or short name (no such path here) as given."""
    return str(Path(p).resolve()) if p and Path(str(p)).exists() else str(p)


def _run(**a) -> None:
    quiet_libraries()
    from pluralign.training import TrainConfig, train

    from pluralign.cli._validate import default_save_steps, validate

    validate("train", a)  # flags and --config fields, before any work
    if a.get("config"):
        _apply_config_file(a)

    import dataclasses

    from pluralign.data.fingerprint import absolute_spec

    # every TrainConfig field has a flag of the same name; these need converting from their CLI form
    converted = dict(
        test_units=_csv(a["test_units"]), countries=_csv(a["countries"]), questions=_csv(a["questions"]),
        test_questions=_csv(a["test_questions"]),
        target_modules=_csv(a["target_modules"]), init_adapter=_absolute(a["init_adapter"]) if a["init_adapter"] else None,
        data=absolute_spec(a["data"]), model=_absolute(a["model"]),  # recorded so that the run names them from any folder
        out=str(a["out"]), grpo_reward=_list(a["grpo_reward"]), grpo_reward_weights=_floats(a["grpo_reward_weights"]),
        judge_model=a["judge_model"] or "", judge_api_model=a["judge_api_model"] or "", save_steps=default_save_steps(a),
    )
    names = [f.name for f in dataclasses.fields(TrainConfig) if f.init]
    cfg = TrainConfig(**{k: converted[k] if k in converted else a[k] for k in names if k in a}).validate()
    from pluralign.training.trainer import RunFinished

    try:
        s = train(cfg)
    except RunFinished as e:  # --resume of a finished run: say so, change nothing
        typer.echo(f"note: {e}", err=True)
        return
    if not s.get("main_process", True):  # other ranks of a distributed run stay quiet
        return
    typer.echo(
        f"{s['method']} ({s['task']}, {s['stage']}): {s['steps']} steps on {s['rows']} rows "
        f"({s['profiles']} profiles), train loss {s['train_loss']:.4f}, {s['seconds']:.0f} s; "
        f"adapter: {Path(cfg.out) / 'adapter'}",
        err=True,
    )
    if s.get("eval_method") == "generate":
        typer.echo(f"evaluate: pluralign generate-eval --model {cfg.model} --adapter {Path(cfg.out) / 'adapter'} --split-from {cfg.out}", err=True)
        return
    typer.echo(
        f"evaluate: pluralign eval --model {cfg.model} --adapter {Path(cfg.out) / 'adapter'} "
        f"--split-from {cfg.out} --method {s['eval_method']}",
        err=True,
    )
