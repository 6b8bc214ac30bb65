"""``pluralign eval``: score a model on survey items with one or more prompting methods."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pluralign.cli._common import BatchSize, ChatTemplate, Device, Dtype, Model, Progress, markdown_table, quiet_libraries
from pluralign.evaluation.run import EvalRunConfig, evaluate_run

EVAL_HELP = """Evaluate a causal LM on survey-style value questions, conditioned on demographic profiles.

For each method the model reads each item once (batched, left-padded), the probabilities of the option labels are read from the next-token logits and renormalised over the options; the results are compared with the human answers of the same group (accuracy, macro-F1, Earth Mover's distance, Jensen-Shannon distance, entropy; NLL for respondents), with the next-token mass the model puts on the option labels (option_mass: how much it SAYS one of them). Model-free references are always reported beside the model: uniform; the mean answer distribution of the training groups (a model that collapses to the mean); for respondents the pooled and per-country training answer shares; for countries on the Inglehart-Welzel map the map's nearest training countries and a distance kernel; for questions no training row answered, the text-similarity reference.

Examples:

  pluralign eval                                   # SmolLM2 on shipped WVS country shares
  pluralign eval --data wvs-probe --method vanilla,persona,fewshot
  pluralign eval --model Qwen/Qwen2.5-0.5B-Instruct --data wvs-shares --test-units USA,CHN
  pluralign eval --adapter runs/cuma/adapter      # a trained adapter, scored on its run's held-out part

Two-way split (--split country,question): countries and questions are held out at once, and every method is scored on three cells, unseen_questions (training countries x test questions), unseen_countries (test countries x training questions) and unseen_both, each beside its references: uniform, the training countries' mean, the cultural-map neighbours and kernel (unseen countries), and the text-similarity reference (unseen questions: the same country's answers to the most similar training questions). With --val-frac, the references' settings (map k, kernel bandwidth, text k) are chosen on the validation rows, never on a test row.

  pluralign eval --data wvs-shares --split country,question --test-units ETH,BRA,AUS,BOL --val-frac 0.15 --method persona

An adapter trained by `pluralign train` knows its run: by default its data selection, held-out split and prompt format (method, labels, chat template) are rebuilt from what the run recorded, so no row it was trained on is scored. A selection whose test rows were trained on, other option labels, or another method than the run's is refused.
"""



def _h(name: str) -> str:
    """The help text of an option: its :class:`EvalRunConfig` field's."""
    return EvalRunConfig.__dataclass_fields__[name].metadata["help"]


def register(app: typer.Typer) -> None:
    app.command("eval", help=EVAL_HELP)(eval_cmd)


def eval_cmd(
    ctx: typer.Context,
    model: str = Model(),
    data: str = typer.Option("wvs-shares", help=_h("data")),
    strict: bool = typer.Option(False, "--strict", help=_h("strict")),
    method: str = typer.Option("vanilla,persona", help=_h("method")),
    split: str = typer.Option("auto", help=_h("split")),
    test_units: Optional[str] = typer.Option(None, help=_h("test_units")),
    test_frac: float = typer.Option(0.2, help=_h("test_frac")),
    test_questions: Optional[str] = typer.Option(None, help=_h("test_questions")),
    question_test_frac: Optional[float] = typer.Option(None, help=_h("question_test_frac")),
    val_frac: float = typer.Option(0.0, help=_h("val_frac")),
    part: str = typer.Option("test", help=_h("part")),
    countries: Optional[str] = typer.Option(None, help=_h("countries")),
    questions: Optional[str] = typer.Option(None, help=_h("questions")),
    max_items: Optional[int] = typer.Option(None, help=_h("max_items")),
    k_shot: int = typer.Option(3, help=_h("k_shot")),
    scoring: str = typer.Option("next-token", help=_h("scoring")),
    labels: str = typer.Option("auto", help=_h("labels")),
    chat_template: bool = ChatTemplate(True, help=_h("chat_template")),
    batch_size: int = BatchSize(16, help=_h("batch_size")),
    dtype: str = Dtype(),
    device: str = Device(),
    adapter: Optional[Path] = typer.Option(None, help=_h("adapter")),
    split_from: Optional[Path] = typer.Option(None, help=_h("split_from")),
    soft_prompt: Optional[Path] = typer.Option(None, help=_h("soft_prompt")),
    seed: int = typer.Option(0, help=_h("seed")),
    enrich_profile: bool = typer.Option(False, "--enrich-profile/--no-enrich-profile", help=_h("enrich_profile")),
    map_k: Optional[int] = typer.Option(None, help=_h("map_k")),
    text_k: Optional[int] = typer.Option(None, help=_h("text_k")),
    text_encoder: str = typer.Option("minilm-l6", help=_h("text_encoder")),
    map_before: Optional[int] = typer.Option(None, help=_h("map_before")),
    readout: str = typer.Option("logprob", help=_h("readout")),
    samples: int = typer.Option(8, help=_h("samples")),
    bootstrap: int = typer.Option(1000, help=_h("bootstrap")),
    reference_data: Optional[str] = typer.Option(None, help=_h("reference_data")),
    out: Path = typer.Option(Path("runs/eval"), help=_h("out")),
    plot: bool = typer.Option(True, help=_h("plot")),
    progress: bool = Progress(),
) -> None:
    from pluralign.cli.main import run_guarded

    # flags the user gave (by name: typer may vendor its own click and ParameterSource)
    explicit = {k for k in ctx.params if getattr(ctx.get_parameter_source(k), "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")}
    run_guarded(_run, explicit=explicit, **{k: v for k, v in ctx.params.items()})


def _run(**a) -> None:
    quiet_libraries()
    from pluralign.cli._validate import validate

    explicit = set(a.pop("explicit", None) or ())
    validate("eval", a)  # every option, before any work
    res = evaluate_run(EvalRunConfig(**a, explicit=frozenset(explicit)))
    _print(res)


def _print(res) -> None:
    """The tables on stdout, the notes on the differences, reference settings and read-outs on stderr."""
    from pluralign.evaluation.report import difference_note

    for cell, (header, rows, dheader, drows, _) in res.tables.items():
        if cell:
            typer.echo(f"\n### {cell}\n")
        typer.echo(markdown_table(header, rows))
        if drows:
            typer.echo("")
            typer.echo(markdown_table(dheader, drows))
    if any(t[3] for t in res.tables.values()):
        typer.echo(difference_note(res.results), err=True)
    ref_settings = res.reference_settings
    if ref_settings.chosen_on == "validation":
        typer.echo(f"reference settings chosen on validation rows: map k {ref_settings.map_k}, kernel bandwidth "
                   f"{ref_settings.map_bandwidth}, text k {ref_settings.text_k}", err=True)
    for row in res.readout_agreement:
        typer.echo(f"read-outs of {row['method']}{' [' + row['cell'] + ']' if row['cell'] else ''}: EMD(sampled, logprob) "
                   f"{row['emd']:.3f} over {row['n']} rows; option mass {row['option_mass']:.3f}", err=True)
