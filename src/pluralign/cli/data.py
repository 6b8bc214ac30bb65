"""``pluralign data``: look at datasets before training or evaluating on them."""

from __future__ import annotations

import json
from typing import List, Optional

import typer

DATA_HELP = """Inspect survey datasets and the loaders that read them.

A dataset is named by a registered loader (wvs-shares, wvs-probe, ...), by loader:path (worldvaluesbench:/data/WorldValuesBench/test), or by a bare path whose format is detected.
"""

INSPECT_HELP = """Summarise a dataset: task kind, examples, items, groups, respondents, options per item, the largest groups, one sample item and one sample profile description.

Examples:

  pluralign data inspect wvs-shares
  pluralign data inspect wvs-probe --json
  pluralign data inspect /data/WorldValuesBench/test -o max_respondents=2000
  pluralign data inspect globalopinionqa:/data/global_opinions.csv -o sources=WVS
"""


def register(app: typer.Typer) -> None:
    grp = typer.Typer(help=DATA_HELP, no_args_is_help=True)
    grp.command("inspect", help=INSPECT_HELP)(inspect_cmd)
    grp.command("list", help="List the registered dataset loaders (the names accepted by --data).")(list_cmd)
    app.add_typer(grp, name="data")


def inspect_cmd(
    dataset: str = typer.Argument(..., metavar="PATH_OR_NAME", help="Loader name, loader:path, or a path (format detected)."),
    option: Optional[List[str]] = typer.Option(
        None, "--option", "-o", help="Loader keyword argument KEY=VALUE (repeatable; a comma makes a list), e.g. split=test."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON (machine-readable) instead of text."),
    top: int = typer.Option(10, help="How many of the largest groups to list."),
    strict: bool = typer.Option(False, "--strict", help="Fail on the first unusable cell (default: skip it and count it per reason, shown as 'dropped'); for loaders that take strict."),
) -> None:
    from pluralign.cli.main import run_guarded

    run_guarded(_inspect, dataset=dataset, options=(option or []) + (["strict=true"] if strict else []), as_json=as_json, top=top)


def list_cmd(as_json: bool = typer.Option(False, "--json", help="Print name → description as JSON.")) -> None:
    from pluralign.data import available_loaders

    loaders = available_loaders()
    if as_json:
        typer.echo(json.dumps(loaders, indent=2))
        return
    width = max(map(len, loaders)) if loaders else 0
    for name, help_text in loaders.items():
        typer.echo(f"{name:<{width}}  {help_text}")


# --------------------------------------------------------------------------- implementation
def parse_options(pairs: list[str]) -> dict:
    """``["split=test", "max_respondents=100", "countries=USA,DEU", "raw_codes=true"]`` → kwargs."""
    from pluralign.errors import PluralignError

    out: dict = {}
    for p in pairs:
        key, eq, val = p.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or not key.isidentifier():
            raise PluralignError(f"expected KEY=VALUE, got {p!r}", field="option")
        out[key] = _value(val.strip())
    return out


def _value(v: str):
    if "," in v:
        return [x.strip() for x in v.split(",") if x.strip()]
    low = v.lower()
    if low in ("true", "yes"):
        return True
    if low in ("false", "no"):
        return False
    try:
        return int(v)
    except ValueError:
        pass
    try:
        return float(v)
    except ValueError:
        return v


def dataset_report(ds, *, top: int = 10) -> dict:
    """The summary printed by ``data inspect`` (also its ``--json`` output)."""
    from collections import Counter

    s = ds.summary()
    per_group = Counter(e.group for e in ds.examples)
    s["top_groups"] = [[g, n] for g, n in per_group.most_common(top)]
    s["options_per_item"] = {str(k): v for k, v in s["options_per_item"].items()}
    first = ds.examples[0]
    item = ds.items[first.item_id]
    s["sample_item"] = item.to_dict()
    s["sample_profile"] = {"key": first.profile.key(), "description": first.profile.describe(), "fields": first.profile.to_dict()}
    if ds.kind == "distributional":
        s["sample_distribution"] = {"group": first.group, "item": first.item_id, "probs": [round(p, 4) for p in first.probs]}
    else:
        s["sample_answer"] = {"respondent": first.respondent_id, "item": first.item_id, "answer": item.options[first.answer]}
    if ds.meta.get("citation"):
        s["citation"] = ds.meta["citation"]
    if ds.meta.get("skipped"):
        s["skipped_rows"] = len(ds.meta["skipped"])
    dropped = ds.meta.get("dropped")
    if isinstance(dropped, dict):
        s["dropped"] = {str(k): int(v) for k, v in dropped.items() if v}
    return s


def format_report(s: dict) -> str:
    lines = [
        f"dataset      {s['name']} ({s['kind']})",
        f"source       {s['source']}",
        f"examples     {s['examples']:,}",
        f"items        {s['items']:,} ({s['ordinal_items']} ordinal)",
        f"groups       {s['groups']:,}",
    ]
    if "respondents" in s:
        lines.append(f"respondents  {s['respondents']:,}")
    if "skipped_rows" in s:
        lines.append(f"skipped      {s['skipped_rows']} invalid rows")
    if s.get("dropped"):
        lines.append("dropped      " + "; ".join(f"{n:,} {reason}" for reason, n in s["dropped"].items()))
    opts = ", ".join(f"{k} options: {v}" for k, v in s["options_per_item"].items())
    lines.append(f"items by number of options  {opts}")
    if s.get("examples_per_group"):
        g, i = s["examples_per_group"], s["examples_per_item"]
        lines.append(f"examples per group  {g['min']}-{g['max']}; per item  {i['min']}-{i['max']}")
    lines.append("top groups   " + ", ".join(f"{g} ({n})" for g, n in s["top_groups"]))
    it = s["sample_item"]
    lines += ["", f"sample item  {it['id']} [{'ordinal' if it['ordinal'] else 'nominal'}]: {it['text']}"]
    lines += [f"  {c}. {o}" for c, o in zip(it["codes"], it["options"])]
    lines += ["", f"sample profile  {s['sample_profile']['description']}"]
    if "sample_answer" in s:
        a = s["sample_answer"]
        lines.append(f"  respondent {a['respondent']} answered {a['item']}: {a['answer']}")
    if "sample_distribution" in s:
        d = s["sample_distribution"]
        lines.append(f"  {d['group']} on {d['item']}: " + ", ".join(f"{p:.3f}" for p in d["probs"]))
    if s.get("citation"):
        lines += ["", f"cite: {s['citation']}"]
    return "\n".join(lines)


def _inspect(*, dataset: str, options: list[str], as_json: bool, top: int) -> None:
    from pluralign.cli._common import quiet_libraries
    from pluralign.data import load_dataset
    from pluralign.errors import PluralignError

    from pluralign.cli._validate import validate

    quiet_libraries()
    validate("data inspect", {"top": top})
    kwargs = parse_options(options)
    try:
        ds = load_dataset(dataset, **kwargs)
    except TypeError as e:  # an option the loader does not take
        if "unexpected keyword argument" in str(e):
            raise PluralignError(f"this loader does not take that option ({e})", field="option") from None
        raise
    report = dataset_report(ds, top=top)
    typer.echo(json.dumps(report, indent=2, ensure_ascii=False) if as_json else format_report(report))
