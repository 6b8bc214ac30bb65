"""The settings of word-association training, generation and the value-transfer check, each declared
once: the two training stages (:class:`SFTStage`, :class:`RLStage`, their shared fields in
:class:`Stage`), :class:`GenConfig` and :class:`TransferConfig`. ``pluralign wordassoc train`` and
``eval`` build their options (help, default, range, choices) from these fields
(:mod:`pluralign.cli.wordassoc`).

This module stays light (no torch, numpy or model code), so the CLI can read the fields when it
starts; :mod:`pluralign.wordassoc.train`, ``.generate`` and ``.transfer`` re-export the classes.
The LoRA block's type is only named here (``LoRASettings`` lives with the adapters, which load torch);
its default is built when a stage is made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pluralign._fields import helpfield, restate
from pluralign.training.config import GRPOSettings

if TYPE_CHECKING:  # pragma: no cover
    from pluralign.adapters.config import LoRASettings

#: the training tasks of the SFT stage and the tasks `wordassoc eval` scores
TASKS = ("generation", "ranking")
#: the RL stage's rewards (pluralign.wordassoc.metrics.REWARDS; listed here so the CLI need not load it)
RL_REWARDS = ("spearman", "precision")


def align_lora(**kw) -> "LoRASettings":
    """The LoRA of both stages: :class:`pluralign.adapters.config.LoRASettings` (the one declaration
    of LoRA settings) on every linear layer (``all-linear``), as ALIGN; ``kw`` overrides fields."""
    from pluralign.adapters.config import LoRASettings

    return LoRASettings(**{"target_modules": ("all-linear",), **kw})


@dataclass
class Stage:
    """The fields both training stages have (defaults: the SFT stage's; :class:`RLStage` restates
    those it changes)."""

    output_dir: str = helpfield("runs/wordassoc/sft", "Checkpoints and the final adapter (<dir>/adapter).")
    n_targets: int = helpfield(3, "Responses per generation target (ALIGN used 3); RL: words asked for (precision reward).", lo=1)
    n_candidates: int = helpfield(5, "Candidates per ranking prompt.", lo=2)
    max_steps: int = helpfield(100, "Optimizer steps.", lo=1)
    batch_size: int = helpfield(8, "Per-device batch (GRPO: completions per step, = prompts x the group size).", lo=1)
    learning_rate: float = helpfield(2e-4, "Peak learning rate.", lo=0, open_lo=True)
    save_steps: int = helpfield(50, "Checkpoint every N steps (resumable).", lo=1)
    logging_steps: int = helpfield(5, "Log the loss (RL: the reward) every N steps.", lo=1)
    seed: int = helpfield(0, "Seed of shuffling, sampling, dropout and LoRA init.", lo=0)


@dataclass
class SFTStage(Stage):
    tasks: str = helpfield("generation", "SFT tasks: generation, or generation,ranking.", choices=TASKS, csv=True)
    samples_per_cue: int = helpfield(1, "SFT samples per cue (next strength-ordered groups of n_targets responses).", lo=1)
    epochs: float = helpfield(1.0, "Epochs when max_steps is -1 (Python API only; the CLI counts steps).", lo=0, open_lo=True)
    grad_accum: int = helpfield(1, "Gradient accumulation steps.", lo=1)
    max_length: int = helpfield(256, "Truncate prompt+completion to this many tokens.", lo=1)
    lora: LoRASettings = field(default_factory=align_lora, metadata={"help": "LoRA settings (default: rank 16, alpha 32, every linear layer)."})


@dataclass
class RLStage(Stage):
    output_dir: str = restate(Stage, "output_dir", "runs/wordassoc/rl")
    max_steps: int = restate(Stage, "max_steps", 30)
    learning_rate: float = restate(Stage, "learning_rate", 5e-5)
    save_steps: int = restate(Stage, "save_steps", 25)
    logging_steps: int = restate(Stage, "logging_steps", 1)
    reward: str = helpfield("spearman", "RL reward: spearman (ranking; ALIGN) or precision (generation).", choices=RL_REWARDS)
    grpo: GRPOSettings = field(default_factory=GRPOSettings, metadata={"help": "The GRPO settings (pluralign.training.grpo; the same as "
                                                                              "`pluralign train --stage grpo`): group size, completion length, sampling, KL, clipping."})
    lora: LoRASettings | None = field(default_factory=align_lora, metadata={"help": "LoRA settings when no SFT adapter is given (None: train all weights; tiny models only)."})


@dataclass
class GenConfig:
    batch_size: int = helpfield(16, "Prompts per generate() call (left-padded).", lo=1)
    max_new_tokens: int = helpfield(32, "New tokens per completion.", lo=1)
    num_samples: int = helpfield(1, "Completions per prompt: 1 = greedy; >1 = sampled and merged by frequency.", lo=1)
    temperature: float = helpfield(1.0, "Sampling temperature (num_samples > 1).", lo=0, open_lo=True)
    top_p: float = helpfield(0.95, "Nucleus sampling mass (num_samples > 1).", lo=0, hi=1, open_lo=True)
    seed: int = helpfield(0, "Seed of sampling.", lo=0)
    chat_template: bool | None = helpfield(None, "Use the model's chat template (None = if it has one).")
    min_new_tokens: int | None = helpfield(None, "Force at least this many new tokens (benchmarks only).", lo=0)


@dataclass
class TransferConfig:
    countries: tuple[str, str] = helpfield(("USA", "CHN"), "The two countries compared (ISO3 or names).")
    target: str = helpfield("USA", "The culture of the training data (SWOW-EN: USA).")
    n_tension: int = helpfield(20, "Size of the high-tension subset (largest US-China JSD).", lo=1)
    n_items: int | None = helpfield(None, "Evaluate at most this many WVS items: all high-tension ones plus a hashed sample of the rest (default: all).", lo=1)
    method: str = helpfield("persona", "Prompting method of the evaluation (persona conditions on the country).")
    batch_size: int = helpfield(16, "Prompts per forward pass.", lo=1)
    seed: int = helpfield(0, "Seed of the item sample.", lo=0)
