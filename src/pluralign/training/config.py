"""Configuration of a training run (conditional SFT, DPO or GRPO), one field per knob, each with help text.

The same dataclass drives the Python API (:func:`pluralign.training.train`) and the CLI
(``pluralign train``); it is saved next to the outputs as ``train_config.json`` so a run can be
repeated and its held-out split rebuilt (``pluralign eval --split-from RUN``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from pluralign._fields import helpfield
from pluralign.errors import PluralignError

TASKS = ("individual", "distributional")
STAGES = ("sft", "dpo", "grpo")
SOFT_NORMS = ("vocab", "options")


_f = helpfield


@dataclass
class TrainConfig:
    # ---------------------------------------------------------------- what
    method: str = _f("cuma", "Adapter method: cuma, mixlora (as in Li et al. 2024: top-2 LoRA experts on gate/up/down routed from the MLP input + plain LoRA on q/k/v/o), hydralora (as in Tian et al. 2024: shared A, N B heads, dense per-linear router, on gate/up/down), mixlora-qv / hydralora-qv (the CuMA authors' baseline configurations: top-2 experts on q/v, MLP router), lora, dora, ptuning-v2, full.")
    task: str = _f("individual", "individual: one respondent's answer (loss on the answer label token); distributional: a group's answer distribution (soft-label cross-entropy).")
    stage: str = _f("sft", "sft: conditional supervised fine-tuning (survey data: the answer label; preference data: the chosen / human answer text); dpo: direct preference optimisation (survey data: human answer ≻ mean-collapse answer; preference data: its chosen ≻ rejected pairs); grpo: group-relative policy optimisation on preference / prompt data with the --reward functions (pluralign.training.grpo).")
    model: str = _f("smollm2-135m", "Backbone: short name, hub id, local folder or .gguf file.")
    data: str = _f("wvs-probe", "Dataset: a loader name (wvs-probe, wvs-shares, ...) or a path; preference / prompt data (prism:DIR, community-alignment:CSV, blend[:DIR]) for text SFT, DPO and GRPO.")
    strict: bool = _f(False, "Fail on the first unusable cell of the data (default: skip it and count it per reason in train_summary.json's dataset.dropped).")
    # ---------------------------------------------------------------- split
    split: str = _f("auto", "Hold-out unit: respondent, question, country, profile, or country,question (two-way: countries and questions held out at once; training sees only training countries x training questions; evaluation reports the cells unseen_questions, unseen_countries, unseen_both); auto = respondent for individual data, country for group data (held-out countries; the same rule as `pluralign eval --split auto`).")
    test_frac: float = _f(0.2, "Fraction of units held out for testing (never trained on); with the two-way split, of countries.")
    test_units: list = _f([], "Explicit units of the test part (overrides test_frac); with the two-way split, the test countries.")
    test_questions: list = _f([], "Two-way split: explicit test questions (overrides question_test_frac).")
    question_test_frac: float | None = _f(None, "Two-way split: fraction of questions held out for testing (None: test_frac).")
    val_frac: float = _f(0.0, "Fraction of units kept for validation (never trained on, never tested; where settings such as a reference's k are chosen); with the two-way split, on both axes.")
    countries: list = _f([], "Restrict the dataset to these countries before splitting.")
    questions: list = _f([], "Restrict the dataset to these question ids before splitting.")
    max_examples: int | None = _f(None, "Use at most this many training examples (a deterministic shuffle, then the first N).")
    seed: int = _f(0, "Seed of the split, of the shuffling and of the adapter initialisation.")
    # ---------------------------------------------------------------- prompt
    profile_prompt: bool = _f(True, "Put the profile in the system prompt (the paper's protocol); off for the ablation.")
    labels: str = _f("auto", "Option labels: auto (digits up to 9 options, else letters), digits, letters; must match evaluation.")
    chat_template: bool = _f(True, "Use the model's chat template (as `pluralign eval` does by default).")
    max_length: int | None = _f(None, "Truncate prompts to their last N tokens (None: no truncation).")
    soft_label_norm: str = _f("vocab", "Distributional loss: 'vocab' = cross-entropy of the full next-token distribution against the human distribution placed on the label tokens (also pushes mass onto the labels); 'options' = cross-entropy after renormalising over the option labels (what evaluation reads).")
    option_mass_weight: float = _f(0.0, "Weight of the option-mass term -log(next-token mass on the option labels) added to the loss, so the model keeps SAYING one of the labels. With soft_label_norm 'options', weight 1 gives exactly the 'vocab' loss; 0 trains only the labels' relative logits.")
    # ---------------------------------------------------------------- adapter
    rank: int | None = _f(None, "LoRA rank per expert (None: the adapter default).")
    alpha: float | None = _f(None, "LoRA alpha (None: the adapter default).")
    experts: int | None = _f(None, "Experts of MoE methods (None: the adapter default).")
    top_k: int | None = _f(None, "Experts used per token (None: the adapter default).")
    target_modules: list = _f([], "Linear layers to adapt (empty: the adapter default, q_proj and v_proj).")
    demographic_routing: bool = _f(True, "CuMA's router sees the profile embedding; off = hidden-state-only routing (ablation).")
    balance_loss: bool = _f(True, "Add the load-balancing loss of MoE methods; off for the ablation.")
    soft_routing: bool = _f(False, "Route every token to all experts (top-k = experts; the paper's soft-routing ablation).")
    profile_encoder: str = _f("minilm-l6", "Profile encoder of profile-routed methods: a sentence encoder (short name, hub id or folder; its embedding size sets the router's input), 'backbone' or 'backbone:LAYER' (the LLM's own mean-pooled hidden state of the profile text), 'culture-map' (numeric cultural-map features), or several joined by '+' (e.g. minilm-l6+culture-map). Recorded in the adapter; evaluation and a DPO stage from --init-adapter reuse it.")
    init_adapter: str | None = _f(None, "Start from this trained adapter folder (e.g. the SFT adapter before DPO).")
    enrich_profile: bool = _f(False, "Profile enrichment: a country profile also carries its Inglehart-Welzel cultural-map position and zone (table shipped in the package, pluralign.data.culture), in the persona text and, with the culture-map encoder, in the router.")
    map_before: int | None = _f(None, "Cultural-map wave: use each country's latest map coordinates from a survey year BEFORE this one (e.g. 2017 for WVS-7 data, so the side information does not come from the evaluation data's own wave); None: the latest coordinates. Applies to profile enrichment, the culture-map encoder and the map reference.")
    top_layers: int | None = _f(None, "Adapt only the top N decoder layers (peft layers_to_transform; the same for MoE-LoRA). None: every layer.")
    trunk_cache_dir: str = _f("auto", "Where cached trunk states are also kept on disk and reused by later runs on the same backbone and prompts ('auto': $PLURALIGN_CACHE/trunk; '' or 'none': memory only).")
    cache_trunk: bool = _f(True, "With top_layers: run the frozen layers below the first adapted one once per row and cache their output across epochs (exact; checked against the full forward before training).")
    # ---------------------------------------------------------------- optimisation
    steps: int = _f(100, "Optimizer steps (ignored when epochs is set).")
    epochs: float | None = _f(None, "Train for this many passes over the training rows (sets the number of steps).")
    batch_size: int = _f(8, "Examples per device per forward pass.")
    grad_accum: int = _f(1, "Gradient accumulation steps (effective batch = batch_size x grad_accum x processes).")
    lr: float = _f(2e-4, "Peak learning rate of AdamW.")
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    warmup_ratio: float = _f(0.05, "Fraction of steps of linear warm-up before the cosine decay.")
    scheduler: str = _f("cosine", "Learning-rate schedule (any transformers scheduler name: cosine, linear, constant, ...).")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm.")
    dtype: str = _f("auto", "auto (bf16 mixed precision on CUDA, fp32 on CPU), fp32, bf16.")
    device: str = _f("auto", "auto, cpu, cuda (multi-GPU: launch with `accelerate launch`).")
    gradient_checkpointing: bool = _f(False, "Recompute activations in the backward pass (less memory, ~30% slower).")
    dpo_beta: float = _f(0.1, "DPO temperature beta (stage dpo).")
    completion_max_length: int = _f(256, "Preference data: keep at most N tokens of each target / chosen / rejected completion (EOS included).")
    # ---------------------------------------------------------------- GRPO (stage grpo; pluralign.training.grpo)
    grpo_reward: list = _f([], "Reward functions, summed: blend-match (BLEnD soft exact match with the profile's human answers), blend-weighted (BLEnD's count-weighted score), judge (the judge's pairwise preference of the completion over the reference policy's greedy answer, both orders), or module:function (TRL signature f(prompts, completions, completion_ids, **columns) -> list of floats). Empty: blend-match when the data has human answers, else judge.")
    grpo_reward_weights: list = _f([], "One weight per --reward (empty: all 1).")
    grpo_num_generations: int = _f(4, "Completions sampled per prompt (the GRPO group); --batch-size counts prompts.")
    grpo_max_completion_length: int = _f(32, "New tokens per sampled completion.")
    grpo_temperature: float = _f(1.0, "Sampling temperature of the rollouts (log-probs use the same temperature).")
    grpo_top_p: float = _f(1.0, "Nucleus sampling mass of the rollouts.")
    grpo_top_k: int = _f(0, "Top-k sampling of the rollouts (0: off).")
    grpo_beta: float = _f(0.0, "KL coefficient to the reference policy (the model at the start of the stage, e.g. the --init-adapter SFT model); 0 = no KL (TRL's default).")
    grpo_epsilon: float = _f(0.2, "Clipping epsilon of the policy ratio (clip to [1 - eps, 1 + eps_high]).")
    grpo_epsilon_high: float | None = _f(None, "Upper clipping epsilon (DAPO clip-higher); None = grpo_epsilon.")
    grpo_num_iterations: int = _f(1, "Optimizer steps per generation batch (mu; > 1 makes the clip active).")
    grpo_loss_type: str = _f("dapo", "Loss aggregation: grpo (mean per sequence, then over sequences), dapo / bnpo (mean over tokens), dr_grpo (sum / (sequences x max length)).")
    grpo_scale_rewards: str = _f("group", "Advantage scaling: group (divide by the group's reward std), batch, none.")
    grpo_mask_truncated: bool = _f(False, "Leave completions that hit the length limit out of the GRPO loss.")
    judge_model: str = _f("", "Judge of the judge reward: a local model (short name, hub id, folder) compared by its log-probs of 'A' / 'B' after a judge prompt; empty = the --model backbone (a separate frozen copy, no adapter).")
    judge_url: str | None = _f(None, "Judge as an OpenAI-compatible endpoint instead (e.g. http://127.0.0.1:8000/v1 of `pluralign serve`); asked for one letter, A or B.")
    judge_api_model: str = _f("", "Model name sent to --judge-url (empty: the endpoint's first model).")
    # ---------------------------------------------------------------- bookkeeping
    out: str = _f("runs/train", "Output folder: adapter/, checkpoints/, log.jsonl, train_config.json, split.json.")
    save_steps: int = _f(50, "Save a resumable checkpoint every N steps (0: only at the end).")
    save_total_limit: int = _f(2, "Keep at most this many checkpoints.")
    logging_steps: int = _f(5, "Log loss and learning rate every N steps.")
    resume: bool = _f(False, "Resume from the latest checkpoint in OUT/checkpoints (same config).")
    progress: bool = _f(True, "Show a progress bar.")
    num_workers: int = _f(0, "DataLoader worker processes.")

    def validate(self) -> "TrainConfig":
        from pluralign.training.methods import METHODS

        if self.method not in METHODS:
            raise PluralignError(f"unknown method {self.method!r} (available: {', '.join(METHODS)})", field="method")
        if self.task not in TASKS:
            raise PluralignError(f"unknown task {self.task!r} (individual | distributional)", field="task")
        if self.stage not in STAGES:
            raise PluralignError(f"unknown stage {self.stage!r} (sft | dpo | grpo)", field="stage")
        if not (0 <= self.option_mass_weight < float("inf")):
            raise PluralignError(f"option_mass_weight must be a finite number >= 0, got {self.option_mass_weight}", field="option_mass_weight")
        if self.val_frac < 0 or self.val_frac >= 1:
            raise PluralignError(f"val_frac must be in [0, 1), got {self.val_frac}", field="val_frac")
        if self.split != "country,question" and (self.test_questions or self.question_test_frac is not None):
            raise PluralignError("test_questions / question_test_frac need the two-way split (split 'country,question')", field="split")
        if self.soft_label_norm not in SOFT_NORMS:
            raise PluralignError(f"unknown soft-label normalisation {self.soft_label_norm!r} (vocab | options)", field="soft_label_norm")
        for name in ("steps", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise PluralignError(f"{name} must be >= 1, got {getattr(self, name)}", field=name)
        if self.lr <= 0:
            raise PluralignError(f"lr must be positive, got {self.lr}", field="lr")
        if self.save_steps < 0:
            raise PluralignError(f"save_steps must be >= 0, got {self.save_steps}", field="save_steps")
        if self.top_layers is not None and self.top_layers < 1:
            raise PluralignError(f"top_layers must be >= 1, got {self.top_layers}", field="top_layers")
        if self.epochs is not None and not (self.epochs > 0 and self.epochs < float("inf")):
            raise PluralignError(f"epochs must be a positive number, got {self.epochs}", field="epochs")
        if self.max_examples is not None and self.max_examples < 1:
            raise PluralignError(f"max_examples must be >= 1, got {self.max_examples}", field="max_examples")
        if self.completion_max_length < 2:
            raise PluralignError(f"completion_max_length must be >= 2, got {self.completion_max_length}", field="completion_max_length")
        if self.stage == "grpo":
            from pluralign.training.grpo import settings_from_config

            settings_from_config(self)
            if self.grpo_reward_weights and len(self.grpo_reward_weights) != len(self.grpo_reward):
                raise PluralignError(f"{len(self.grpo_reward_weights)} reward weights for {len(self.grpo_reward)} rewards",
                                     field="grpo_reward_weights")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise PluralignError(f"unknown training config field(s): {', '.join(sorted(unknown))}", field=sorted(unknown)[0])
        return cls(**d)

    @classmethod
    def help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in fields(cls)}
