"""The training stages: ``sft``, ``dpo`` and ``grpo``, each on ``survey`` or ``text`` data.

A stage is registered with :func:`register_stage` by the module that runs its kind of data:
:mod:`pluralign.training.run` (survey answers: ``sft``, ``dpo``) and
:mod:`pluralign.training.textrun` (preference / prompt data: ``sft``, ``dpo``, ``grpo``). Each
entry names the run of its data kind (``run(cfg) -> summary``), how its training rows are encoded
(``rows``) and the Trainer it trains them with (``trainer(ctx)``); :func:`pluralign.training.train`
picks the entry of ``(cfg.stage, data_kind(cfg))``. Adding a stage is one class with a decorator,
as textrun.py's text DPO stage is::

    @register_stage("dpo", "text", run=train_text)
    class TextDPO:
        @staticmethod
        def rows(tok, split, cfg, **encode): ...     # the chosen > rejected pairs, encoded
        @staticmethod
        def trainer(ctx: StageContext): ...          # a TextDPOTrainer over ctx.rows
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from pluralign.errors import PluralignError
from pluralign.registry import Registry

DATA_KINDS = ("survey", "text")


@dataclass(frozen=True)
class Stage:
    name: str  # sft | dpo | grpo
    data: str  # survey | text
    run: Callable[..., dict]  # the whole run of this data kind: run(cfg) -> summary
    rows: Callable[..., list]  # the encoded training rows (arguments: those of the data kind's run)
    trainer: Callable[["StageContext"], Any]  # the Trainer over the rows


@dataclass
class StageContext:
    """What a stage's ``trainer`` is built from; each stage reads the fields it needs."""

    cfg: Any  # the TrainConfig of the run (steps resolved from --epochs)
    model: Any
    tok: Any
    rows: list
    common: dict  # Trainer keyword arguments every stage passes on: model, args, train_dataset, callbacks
    collator: Any = None  # survey data: the ConditionalCollator
    profile_table: Any = None  # text data: profile embeddings per row key (or None)
    device: str = "cpu"
    bf16: bool = False
    records: list = field(default_factory=list)  # text data: the training records
    role: str = "user"  # text data: the role the profile speaks in


#: ``"stage:data"`` (e.g. ``dpo:survey``) -> Stage
STAGES: Registry[Stage] = Registry("stage", field="stage", modules=("pluralign.training.run", "pluralign.training.textrun"))


def stage_key(name: str, data: str) -> str:
    return f"{name}:{data}"


def register_stage(name: str, data: str, *, run: Callable[..., dict]):
    """Class decorator: register the class's ``rows`` and ``trainer`` as stage ``name`` on ``data``."""
    if data not in DATA_KINDS:
        raise ValueError(f"data kind must be one of {', '.join(DATA_KINDS)}, got {data!r}")

    def deco(cls):
        STAGES.add(stage_key(name, data), Stage(name, data, run, cls.rows, cls.trainer))
        return cls

    return deco


def get_stage(name: str, data: str) -> Stage:
    key = stage_key(name, data)
    if key not in STAGES:
        raise PluralignError(f"no stage {name!r} on {data} data (stages: {', '.join(STAGES.names())})", field="stage")
    return STAGES[key]


def data_kind(cfg) -> str:
    """``text`` for preference / prompt data or a stage that only text data has (grpo), else ``survey``."""
    from pluralign.data.loaders import is_preference_spec

    return "survey" if not is_preference_spec(cfg.data) and stage_key(cfg.stage, "survey") in STAGES else "text"


__all__ = ["DATA_KINDS", "STAGES", "Stage", "StageContext", "data_kind", "get_stage", "register_stage", "stage_key"]
