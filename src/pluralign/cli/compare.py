"""``pluralign compare``: one Markdown table from evaluation results of several runs."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from pluralign.errors import PluralignError

COMPARE_HELP = """Print one Markdown table comparing evaluation results (accuracy, macro-F1, EMD, JSD, the benchmarks' OpinionQA representativeness, GlobalOpinionQA similarity, total variation and WorldValuesBench W1, entropy per method, each with its bootstrap interval, plus the model-free references uniform and train_mean), then a table of paired differences.

Each argument is a results JSON written by `pluralign eval` (or, for open-ended answers, by `pluralign generate-eval`: then the table has BLEnD answer match, weighted match and win rate vs the base model with intervals, Distinct-2 and entropy, the differences of every report minus the base model and minus the first report, and the judge's agreement with the human-answer metric), or a folder searched (recursively) for eval-*.json files: a training run folder, an evaluation --out folder. All results must be of the same task kind (individual or distributional) and should share the test split (a warning says when they do not).

Paired differences: every result minus the first one, and every result minus each reference, on the (group, question) cells both scored; the interval comes from a seeded bootstrap that resamples the same groups and questions for both sides (settings from the first result, or --bootstrap / --seed / --bootstrap-unit).

Examples:

  pluralign compare runs/eval-vanilla runs/cuma/eval runs/lora/eval
  pluralign compare runs/*/eval --out docs/results/table.md
"""


def register(app: typer.Typer) -> None:
    app.command("compare", help=COMPARE_HELP)(compare_cmd)


def compare_cmd(
    paths: List[Path] = typer.Argument(..., help="Results JSON files or folders holding eval-*.json."),
    out: Optional[Path] = typer.Option(None, help="Also write the table to this Markdown file."),
    name: str = typer.Option("folder", help="Row label: folder (run folder + method) or method (the results' own label)."),
    diff_out: Optional[Path] = typer.Option(None, help="Also write the paired-differences table to this Markdown file."),
    bootstrap: Optional[int] = typer.Option(None, help="Bootstrap replicates for the paired differences (default: as the first result recorded; 0 = no differences)."),
    seed: Optional[int] = typer.Option(None, help="Seed of the paired bootstrap (default: the first result's)."),
    bootstrap_unit: Optional[str] = typer.Option(None, help="Resampled unit: both (groups x questions), groups, items, cells (default: the first result's)."),
) -> None:
    from pluralign.cli.main import run_guarded

    run_guarded(_run, paths=paths, out=out, name=name, diff_out=diff_out, bootstrap=bootstrap, seed=seed, bootstrap_unit=bootstrap_unit)


def collect(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            found = sorted(f for f in p.rglob("eval-*.json") if f.is_file())
            if not found:
                raise PluralignError("no eval-*.json results in this folder (run `pluralign eval --out ...` first)", file=p)
            files.extend(found)
        else:
            raise PluralignError("no such file or folder", file=p)
    return list(dict.fromkeys(files))


def _check_outputs(files: list[Path], *, out: Path | None, diff_out: Path | None) -> None:
    """Refuse an --out / --diff-out that would replace an input results file, or any existing file
    that is not an earlier table of this command (a file whose non-blank lines are all Markdown
    table rows), or that names the same file twice."""
    from pluralign.io import check_replaceable, is_markdown_table_file

    if out is not None and diff_out is not None and Path(out).resolve() == Path(diff_out).resolve():
        raise PluralignError("is also given as --out; give two different files", file=diff_out, field="--diff-out")
    for flag, p in (("--out", out), ("--diff-out", diff_out)):
        check_replaceable(p, own=is_markdown_table_file, what="a table written by `pluralign compare`", inputs=files, field=flag)


def _run_label(path: Path, r: dict) -> str:
    """``<run>:<method>``, where run is the training run folder of the adapter or the folder of the file."""
    if r.get("adapter"):
        a = Path(r["adapter"])
        run = a.parent.name if a.name == "adapter" else a.name
    else:
        run = path.parent.name
    from pluralign.evaluation.report import readout_suffix

    return f"{run}:{r.get('method', '?')}{readout_suffix(r)}"


def compare_table(files: list[Path], *, name: str = "folder") -> tuple[list[str], list[list], list[str]]:
    from pluralign.cli._validate import load_result_file
    from pluralign.evaluation.report import summary_rows

    results = [load_result_file(f) for f in files]
    kinds = {r["dataset"]["kind"] for r in results}
    if len(kinds) > 1:
        raise PluralignError(
            "cannot put individual and distributional results in one table: " + ", ".join(
                f"{f} ({r['dataset']['kind']})" for f, r in zip(files, results)
            )
        )
    warnings = []
    splits = {repr(sorted((r.get("split") or {}).items())) + str(r["metrics"].get("n")) for r in results}
    if len(splits) > 1:
        warnings.append("the results do not share one test split (different split settings or test sizes): compare with care")
    header, rows = summary_rows(results)
    if name == "folder":
        for i, (f, r) in enumerate(zip(files, results)):
            rows[i][0] = _run_label(f, r)
    refs = rows[len(results):]
    body = rows[: len(results)]
    # reference rows once (from the first result), the model rows sorted as given
    return header, body + refs, warnings


def _check_bootstrap(bootstrap: int | None, unit: str | None) -> None:
    from pluralign.evaluation.bootstrap import UNITS

    if unit is not None and unit not in UNITS:
        raise PluralignError(f"unknown value {unit!r} (valid: {', '.join(UNITS)})", field="--bootstrap-unit")
    if bootstrap is not None and bootstrap < 0:
        raise PluralignError(f"must be >= 0, got {bootstrap}", field="--bootstrap")


def difference_table(files: list[Path], *, name: str = "folder", bootstrap: int | None = None, seed: int | None = None,
                     bootstrap_unit: str | None = None) -> tuple[list[str], list[list], list[str]]:
    """Paired differences of the results in ``files`` (see :func:`pluralign.evaluation.report.difference_rows`)."""
    from pluralign.cli._validate import load_result_file
    from pluralign.evaluation.report import _label, difference_rows

    _check_bootstrap(bootstrap, bootstrap_unit)
    results = [load_result_file(f) for f in files]
    labels = [_run_label(f, r) if name == "folder" else _label(r) for f, r in zip(files, results)]
    return difference_rows(results, labels, n_boot=bootstrap, seed=seed, unit=bootstrap_unit)


def _generation_reports(files: list[Path]) -> list[dict] | None:
    """The loaded reports when every file is a ``generate-eval`` report, None when none is; mixed
    is an error."""
    from pluralign.evaluation.generate_compare import is_generation_report, load_generation_report
    from pluralign.io import read_json

    docs = []
    for f in files:
        try:
            docs.append(read_json(f, allow_nan=True))
        except PluralignError:
            docs.append(None)
    kinds = [is_generation_report(d) for d in docs]
    if not any(kinds):
        return None
    if not all(kinds):
        gen = [str(f) for f, k in zip(files, kinds) if k]
        raise PluralignError("cannot put generate-eval reports and survey results in one table (generate-eval: " + ", ".join(gen) + ")")
    return [load_generation_report(f, d) for f, d in zip(files, docs)]


def _run_generation(files: list[Path], reps: list[dict], *, out, diff_out, bootstrap, seed, bootstrap_unit) -> None:
    from pluralign.cli._common import markdown_table
    from pluralign.evaluation.generate_compare import compare_generation, judge_agreement_rows, run_label
    from pluralign.io import atomic_write_text

    n_boot, seed, unit = 1000 if bootstrap is None else bootstrap, 0 if seed is None else seed, bootstrap_unit or "both"
    labels = [run_label(f, r) for f, r in zip(files, reps)]
    header, rows, dheader, drows, warnings = compare_generation(reps, labels, n_boot=n_boot, seed=seed, unit=unit)
    for w in warnings:
        typer.echo(f"warning: {w}", err=True)
    jh, jrows = judge_agreement_rows(reps, labels)
    table = markdown_table(header, rows)
    dtable = markdown_table(dheader, drows)
    jtable = markdown_table(jh, jrows)
    typer.echo(table + "\n\n" + dtable + "\n\n" + jtable)
    typer.echo(f"paired bootstrap over {unit} (profiles x questions when 'both'), {n_boot} replicates, seed {seed}, "
               "95 % percentile intervals; * = the interval excludes 0", err=True)
    if out:
        atomic_write_text(out, table + "\n\n" + jtable + "\n")
        typer.echo(f"wrote {out}", err=True)
    if diff_out:
        atomic_write_text(diff_out, dtable + "\n")
        typer.echo(f"wrote {diff_out}", err=True)


def _run(paths: list[Path], out: Path | None, name: str, diff_out: Path | None = None, bootstrap: int | None = None,
         seed: int | None = None, bootstrap_unit: str | None = None) -> None:
    from pluralign.cli._common import markdown_table
    from pluralign.io import atomic_write_text

    from pluralign.cli._validate import validate

    validate("compare", {"name": name, "out": out})
    _check_bootstrap(bootstrap, bootstrap_unit)
    files = collect(paths)
    _check_outputs(files, out=out, diff_out=diff_out)
    reps = _generation_reports(files)
    if reps is not None:
        return _run_generation(files, reps, out=out, diff_out=diff_out, bootstrap=bootstrap, seed=seed, bootstrap_unit=bootstrap_unit)
    header, rows, warnings = compare_table(files, name=name)
    dheader, drows, dwarn = difference_table(files, name=name, bootstrap=bootstrap, seed=seed, bootstrap_unit=bootstrap_unit)
    for w in warnings + dwarn:
        typer.echo(f"warning: {w}", err=True)
    table = markdown_table(header, rows)
    typer.echo(table)
    if drows:
        from pluralign.cli._validate import load_result_file
        from pluralign.evaluation.report import difference_note

        dtable = markdown_table(dheader, drows)
        typer.echo("")
        typer.echo(dtable)
        typer.echo(difference_note([load_result_file(files[0])]), err=True)
        if diff_out:
            atomic_write_text(diff_out, dtable + "\n")
            typer.echo(f"wrote {diff_out}", err=True)
    if out:
        atomic_write_text(out, table + "\n")
        typer.echo(f"wrote {out}", err=True)
