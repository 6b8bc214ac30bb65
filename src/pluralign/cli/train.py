"""``pluralign train``: conditional SFT, DPO and GRPO of an adapter on survey answers or preference data."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pluralign.cli._common import cli_defaults, command_from, option, quiet_libraries
from pluralign.errors import PluralignError
from pluralign.training.config import TrainConfig

TRAIN_HELP = """Fine-tune a causal LM to answer survey questions as a demographic profile would.

Every method is an adapter on the same backbone: cuma (mixture of LoRA experts routed on the token state AND the profile embedding); mixlora (the MixLoRA paper: top-2 LoRA experts on the FFN gate/up/down with a linear gate on the MLP input, plain LoRA on q/k/v/o); hydralora (the HydraLoRA paper: one shared A and N B heads, dense softmax router, no balance loss); mixlora-qv and hydralora-qv (the CuMA authors' baseline configurations: top-2 q/v mixtures with an MLP router); lora, dora, ptuning-v2 (deep prefix tuning), full (all weights).

Fast path: --top-layers N adapts only the top N decoder layers; the frozen layers below run once per row and are cached across epochs (exact; checked against the full forward before training). --epochs sets the number of steps from passes over the data.

Tasks: individual = one respondent's answer (WVS respondent probe), loss on the answer label token only, profile in the system prompt; distributional = a group's answer shares (WVS country shares), cross-entropy against the human distribution over the option labels. Training prompts are exactly the prompts `pluralign eval --method persona` (or vanilla with --no-profile-prompt) scores.

The held-out part is never trained on: its recipe is written to OUT/split.json, and `pluralign eval --split-from OUT` rebuilds the same split.

Preference / prompt data (--data prism:DIR, community-alignment:CSV, blend[:DIR]): --stage sft imitates the chosen / human answer text, --stage dpo trains on its chosen > rejected pairs (reference: the --init-adapter model), --stage grpo samples --grpo-num-generations completions per prompt (--batch-size counts prompts) with the profile on the router and scores them with --grpo-reward (blend-match, blend-weighted, judge, module:function); an in-house GRPO (group-normalised advantages, clipped ratio, KL to the reference with --grpo-beta), not TRL's trainer. Evaluate with `pluralign generate-eval --adapter OUT/adapter --split-from OUT`.

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


_CONFIG = option("config", Optional[Path], None, help="A JSON file of training settings (field names of TrainConfig, e.g. "
                 "configs/train/cuma-probe.json); flags given on the command line win.")


def _csv(s: str | None) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()] if s else []


def _list(v) -> list[str]:
    """A repeated option (or a config-file list / comma string) as a list of names."""
    if not v:
        return []
    if isinstance(v, str):
        return _csv(v)
    return [x for item in v for x in (_csv(item) if isinstance(item, str) and "," in item and ":" not in item else [item])]


def _floats(v, name: str) -> list[float]:
    if not v:
        return []
    parts = v if isinstance(v, list) else _csv(str(v))
    try:
        return [float(x) for x in parts]
    except (TypeError, ValueError):
        raise PluralignError(f"must be comma-separated numbers, got {v!r}", field="--" + name.replace("_", "-")) from None


def _apply_config_file(a: dict) -> None:
    """Values from ``--config`` replace the flags still at their defaults (explicit flags win)."""
    from pluralign._fields import flatten
    from pluralign.io import read_json

    data = read_json(a["config"])
    if not isinstance(data, dict):
        raise PluralignError("a training config must be a JSON object of TrainConfig fields", file=a["config"])
    data = flatten(TrainConfig, data)  # a nested "grpo" block (as train_config.json holds it) or flat grpo_* keys
    known = set(TrainConfig.help())
    defaults = cli_defaults(TrainConfig)
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
    from pluralign.training import train

    from pluralign.cli._validate import default_save_steps, validate

    validate("train", a)  # flags and --config fields, before any work
    if a.get("config"):
        _apply_config_file(a)

    from pluralign._fields import settings
    from pluralign.data.fingerprint import absolute_spec

    # every TrainConfig setting has a flag of the same name; lists and paths need converting from their CLI form
    special = dict(data=absolute_spec(a["data"]), model=_absolute(a["model"]),  # recorded so that the run names them from any folder
                   init_adapter=_absolute(a["init_adapter"]) if a["init_adapter"] else None, save_steps=default_save_steps(a))
    flat = {}
    for st in settings(TrainConfig):
        if st.name not in a:
            continue
        v = a[st.name]
        if st.name in special:
            v = special[st.name]
        elif st.base in (list, tuple):
            v = _list(v) if st.meta.get("repeat") else _floats(v, st.name) if st.meta.get("item") is float else _csv(v)
        elif v is None and st.default is not None:  # a flag whose unset default is the field's (judge_model: "")
            v = st.default
        elif isinstance(v, Path):
            v = str(v)
        flat[st.name] = v
    cfg = TrainConfig.from_dict(flat).validate()
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


#: every flag but --config is a TrainConfig setting: its name, help, default and accepted values are the field's
train_cmd = command_from(TrainConfig, _run, before=[_CONFIG])
