"""Training: conditional SFT (individual answers, group distributions) and DPO on top of adapters.

* :class:`TrainConfig` — every knob of a run, with help text;
* :func:`train` — the whole pipeline (data, split, prompts, adapter, Trainer, saved adapter);
* :class:`ConditionalTrainer` / :class:`DPOConditionalTrainer` — ``transformers.Trainer`` with the
  answer-token / soft-label / DPO losses;
* :mod:`pluralign.training.data` — prompts identical to evaluation, collator with ``profile_embeds``;
* preference / prompt data (PRISM, Community Alignment, BLEnD): text SFT and sequence DPO
  (:mod:`pluralign.training.text`), GRPO (:mod:`pluralign.training.grpo`, in-house, also ALIGN's RL
  stage), run by :mod:`pluralign.training.textrun` (``--stage sft|dpo|grpo``);
* :mod:`pluralign.training.stages` — the stage registry: ``sft`` / ``dpo`` / ``grpo`` on survey or
  text data, each registered by the module that runs its data.

Multi-GPU: ``accelerate launch -m pluralign.cli.main train ...`` (the Trainer picks the
distributed set-up from accelerate); see ``scripts/accelerate_smoke.sh`` for 2 CPU processes.
"""

from pluralign.training.config import GRPOSettings, TrainConfig


def train(cfg: TrainConfig) -> dict:
    """Run one training job described by ``cfg`` (the stage of its data kind); returns the run summary."""
    from pluralign.training.stages import data_kind, get_stage  # the stage registry imports run.py / textrun.py

    cfg.validate()
    return get_stage(cfg.stage, data_kind(cfg)).run(cfg)


__all__ = ["TrainConfig", "GRPOSettings", "train", "build_trainer", "load_split", "ConditionalTrainer", "DPOConditionalTrainer"]


def __getattr__(name):  # keep `import pluralign.training` light (no torch / transformers import): the CLI reads TrainConfig
    if name in ("build_trainer", "load_split"):
        from pluralign.training import run

        return getattr(run, name)
    if name == "ConditionalTrainer":
        from pluralign.training.trainer import ConditionalTrainer

        return ConditionalTrainer
    if name == "DPOConditionalTrainer":
        from pluralign.training.dpo import DPOConditionalTrainer

        return DPOConditionalTrainer
    raise AttributeError(name)
