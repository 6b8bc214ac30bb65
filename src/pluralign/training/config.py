"""Configuration of a training run (conditional SFT, DPO or GRPO), one field per knob, each with help text.

The same dataclass drives the Python API (:func:`pluralign.training.train`) and the CLI
(``pluralign train``): every flag, its help, default and accepted values are built from these
fields (:mod:`pluralign.cli._common`); the GRPO stage's settings are the nested
:class:`GRPOSettings` block (``cfg.grpo``; flags and config-file keys ``--grpo-*`` / ``grpo_*``).
A run saves its configuration next to the outputs as ``train_config.json`` (``to_dict``) so it can
be repeated and its held-out split rebuilt (``pluralign eval --split-from RUN``); records written
before the GRPO block was nested (flat ``grpo_*`` keys) are read too (:meth:`TrainConfig.from_dict`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from pluralign._fields import check_settings, flatten, helpfield, settings, shared_field, unflatten
from pluralign.errors import PluralignError

TASKS = ("individual", "distributional")
STAGES = ("sft", "dpo", "grpo")
SOFT_NORMS = ("vocab", "options")
LABELS = ("auto", "digits", "letters")
SPLITS = ("auto", "respondent", "question", "country", "profile", "country,question")
LOSS_TYPES = ("grpo", "dapo", "bnpo", "dr_grpo")
SCALE_REWARDS = ("group", "batch", "none")


def _methods() -> tuple[str, ...]:
    from pluralign.training.methods import METHODS

    return tuple(METHODS)


def _schedulers() -> list[str]:
    from transformers.trainer_utils import SchedulerType

    return sorted(t.value for t in SchedulerType)


_f = helpfield


@dataclass
class GRPOSettings:
    """The GRPO stage (:mod:`pluralign.training.grpo`); in a :class:`TrainConfig` the ``grpo`` block,
    each field the flag ``--grpo-<field>``."""

    reward: list = _f([], "GRPO reward (repeat --grpo-reward to sum several): blend-match (BLEnD soft exact match with the profile's human answers), blend-weighted (BLEnD's count-weighted score), judge (the judge's pairwise preference of the completion over the reference policy's greedy answer, both orders), or module:function (TRL signature f(prompts, completions, completion_ids, **columns) -> list of floats). Default: blend-match when the data has human answers, else judge.", repeat=True)
    reward_weights: list = _f([], "GRPO: comma-separated weights, one per --grpo-reward (default: all 1).", item=float)
    num_generations: int = _f(4, "GRPO: completions sampled per prompt (the group); --batch-size counts prompts.", lo=2)
    max_completion_length: int = _f(32, "GRPO: new tokens per sampled completion.", lo=1)
    temperature: float = _f(1.0, "GRPO: sampling temperature of the rollouts (log-probs use the same temperature).", lo=0, open_lo=True)
    top_p: float = _f(1.0, "GRPO: nucleus sampling mass of the rollouts.", lo=0, hi=1, open_lo=True)
    top_k: int = _f(0, "GRPO: top-k sampling of the rollouts (0: off).", lo=0)
    beta: float = _f(0.0, "GRPO: KL coefficient to the reference policy (the model at the start of the stage, e.g. the --init-adapter SFT model); 0 = no KL (TRL's default).", lo=0)
    epsilon: float = _f(0.2, "GRPO: clipping epsilon of the policy ratio (clip to [1 - epsilon, 1 + epsilon-high]).", lo=0)
    epsilon_high: float | None = _f(None, "GRPO: upper clipping epsilon (DAPO's clip-higher; default: --grpo-epsilon).", lo=0)
    num_iterations: int = _f(1, "GRPO: optimizer steps per generation batch (mu; > 1 makes the clip active).", lo=1)
    loss_type: str = _f("dapo", "GRPO loss aggregation: grpo (mean per sequence, then over sequences), dapo / bnpo (mean over tokens), dr_grpo (sum / (sequences x max length)).", choices=LOSS_TYPES)
    scale_rewards: str = _f("group", "GRPO advantage scaling: group (divide by the group's reward std), batch (the batch std), none.", choices=SCALE_REWARDS)
    mask_truncated_completions: bool = _f(False, "GRPO: leave completions that hit the length limit out of the loss.", flag="--grpo-mask-truncated")

    def validate(self) -> "GRPOSettings":
        """Each setting within its range and choices, as its field's metadata says (the rules of the
        ``--grpo-*`` flags)."""
        check_settings(self)
        return self


@dataclass
class TrainConfig:
    # ---------------------------------------------------------------- what
    method: str = _f("cuma", "Adapter method: cuma, mixlora, hydralora, mixlora-qv, hydralora-qv, lora, dora, ptuning-v2, full (see above).", choices=_methods)
    task: str = _f("individual", "individual (one respondent's answer; loss on the answer label token) or distributional (a group's answer shares; soft-label cross-entropy).", choices=TASKS)
    stage: str = _f("sft", "sft (survey data: the answer label; preference data: the chosen / human answer text), dpo (survey data: human answer preferred over the mean-collapse answer; preference data: its chosen > rejected pairs; start from --init-adapter), or grpo (preference / prompt data, with --grpo-reward; pluralign.training.grpo).", choices=STAGES)
    model: str = shared_field("model")
    data: str = _f("wvs-probe", "Dataset: wvs-probe (individual), wvs-shares (distributional), another loader name, or a path; preference / prompt data (prism:DIR, community-alignment:CSV, blend[:DIR]) for text SFT, DPO and GRPO.")
    strict: bool = _f(False, "Fail on the first unusable cell of the data (default: skip it and count it per reason, reported as dataset.dropped in train_summary.json); for loaders that skip cells.")
    # ---------------------------------------------------------------- split
    split: str = _f("auto", "Hold-out unit: respondent, question, country, profile, or country,question (two-way: countries and questions held out at once; training sees training countries x training questions only; eval reports the cells unseen_questions, unseen_countries, unseen_both); auto = respondent for individual data, country for group data (held-out countries; the same rule as `pluralign eval --split auto`).", choices=SPLITS)
    test_frac: float = _f(0.2, "Fraction of units held out for testing, never trained on (two-way split: of countries).", lo=0, hi=1, open_lo=True, open_hi=True)
    test_units: list = _f([], "Comma-separated test units (e.g. countries for --split country or country,question); overrides --test-frac.")
    test_questions: list = _f([], "Two-way split: comma-separated test question ids (default: a hashed --question-test-frac).")
    question_test_frac: float | None = _f(None, "Two-way split: fraction of questions held out for testing (default: --test-frac).", lo=0, hi=1, open_lo=True, open_hi=True)
    val_frac: float = _f(0.0, "Fraction of units kept for validation: never trained on or tested; `pluralign eval` chooses reference settings (map k, text-similarity k) there. Two-way split: on both axes.", lo=0, hi=1, open_hi=True)
    countries: list = _f([], "Restrict to these countries before splitting.")
    questions: list = _f([], "Restrict to these question ids before splitting.")
    max_examples: int | None = _f(None, "Train on at most N rows (a deterministic shuffle, then the first N).", lo=1)
    # ---------------------------------------------------------------- length, fast path
    steps: int = _f(100, "Optimizer steps (ignored with --epochs).", lo=1)
    epochs: float | None = _f(None, "Passes over the training rows (sets the number of steps; e.g. 3).", lo=0, open_lo=True)
    top_layers: int | None = _f(None, "Adapt only the top N decoder layers (lora, dora, MoE-LoRA methods; peft's layers_to_transform). With --cache-trunk (default) the frozen layers below run once per row and are cached: a SmolLM2 step on the top 8 of 30 layers is several times faster.", lo=1)
    cache_trunk: bool = _f(True, "With --top-layers: cache the frozen trunk's output across epochs (exact; verified against the full forward before training).")
    trunk_cache_dir: str = _f("auto", "Where cached trunk states are kept on disk and reused across runs on the same backbone and prompts (auto: $PLURALIGN_CACHE/trunk; none: memory only).", check="cache_dir")
    enrich_profile: bool = _f(False, "Country profiles also carry their Inglehart-Welzel cultural-map position and zone (table shipped in pluralign.data.culture; persona text; router features with --profile-encoder ...+culture-map).", flag="--enrich-profile/--no-enrich-profile")
    map_before: int | None = _f(None, "Cultural-map wave: each country's latest coordinates from a survey year before this one (e.g. 2017 for WVS-7 data, so no side information comes from the evaluation data's own wave); applies to --enrich-profile, the culture-map encoder and the map reference. Default: the latest coordinates.", lo=1900, hi=2100)
    # ---------------------------------------------------------------- optimisation
    batch_size: int = shared_field("batch_size", 8, "Rows per device per forward pass (stage grpo: prompts); effective batch = batch size x --grad-accum x processes.")
    grad_accum: int = _f(1, "Gradient accumulation steps.", lo=1)
    lr: float = _f(2e-4, "Peak AdamW learning rate (warm-up then cosine decay).", lo=0, open_lo=True)
    warmup_ratio: float = _f(0.05, "Fraction of steps of linear warm-up.", lo=0, hi=1, open_hi=True)
    scheduler: str = _f("cosine", "Learning-rate schedule (transformers name: cosine, linear, constant, ...).", choices=_schedulers)
    weight_decay: float = _f(0.0, "AdamW weight decay.", lo=0)
    # ---------------------------------------------------------------- adapter
    rank: int | None = _f(None, "LoRA rank (per expert for mixtures); default: the method's.", lo=1)
    alpha: float | None = _f(None, "LoRA alpha; default: the method's.", lo=0, open_lo=True)
    experts: int | None = _f(None, "Experts of mixture methods; default: the method's.", lo=1)
    top_k: int | None = _f(None, "Experts per token; default: the method's.", lo=1)
    target_modules: list = _f([], "Comma-separated linear layers to adapt (default q_proj,v_proj).")
    profile_prompt: bool = _f(True, "Profile in the system prompt, the paper's protocol (off: ablation; evaluate with --method vanilla).")
    demographic_routing: bool = _f(True, "CuMA router sees the profile embedding (off: hidden-state routing, ablation).")
    balance_loss: bool = _f(True, "Load-balancing loss of mixtures (off: ablation).")
    soft_routing: bool = _f(False, "Route every token to all experts (top-k = experts; the paper's soft-routing ablation).")
    soft_label_norm: str = _f("vocab", "Distributional loss: cross-entropy of the full next-token distribution against the human distribution on the label tokens (vocab; also pushes mass onto the labels) or renormalised over the option labels (options; what evaluation reads).", choices=SOFT_NORMS)
    option_mass_weight: float = _f(0.0, "Add this weight x -log(next-token mass on the option labels) to the loss, so the model keeps saying a label (options + weight 1 = vocab exactly; 0 trains only the labels' relative logits; eval reports option_mass).", lo=0)
    profile_encoder: str = _f("minilm-l6", "Profile encoder of profile-routed methods: a sentence encoder (minilm-l6, hub id, folder), backbone[:LAYER] (the LLM's own hidden state of the profile text), culture-map (numeric map features), or several joined by '+'. Recorded in the adapter; evaluation and a stage from --init-adapter reuse it.")
    init_adapter: str | None = _f(None, "Start from a trained adapter folder (e.g. SFT before DPO).", check="adapter", path=True)
    # ---------------------------------------------------------------- preference stages
    dpo_beta: float = _f(0.1, "DPO beta (stage dpo).", lo=0, open_lo=True)
    completion_max_length: int = _f(256, "Preference data: tokens kept of each target / chosen / rejected completion (EOS included).", lo=2)
    grpo: GRPOSettings = field(default_factory=GRPOSettings, metadata={"help": "The GRPO stage's settings.", "prefix": "grpo_"})
    judge_model: str = _f("", "Judge reward: a local judge model compared by its log-probs of 'A' / 'B' (default: --model, a separate frozen copy, no adapter).", cli_default=None)
    judge_url: str | None = _f(None, "Judge reward: an OpenAI-compatible endpoint instead (e.g. http://127.0.0.1:8000/v1 from `pluralign serve`), asked for one letter.")
    judge_api_model: str = _f("", "Model name sent to --judge-url (default: its first model).", cli_default=None)
    # ---------------------------------------------------------------- prompt
    labels: str = _f("auto", "Option labels: auto (digits up to 9 options, else letters), digits, letters (must match evaluation).", choices=LABELS)
    chat_template: bool = shared_field("chat_template")
    max_length: int | None = _f(None, "Keep only the last N prompt tokens.", lo=1)
    # ---------------------------------------------------------------- hardware
    dtype: str = shared_field("dtype")
    device: str = shared_field("device", check="device")
    gradient_checkpointing: bool = _f(False, "Trade compute for memory (recompute activations in the backward pass; ~30% slower).")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm.", lo=0, open_lo=True, cli=False)
    num_workers: int = _f(0, "DataLoader worker processes.", lo=0, cli=False)
    # ---------------------------------------------------------------- bookkeeping
    seed: int = _f(0, "Seed of the split, sampling and initialisation.", lo=0)
    out: str = _f("runs/train", "Output folder: adapter/, checkpoints/, log.jsonl, train_config.json, split.json, train_summary.json.", check="out_dir", path=True)
    save_steps: int = _f(50, "Checkpoint every N steps (0: none before the end). Default: scaled to the run, a fifth of --steps, between 1 and 50 (50 with --epochs), so a short run can be resumed too.", lo=0, cli_default=None)
    save_total_limit: int = _f(2, "Keep at most this many checkpoints.", lo=1, cli=False)
    logging_steps: int = _f(5, "Log every N steps (OUT/log.jsonl).", lo=1)
    resume: bool = _f(False, "Continue from the latest checkpoint in OUT (same configuration).")
    progress: bool = shared_field("progress")

    def __post_init__(self):
        if isinstance(self.grpo, dict):  # a train_config.json record read back: TrainConfig(**record)
            self.grpo = GRPOSettings(**self.grpo)

    def validate(self) -> "TrainConfig":
        """Each setting within its range and choices, as its field's metadata says (the rules the
        ``pluralign train`` flags are checked against), and the settings that depend on each other."""
        check_settings(self)
        if self.split != "country,question" and (self.test_questions or self.question_test_frac is not None):
            raise PluralignError("test_questions / question_test_frac need the two-way split (split 'country,question')", field="split")
        if self.stage == "grpo":
            self.grpo.validate()
            g = self.grpo
            if g.reward_weights and len(g.reward_weights) != len(g.reward):
                raise PluralignError(f"{len(g.reward_weights)} reward weights for {len(g.reward)} rewards", field="grpo_reward_weights")
        return self

    def to_dict(self) -> dict:
        """The record of ``train_config.json``: the fields, the GRPO block nested (``"grpo": {...}``)."""
        return asdict(self)

    def flat_dict(self) -> dict:
        """One key per flag / config-file key (``grpo_beta``, not ``grpo.beta``)."""
        return flatten(type(self), self.to_dict())

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """A config from its record or a config file: nested (``"grpo": {...}``, as :meth:`to_dict`
        writes) or flat (``grpo_beta``: config files, and records written before the block was nested)."""
        known = {s.name for s in settings(cls)} | {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise PluralignError(f"unknown training config field(s): {', '.join(sorted(unknown))}", field=sorted(unknown)[0])
        return cls(**unflatten(cls, d))

    @classmethod
    def help(cls) -> dict[str, str]:
        """Each setting's help, by its flat name (the flag's, ``grpo_beta``)."""
        return {s.name: s.help for s in settings(cls)}
