"""``pluralign generate-eval``: open-ended evaluation of an adapter against its base model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from pluralign.cli._common import BatchSize, ChatTemplate, Device, Dtype, Model, quiet_libraries
from pluralign.errors import PluralignError

HELP = """Open-ended evaluation: generate an answer per (profile, prompt) with the adapter (the profile on its router and in the system prompt, as in training) and with the base model, then report:

win rate vs the base model (a judge compares the two answers pairwise in both orders; ties and off-format verdicts counted); BLEnD answer-match accuracy (binary and count-weighted, BLEnD's soft exact match against the region's annotators) where the data has human answers, with the model-free reference a mean-collapsed model would give (the other regions' most frequent human answer to the same question); Distinct-2 and answer entropy across the profiles asked the same prompt; and how often the judge agrees with the human-answer metric.

Judge: a local model (default: --model itself, without the adapter), read as P('A') vs P('B') after a judge prompt; or any OpenAI-compatible endpoint with --judge-url (`pluralign serve` is one). --no-judge skips the win rate.

Data: preference / prompt data (blend[:DIR], prism:DIR, community-alignment:CSV). --split-from RUN rebuilds a training run's held-out part (default with an adapter trained by `pluralign train`).

Examples:

  pluralign generate-eval --adapter runs/blend-grpo/adapter                 # held-out BLEnD questions of its run
  pluralign generate-eval --adapter runs/prism-dpo/adapter --judge-url http://127.0.0.1:8000/v1
  pluralign generate-eval --adapter runs/x/adapter --data blend --questions Al-en-01,Al-en-04 --no-judge
"""


def register(app: typer.Typer) -> None:
    app.command("generate-eval", help=HELP)(generate_eval_cmd)


def generate_eval_cmd(
    adapter: Path = typer.Option(..., help="A trained adapter folder (pluralign train) to evaluate."),
    model: Optional[str] = Model(None, help="Backbone (default: the adapter's base model)."),
    data: Optional[str] = typer.Option(None, help="Preference / prompt data (default: the adapter run's)."),
    split_from: Optional[Path] = typer.Option(None, help="A training run folder: evaluate its held-out part (default: the adapter's run, when it recorded one)."),
    split: str = typer.Option("auto", help="Hold-out unit when not from a run: auto (= question), question, profile, country, respondent."),
    test_frac: float = typer.Option(0.2, help="Held-out fraction when not from a run."),
    test_units: Optional[str] = typer.Option(None, help="Comma-separated held-out units when not from a run."),
    countries: Optional[str] = typer.Option(None, help="Restrict to these countries."),
    questions: Optional[str] = typer.Option(None, help="Restrict to these units (question / conversation ids)."),
    all_records: bool = typer.Option(False, "--all-records", help="Evaluate every record (no held-out split; only for adapters not trained on this data)."),
    max_records: Optional[int] = typer.Option(None, help="Evaluate at most N records (a deterministic spread over the test part)."),
    max_new_tokens: int = typer.Option(32, help="New tokens per answer."),
    batch_size: int = BatchSize(8, help="Prompts per generate() call."),
    sample: bool = typer.Option(False, "--sample/--greedy", help="Sample answers (default: greedy)."),
    temperature: float = typer.Option(1.0, help="Sampling temperature (with --sample)."),
    top_p: float = typer.Option(1.0, help="Nucleus mass (with --sample)."),
    judge: bool = typer.Option(True, "--judge/--no-judge", help="Judge adapter vs base (win rate)."),
    judge_model: Optional[str] = typer.Option(None, help="Local judge model (default: --model, without the adapter)."),
    judge_url: Optional[str] = typer.Option(None, help="OpenAI-compatible judge endpoint (e.g. http://127.0.0.1:8000/v1); API key from $PLURALIGN_JUDGE_API_KEY."),
    judge_api_model: Optional[str] = typer.Option(None, help="Model name sent to --judge-url (default: its first model)."),
    judge_min_mass: float = typer.Option(0.0, help="Local judge: a verdict whose probability on {A, B} is below this counts as off-format."),
    tie_margin: float = typer.Option(0.0, help="A judge P(adapter better) within this of 0.5 counts as a tie."),
    profile_prompt: Optional[bool] = typer.Option(None, "--profile-prompt/--no-profile-prompt", help="Profile in the system prompt (default: as the run trained)."),
    chat_template: bool = ChatTemplate(),
    max_length: Optional[int] = typer.Option(None, help="Cut prompts to N tokens."),
    seed: int = typer.Option(0, help="Seed of the split and of sampling."),
    dtype: str = Dtype(),
    device: str = Device(),
    out: Path = typer.Option(Path("runs/generate-eval.json"), help="Report (JSON: metrics and every answer)."),
) -> None:
    from pluralign.cli.main import run_guarded

    run_guarded(_run, **locals())


def _csv(s):
    return [x.strip() for x in s.split(",") if x.strip()] if s else []


def _spread(items: list, n: int | None) -> list:
    if n is None or n >= len(items):
        return items
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def _run(**a) -> None:
    quiet_libraries()
    from pluralign.cli._validate import validate

    validate("generate-eval", a)
    from pluralign.adapters import load_adapter_for_eval, read_adapter_config
    from pluralign.evaluation.run import read_split_record
    from pluralign.io import atomic_write_json
    from pluralign.training.textrun import load_text_split

    meta = read_adapter_config(a["adapter"])
    extra = meta.get("extra") or {}
    rec = None
    if a["split_from"] is not None:
        rec = read_split_record(a["split_from"], field="--split-from")  # the run's split.json, as pluralign eval --split-from reads it
    elif isinstance(extra.get("split"), dict) and extra["split"].get("kind") == "preference" and not a["all_records"]:
        rec = extra["split"]
    if rec is not None and rec.get("kind") != "preference":
        raise PluralignError("this run trained on survey data; use `pluralign eval`", file=a["split_from"] or a["adapter"], field="--split-from")
    from pluralign.data.fingerprint import absolute_spec

    if rec is not None and a["data"] and absolute_spec(a["data"]) != absolute_spec(rec.get("data")):
        raise PluralignError(f"--data {a['data']!r} differs from the run's {rec.get('data')!r}", field="--data")
    data = a["data"] or (rec or {}).get("data")
    if not data:
        raise PluralignError("which data? pass --data (blend, prism:DIR, community-alignment:CSV) or --split-from RUN", field="--data")
    if rec is not None:
        _, sp = load_text_split(rec)
        part = sp.test
    else:
        sel = {"data": data, "countries": _csv(a["countries"]), "questions": _csv(a["questions"])}
        if a["all_records"]:
            from pluralign.data.loaders import load_preferences

            part = load_preferences(data)
            if sel["countries"] or sel["questions"]:
                part = part.filter(countries=sel["countries"] or None, questions=sel["questions"] or None)
        else:
            _, sp = load_text_split({**sel, "by": a["split"], "test_frac": a["test_frac"], "seed": a["seed"], "test_units": _csv(a["test_units"])})
            part = sp.test
    if rec is not None and (a["countries"] or a["questions"]):
        part = part.filter(countries=_csv(a["countries"]) or None, questions=_csv(a["questions"]) or None)
    records = _spread(part.records, a["max_records"])
    role = part.profile_role
    train_cfg = extra.get("train_config") or {}
    profile_prompt = a["profile_prompt"] if a["profile_prompt"] is not None else bool(train_cfg.get("profile_prompt", True))

    from pluralign.evaluation.generate import GenEvalConfig, evaluate_generation, make_judge
    from pluralign.models import load_backbone

    model_name = a["model"] or meta.get("base_model")
    base, tok = load_backbone(model_name, dtype=a["dtype"], device=a["device"])
    fresh, tok2 = load_backbone(model_name, dtype=a["dtype"], device=a["device"])
    adapted, profile_kwargs = load_adapter_for_eval(fresh, a["adapter"], tokenizer=tok2)
    j = None
    if a["judge"]:
        j = make_judge(model=a["judge_model"], url=a["judge_url"], api_model=a["judge_api_model"], device=a["device"], dtype=a["dtype"],
                       batch_size=a["batch_size"], min_mass=a["judge_min_mass"], role=role,
                       backbone=None if (a["judge_url"] or a["judge_model"]) else (base, tok))
    cfg = GenEvalConfig(max_new_tokens=a["max_new_tokens"], batch_size=a["batch_size"], do_sample=a["sample"], temperature=a["temperature"],
                        top_p=a["top_p"], profile_prompt=profile_prompt, chat_template=a["chat_template"], max_length=a["max_length"],
                        tie_margin=a["tie_margin"], seed=a["seed"])
    typer.echo(f"generating {len(records)} answers with the adapter and {len(records)} with the base model (at most "
               f"{cfg.max_new_tokens} new tokens, batches of {cfg.batch_size})" + (f", then judging up to {2 * len(records)} pairwise orders"
               if j is not None else "") + " ...", err=True)
    rep = evaluate_generation(adapted, base, tok2, records, role=role, profile_kwargs=profile_kwargs, judge=j, cfg=cfg, base_tok=tok,
                              reference_pool=part.records)
    rep.update({"model": model_name, "adapter": str(a["adapter"]), "data": data, "split": (rec or {}).get("by") or ("none" if a["all_records"] else a["split"]),
                "profile_prompt": profile_prompt})
    atomic_write_json(a["out"], rep)
    lines = [f"{len(records)} records ({role} profiles) -> {a['out']}"]
    if "blend_match" in rep:
        b = rep["blend_match"]
        lines.append(f"BLEnD match: adapter {b['adapter_accuracy']:.3f} (weighted {b['adapter_weighted']:.3f}), base {b['base_accuracy']:.3f} (weighted {b['base_weighted']:.3f}) on {b['n']}")
    if "other_groups_top" in (rep.get("references") or {}):
        ref = rep["references"]["other_groups_top"]
        lines.append(f"reference (other regions' top human answer): {ref['accuracy']:.3f} (weighted {ref['weighted']:.3f}) on {ref['n']}")
    if "win_rate" in rep:
        w = rep["win_rate"]
        wr = "n/a" if w["win_rate"] is None else f"{w['win_rate']:.3f}"
        lines.append(f"win rate vs base: {wr} ({w['wins']} wins, {w['ties']} ties, {w['losses']} losses, {w['off_format']} off-format; judge {w['judge']})")
    if "judge_human_agreement" in rep and rep["judge_human_agreement"]["agreement"] is not None:
        h = rep["judge_human_agreement"]
        lines.append(f"judge agrees with the human-answer metric on {h['agree']}/{h['agree'] + h['disagree']} decisive records")
    d = rep["diversity"]["adapter"]
    if d["distinct2"] is not None:
        lines.append(f"across profiles: Distinct-2 {d['distinct2']:.3f}, answer entropy {d['entropy_bits']:.2f} of max {d['entropy_max_bits']:.2f} bits")
    typer.echo("\n".join(lines), err=True)
    typer.echo(json.dumps({k: rep[k] for k in ("blend_match", "win_rate", "diversity", "judge_human_agreement") if k in rep}, indent=2))
