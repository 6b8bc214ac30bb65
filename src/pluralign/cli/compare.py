"""``pluralign compare``: one Markdown table from evaluation results of several runs."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from pluralign.errors import PluralignError

COMPARE_HELP = """Print one Markdown table comparing evaluation results (accuracy, macro-F1, EMD, JSD, entropy per method, plus the model-free references uniform and train_mean).

Each argument is a results JSON written by `pluralign eval`, or a folder searched (recursively) for eval-*.json files: a training run folder, an evaluation --out folder. All results must be of the same task kind (individual or distributional) and should share the test split (a warning says when they do not).

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
) -> None:
    from pluralign.cli.main import run_guarded

    run_guarded(_run, paths=paths, out=out, name=name)


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


def _run_label(path: Path, r: dict) -> str:
    """``<run>:<method>``, where run is the training run folder of the adapter or the folder of the file."""
    if r.get("adapter"):
        a = Path(r["adapter"])
        run = a.parent.name if a.name == "adapter" else a.name
    else:
        run = path.parent.name
    return f"{run}:{r.get('method', '?')}"


def compare_table(files: list[Path], *, name: str = "folder") -> tuple[list[str], list[list], list[str]]:
    from pluralign.evaluation.report import load_results, summary_rows

    results = [load_results(f) for f in files]
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


def _run(paths: list[Path], out: Path | None, name: str) -> None:
    from pluralign.cli._common import markdown_table
    from pluralign.io import atomic_write_text

    if name not in ("folder", "method"):
        raise PluralignError(f"unknown --name {name!r} (folder | method)", field="name")
    files = collect(paths)
    header, rows, warnings = compare_table(files, name=name)
    for w in warnings:
        typer.echo(f"warning: {w}", err=True)
    table = markdown_table(header, rows)
    typer.echo(table)
    if out:
        atomic_write_text(out, table + "\n")
        typer.echo(f"wrote {out}", err=True)
