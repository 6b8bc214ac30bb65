"""The options of ``pluralign wordassoc train`` and ``eval`` that are settings of the word-association
configs (:mod:`pluralign.wordassoc.config`), with their flag names, and each command's flags in
order; read by the commands (:mod:`pluralign.cli.wordassoc`) and their rules (:mod:`pluralign.cli._validate`)."""

from __future__ import annotations

#: ``wordassoc train``'s flags (parameter names), in the order ``--help`` lists them
TRAIN_FLAGS = ("model", "data", "language", "stage", "adapter", "train_cues", "min_responses", "on_bad_row", "on_duplicate", "sft_tasks",
    "n_targets", "samples_per_cue", "n_candidates", "sft_steps", "sft_lr", "rl_steps", "rl_lr", "reward", "num_generations",
    "batch_size", "lora_r", "held_out_pairs", "seed", "split_seed", "dtype", "device", "threads", "out", "progress")
#: ``wordassoc eval``'s flags, in order
EVAL_FLAGS = ("model", "adapter", "data", "language", "split", "eval_cues", "min_responses", "on_bad_row", "on_duplicate", "ks", "n_words",
    "num_samples", "temperature", "n_candidates", "max_new_tokens", "batch_size", "tasks", "transfer", "transfer_items",
    "n_tension", "fixed_words", "top_up_rounds", "seed", "split_seed", "dtype", "device", "threads", "out", "progress")


def _stage_help(what: str, s) -> str:
    return f"{what}: {s.help[0].lower()}{s.help[1:]}"


def train_settings() -> list:
    """The settings of ``wordassoc train`` that are fields of the stage configs (flag name = parameter name)."""
    from pluralign.cli._common import field_setting as F
    from pluralign.training.config import GRPOSettings
    from pluralign.wordassoc.config import RLStage, SFTStage, Stage

    sft_steps, sft_lr = F(SFTStage, "max_steps", flag="--sft-steps"), F(SFTStage, "learning_rate", flag="--sft-lr")
    rl_steps, rl_lr = F(RLStage, "max_steps", flag="--rl-steps"), F(RLStage, "learning_rate", flag="--rl-lr")
    for st, what in ((sft_steps, "SFT"), (sft_lr, "SFT"), (rl_steps, "GRPO"), (rl_lr, "GRPO")):
        st.meta["help"] = _stage_help(what, st)
    return [F(SFTStage, "tasks", flag="--sft-tasks"), F(Stage, "n_targets"), F(SFTStage, "samples_per_cue"), F(Stage, "n_candidates"),
            sft_steps, sft_lr, rl_steps, rl_lr, F(RLStage, "reward"),
            F(GRPOSettings, "num_generations", help="GRPO completions per prompt (the group)."), F(Stage, "batch_size"),
            F(Stage, "seed", help="Seed of the training-cue subset, shuffling and sampling (and of the cue split unless --split-seed).")]


def eval_settings() -> list:
    """The settings of ``wordassoc eval`` that are fields of GenConfig, the stages' and TransferConfig."""
    from pluralign.cli._common import field_setting as F
    from pluralign.wordassoc.config import GenConfig, Stage, TransferConfig

    return [F(GenConfig, "num_samples", cli_default=4), F(GenConfig, "temperature"), F(Stage, "n_candidates"),
            F(GenConfig, "max_new_tokens", cli_default=24), F(GenConfig, "batch_size"),
            F(TransferConfig, "n_items", flag="--transfer-items"), F(TransferConfig, "n_tension"),
            F(GenConfig, "seed", help="Seed of sampling (and of the cue split and subset unless --split-seed).")]
