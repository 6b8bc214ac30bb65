"""``pluralign eval``: score a model on survey items with one or more prompting methods."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pluralign.cli._common import markdown_table, quiet_libraries
from pluralign.errors import PluralignError

EVAL_HELP = """Evaluate a causal LM on survey-style value questions, conditioned on demographic profiles.

For each method the model reads each item once (batched, left-padded), the probabilities of the option labels are read from the next-token logits and renormalised over the options; the results are compared with the human answers of the same group (accuracy, macro-F1, Earth Mover's distance, Jensen-Shannon distance, entropy). Two model-free references are always reported: uniform, and the mean answer distribution of the training groups (a model that collapses to the mean).

Examples:

  pluralign eval                                   # SmolLM2 on shipped WVS country shares
  pluralign eval --data wvs-probe --method vanilla,persona,fewshot
  pluralign eval --model Qwen/Qwen2.5-0.5B-Instruct --data wvs-shares --test-units USA,CHN
  pluralign eval --adapter runs/cuma/adapter      # a trained adapter (see `pluralign train`)
"""


def register(app: typer.Typer) -> None:
    app.command("eval", help=EVAL_HELP)(eval_cmd)


def eval_cmd(
    model: str = typer.Option("smollm2-135m", help="Short name (smollm2-135m), hub id, local folder or .gguf file."),
    data: str = typer.Option("wvs-shares", help="Dataset: a loader name (wvs-shares, wvs-probe, ...), name:path, or a path."),
    method: str = typer.Option("vanilla,persona", help="Comma-separated prompting methods: vanilla, persona, fewshot."),
    split: str = typer.Option("auto", help="Hold-out unit: respondent, question, country, profile, none; auto = respondent for individual data, country for group data."),
    test_units: Optional[str] = typer.Option(None, help="Comma-separated units for the test part (e.g. USA,CHN,DEU for --split country); default: a hashed --test-frac."),
    test_frac: float = typer.Option(0.2, help="Fraction of units held out for testing when --test-units is not given."),
    countries: Optional[str] = typer.Option(None, help="Restrict the dataset to these countries (ISO3 codes or names) before splitting."),
    questions: Optional[str] = typer.Option(None, help="Restrict to these question ids (comma-separated)."),
    max_items: Optional[int] = typer.Option(None, help="Keep N test questions spread evenly over the questionnaire (quick runs)."),
    k_shot: int = typer.Option(3, help="Demonstrations for the fewshot method."),
    scoring: str = typer.Option("next-token", help="next-token: one forward pass, label-token probabilities; loglik: full option-text log-likelihood."),
    labels: str = typer.Option("auto", help="Option labels: auto (digits up to 9 options, else letters), digits, letters."),
    chat_template: bool = typer.Option(True, "--chat-template/--no-chat-template", help="Use the model's chat template (a plain System/User/Assistant format when off)."),
    batch_size: int = typer.Option(16, help="Prompts per forward pass."),
    dtype: str = typer.Option("auto", help="auto (fp32 on CPU, bf16 on CUDA), fp32, bf16, fp16."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1, ..."),
    adapter: Optional[Path] = typer.Option(None, help="A trained adapter folder (pluralign train) to apply to the model."),
    split_from: Optional[Path] = typer.Option(None, help="A training run folder (pluralign train --out): rebuild its data selection and held-out split from its split.json (overrides --data, --split, --test-units, --test-frac, --countries, --questions, --seed)."),
    soft_prompt: Optional[Path] = typer.Option(None, help="A soft prompt (pluralign softprompt) to prepend."),
    seed: int = typer.Option(0, help="Seed of the split and of demonstration sampling."),
    out: Path = typer.Option(Path("runs/eval"), help="Output folder: one results JSON per method, summary.json, summary.png."),
    plot: bool = typer.Option(True, help="Write summary.png."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    from pluralign.cli.main import run_guarded

    run_guarded(
        _run, model=model, data=data, method=method, split=split, test_units=test_units, test_frac=test_frac,
        countries=countries, questions=questions, max_items=max_items, k_shot=k_shot, scoring=scoring,
        labels=labels, chat_template=chat_template, batch_size=batch_size, dtype=dtype, device=device,
        adapter=adapter, split_from=split_from, soft_prompt=soft_prompt, seed=seed, out=out, plot=plot, progress=progress,
    )


def spread_items(ds, n: int) -> list[str]:
    """``n`` question ids evenly spread over the dataset's items in questionnaire order."""
    import re

    ids = sorted(ds.items, key=lambda q: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", q)])
    if n >= len(ids):
        return ids
    step = len(ids) / n
    return [ids[int(i * step)] for i in range(n)]


def _csv(s: str | None) -> list[str] | None:
    return [x.strip() for x in s.split(",") if x.strip()] if s else None


def _apply_split_from(a: dict) -> None:
    """Overwrite the data / split arguments with those a training run recorded in split.json."""
    from pluralign.io import read_json

    f = Path(a["split_from"]) / "split.json"
    if not f.exists():
        raise PluralignError("no split.json in this folder (is it a `pluralign train` output?)", file=a["split_from"], field="split_from")
    rec = read_json(f)
    try:
        a["data"], a["split"], a["test_frac"], a["seed"] = rec["data"], rec["by"], float(rec["test_frac"]), int(rec["seed"])
    except (KeyError, TypeError, ValueError) as e:
        raise PluralignError(f"malformed split record ({e})", file=f) from None
    a["test_units"] = ",".join(rec.get("test_units") or []) or None
    a["countries"] = ",".join(rec.get("countries") or []) or None
    a["questions"] = ",".join(rec.get("questions") or []) or None
    typer.echo(f"split from {f}: {rec['data']} by {rec['by']}, test_frac {rec['test_frac']}, seed {rec['seed']}", err=True)


def _run(**a) -> None:
    quiet_libraries()
    from pluralign.data import load_dataset, split_dataset
    from pluralign.evaluation.methods import METHODS
    from pluralign.evaluation.report import save_results, summary_rows, write_plot
    from pluralign.evaluation.runner import EvalConfig, evaluate
    from pluralign.models import load_backbone

    methods = _csv(a["method"]) or ["vanilla"]
    for m in methods:
        if m not in METHODS:
            raise PluralignError(f"unknown method {m!r} (available: {', '.join(sorted(METHODS))})", field="method")
    if a["scoring"] not in ("next-token", "loglik"):
        raise PluralignError(f"unknown scoring {a['scoring']!r} (next-token | loglik)", field="scoring")
    if a.get("split_from"):
        _apply_split_from(a)
    elif a["adapter"] and (Path(a["adapter"]).parent / "split.json").exists():
        typer.echo(f"note: {a['adapter']} was trained with a held-out split; pass --split-from {Path(a['adapter']).parent} to evaluate on it", err=True)
    ds = load_dataset(a["data"])
    if a["countries"] or a["questions"]:
        ds = ds.filter(countries=_csv(a["countries"]), questions=_csv(a["questions"]))
    by = a["split"] if a["split"] != "auto" else ("respondent" if ds.kind == "individual" else "country")
    sp = split_dataset(ds, by, test_frac=a["test_frac"], seed=a["seed"], test_units=_csv(a["test_units"]))
    test = sp.test
    if a["max_items"]:
        test = test.filter(questions=spread_items(test, a["max_items"]))
    typer.echo(
        f"data {ds.name} ({ds.kind}): {len(ds)} examples; split by {by}: train {len(sp.train)}, test {len(test)} "
        f"({len(test.items)} items, {len(test.groups())} groups)",
        err=True,
    )
    typer.echo(f"loading {a['model']} ...", err=True)
    model, tok = load_backbone(a["model"], dtype=a["dtype"], device=a["device"])
    profile_kwargs = None
    if a["adapter"]:
        from pluralign.adapters import load_adapter_for_eval

        model, profile_kwargs = load_adapter_for_eval(model, a["adapter"])
    if a["soft_prompt"]:
        from pluralign.blackbox import load_soft_prompt_model

        model = load_soft_prompt_model(model, a["soft_prompt"])
    results = []
    out: Path = a["out"]
    for m in methods:
        cfg = EvalConfig(
            method=m, k_shot=a["k_shot"], batch_size=a["batch_size"], scoring=a["scoring"], labels=a["labels"],
            chat_template=None if a["chat_template"] else False, seed=a["seed"],
        )
        res = evaluate(
            model, tok, test, cfg, train=sp.train, model_name=a["model"], split=sp.describe(),
            profile_kwargs=profile_kwargs, progress=a["progress"],
            adapter=str(a["adapter"]) if a["adapter"] else None,
        )
        if a["soft_prompt"]:
            res["soft_prompt"] = str(a["soft_prompt"])
        path = save_results(res, out / f"eval-{ds.name}-{m}.json")
        typer.echo(f"{m}: wrote {path}", err=True)
        results.append(res)
    header, rows = summary_rows(results)
    summary = {"results": [str(out / f"eval-{ds.name}-{m}.json") for m in methods], "table": {"header": header, "rows": rows}}
    save_results(summary, out / "summary.json")
    if a["plot"]:
        typer.echo(f"plot: {write_plot(results, out / 'summary.png')}", err=True)
    typer.echo(markdown_table(header, rows))
