"""``pluralign analyze collapse|topology|overlap|zeroshot|zeroshot-split`` and ``pluralign report``:
analyses of trained and evaluated runs (:mod:`pluralign.analysis`)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from pluralign.cli._common import markdown_table, quiet_libraries
from pluralign.errors import PluralignError

ANALYZE_HELP = """Analyses of trained and evaluated runs: mean collapse, routing topology, routing overlap, zero-shot profiles.

A RUN is a `pluralign train --out` folder (holding eval/ from `pluralign eval --adapter RUN/adapter --out RUN/eval`) or a `pluralign eval --out` folder. collapse and zeroshot read the evaluation files only; topology and overlap load the run's backbone and adapter (mixture-of-experts methods) and record the router gates.
"""

COLLAPSE_HELP = """Mean collapse of one or more evaluated runs, side by side: per group the entropy of the predictions vs the human answers'; per question the spread of the groups' predictions (mean pairwise Jensen-Shannon distance; variance across groups of the expected answer, ordinal questions) vs the humans' spread, and their ratio, the diversity kept (1 = no collapse, 0 = every group gets the same answer). The eval summary's references (uniform, train_mean, culture_map_knn) are recomputed from the first run's split when its data can be loaded.

Writes OUT/collapse.json, collapse-diversity.png, collapse-entropy.png, collapse-distributions.png (predicted vs human distributions of --items x --groups; default: the 3 questions where the groups differ most, up to 4 groups) and prints the table.

Examples:

  pluralign analyze collapse runs/cuma runs/lora --out runs/analysis/collapse
  pluralign analyze collapse runs/cuma/eval --items Q33,Q146 --groups Brazil,Ethiopia
"""

TOPOLOGY_HELP = """Routing topology of a mixture-of-experts run (cuma, mixlora, hydralora): every group of the run's data (countries; distinct respondent profiles for individual data) reads the same --max-items questions in the run's prompt format, the router probabilities are recorded per layer, and a group's routing signature is their mean at the answer position and over all tokens. Reports the silhouette and k-NN agreement of the Inglehart-Welzel zones in signature space (individual data: also age band, sex, education), each against --n-perm label shuffles (baseline mean, sd, permutation p-value), and a PCA / t-SNE map coloured by zone.

Writes OUT/topology.json, topology-map.png (individual data: also one map per attribute) and prints the statistics.

Example:

  pluralign analyze topology runs/cuma --max-items 8 --out runs/analysis/topology
"""

OVERLAP_HELP = """Routing overlap of a mixture-of-experts run: the share of the top-k experts that two groups use for the same question, per router layer, averaged over group pairs and questions, on the run's value questions and on --n-consensus arithmetic word problems generated in code (questions with one right answer; the paper's GSM8K vs WorldValuesBench comparison). At the answer position and over the question's own tokens (the prompt suffix the groups share). Chance: k / E.

Writes OUT/overlap.json, overlap.png and prints the per-layer table.

Example:

  pluralign analyze overlap runs/cuma --max-units 12 --out runs/analysis/overlap
"""

ZEROSHOT_HELP = """Zero-shot profiles: the table of a full-supervision run and a zero-shot run (both trained from `pluralign analyze zeroshot-split` configs and evaluated), on the respondent rows both scored: accuracy, macro-F1 and EMD of each and the gap (zero-shot - full), for the held-out attribute combinations, the held-out countries, and both. Which rows are held out is read from the zero-shot run's rebuilt training part.

Example:

  pluralign analyze zeroshot runs/zs-full runs/zs-zeroshot --out runs/analysis/zeroshot.json
"""

ZEROSHOT_SPLIT_HELP = """Build the zero-shot profile split of individual data (the paper's protocol): within each Inglehart-Welzel zone, hold out attribute combinations (--attributes, default age band x sex x education; combinations of at least two distinct profiles, a --combo-frac share, at least one per zone) and --countries-per-zone whole countries (or --holdout-countries). Writes OUT/zeroshot-split.json (what is held out, sizes) and two `pluralign train --config` files with the existing profile split and explicit test units: train-zeroshot.json (every held-out profile in the test part) and train-full.json (half of them in the test part, the other half trained on: full supervision of the same kinds).

Example:

  pluralign analyze zeroshot-split --data wvs-probe --out runs/zs
  pluralign train --config runs/zs/train-zeroshot.json --method cuma --out runs/zs-zeroshot
  pluralign train --config runs/zs/train-full.json --method cuma --out runs/zs-full
  pluralign eval --adapter runs/zs-zeroshot/adapter --out runs/zs-zeroshot/eval
  pluralign eval --adapter runs/zs-full/adapter --out runs/zs-full/eval
  pluralign analyze zeroshot runs/zs-full runs/zs-zeroshot
"""

REPORT_HELP = """Write a static HTML report of runs (OUT/index.html and PNG plots beside it; opens offline, no external script or style): the runs' configuration and split, the metric table with the references (uniform, train_mean, culture_map_knn) and the paired differences, per-group EMD bars, entropy histograms, mean collapse, training loss curves (log.jsonl), soft-prompt search convergence and word-association P@K where the runs have them; with --topology / --overlap also the routing analyses of mixture-of-experts runs (these load the model), and with --analysis the files of earlier `pluralign analyze topology|overlap|zeroshot` runs. Every number comes from the runs' files.

Examples:

  pluralign report runs/cuma runs/lora --out report/
  pluralign analyze topology runs/cuma --out runs/analysis/topo
  pluralign report runs/cuma runs/lora --analysis runs/analysis/topo/topology.json --out report/
"""


def register(app: typer.Typer) -> None:
    grp = typer.Typer(help=ANALYZE_HELP, no_args_is_help=True)
    grp.command("collapse", help=COLLAPSE_HELP)(collapse_cmd)
    grp.command("topology", help=TOPOLOGY_HELP)(topology_cmd)
    grp.command("overlap", help=OVERLAP_HELP)(overlap_cmd)
    grp.command("zeroshot", help=ZEROSHOT_HELP)(zeroshot_cmd)
    grp.command("zeroshot-split", help=ZEROSHOT_SPLIT_HELP)(zeroshot_split_cmd)
    app.add_typer(grp, name="analyze")
    app.command("report", help=REPORT_HELP)(report_cmd)


def _csv(s: str | None) -> list[str] | None:
    return [x.strip() for x in s.split(",") if x.strip()] if s else None


def _positive(name: str, v, *, zero: bool = False, optional: bool = False) -> None:
    if v is None and optional:
        return
    if not isinstance(v, int) or isinstance(v, bool) or v < (0 if zero else 1):
        raise PluralignError(f"must be {'>= 0' if zero else 'a positive whole number'}, got {v}", field=name)


def _check_routing(a: dict) -> None:
    from pluralign.analysis._prep import PARTS

    if a.get("part") not in PARTS:
        raise PluralignError(f"unknown part {a.get('part')!r} (valid: {', '.join(PARTS)})", field="--part")
    _positive("--max-items", a.get("max_items"), optional=True)
    _positive("--max-units", a.get("max_units"), optional=True)
    _positive("--batch-size", a.get("batch_size"))
    _positive("--seed", a.get("seed"), zero=True)
    if "n_perm" in a:
        _positive("--n-perm", a["n_perm"], zero=True)
    if "neighbours" in a:
        _positive("--neighbours", a["neighbours"])
    if "n_consensus" in a:
        _positive("--n-consensus", a["n_consensus"])
    if "k" in a:
        _positive("--k", a["k"], optional=True)


def _check_out_dir(out) -> None:
    from pluralign.io import check_writable_dir

    check_writable_dir(out, field="--out")


# --------------------------------------------------------------------------------- collapse
def collapse_cmd(
    runs: List[Path] = typer.Argument(..., help="Run folders (pluralign train --out, holding eval/) or eval folders."),
    out: Path = typer.Option(Path("runs/analysis/collapse"), help="Output folder: collapse.json and the plots."),
    items: Optional[str] = typer.Option(None, help="Comma-separated question ids of the distributions plot (default: the 3 where the groups differ most)."),
    groups: Optional[str] = typer.Option(None, help="Comma-separated groups of the distributions plot (default: up to 4)."),
    references: bool = typer.Option(True, "--references/--no-references", help="Recompute the eval summary's references from the first run's split."),
) -> None:
    from pluralign.cli.main import run_guarded

    run_guarded(_collapse, runs=runs, out=out, items=items, groups=groups, references=references)


def _collapse(runs, out, items, groups, references) -> None:
    quiet_libraries()
    from pluralign.analysis.collapse import analyze_collapse, collapse_table, write_collapse
    from pluralign.analysis.runs import open_runs

    _check_out_dir(out)
    rs = open_runs(runs)
    labelled = [(lab, f, r) for run in rs for lab, f, r in run.labelled_results()]
    kinds = {r["dataset"]["kind"] for _, _, r in labelled}
    if len(kinds) > 1:
        raise PluralignError("cannot analyse individual and distributional results together: " + ", ".join(
            f"{f} ({r['dataset']['kind']})" for _, f, r in labelled))
    a = analyze_collapse([(lab, r) for lab, _, r in labelled], references=references, files=[f for _, f, _ in labelled])
    it, gs = _csv(items), _csv(groups)
    if it or gs:
        c = a["_cells"][a["series"][0]["label"]]
        bad = [q for q in it or [] if q not in c.items]
        if bad:
            raise PluralignError(f"unknown question {bad[0]!r} (the results hold: {', '.join(c.items[:30])})", field="--items")
        badg = [g for g in gs or [] if g not in c.groups]
        if badg:
            raise PluralignError(f"unknown group {badg[0]!r} (the results hold: {', '.join(c.groups[:30])})", field="--groups")
    paths = write_collapse(a, out, items=it, groups=gs)
    for n in a["notes"]:
        typer.echo(f"note: {n}", err=True)
    typer.echo(markdown_table(*collapse_table(a)))
    typer.echo(f"wrote {paths['json']} and {len(paths) - 1} plot(s) in {out}", err=True)


# --------------------------------------------------------------------------------- topology / overlap
def _routing_opts():
    return dict(
        model=typer.Option(None, help="Backbone (default: the run's)."),
        part=typer.Option("all", help="Groups of the run's data: all, test (held out), train."),
        max_items=typer.Option(8, help="Questions asked, spread over the run's questionnaire."),
        batch_size=typer.Option(8, help="Prompts per forward pass."),
        seed=typer.Option(0, help="Seed (group subset, shuffles, t-SNE)."),
        device=typer.Option("auto", help="auto, cpu, cuda, ..."),
        dtype=typer.Option("auto", help="auto, fp32, bf16, fp16."),
        progress=typer.Option(False, "--progress/--no-progress", help="Show a progress bar."),
    )


_R = _routing_opts()


def topology_cmd(
    run: Path = typer.Argument(..., help="A mixture-of-experts training run folder (pluralign train --out)."),
    out: Path = typer.Option(Path("runs/analysis/topology"), help="Output folder: topology.json and the maps."),
    model: Optional[str] = _R["model"],
    part: str = _R["part"],
    max_items: Optional[int] = _R["max_items"],
    max_units: Optional[int] = typer.Option(200, help="At most this many groups (a seeded subset beyond)."),
    neighbours: int = typer.Option(3, help="k of the k-NN agreement."),
    n_perm: int = typer.Option(1000, help="Label shuffles of the baseline and p-value."),
    batch_size: int = _R["batch_size"],
    seed: int = _R["seed"],
    device: str = _R["device"],
    dtype: str = _R["dtype"],
    progress: bool = _R["progress"],
) -> None:
    from pluralign.cli.main import run_guarded

    run_guarded(_topology, run=run, out=out, model=model, part=part, max_items=max_items, max_units=max_units, neighbours=neighbours,
                n_perm=n_perm, batch_size=batch_size, seed=seed, device=device, dtype=dtype, progress=progress)


def _routing_run(a: dict):
    """The checks and the opened run of a routing analysis (topology, overlap): pops ``run`` and
    ``out`` from ``a``, leaving the analysis' own settings."""
    from pluralign.analysis.runs import open_run

    _check_routing(a)
    _check_out_dir(a["out"])
    return open_run(a.pop("run"), need_eval=False), a.pop("out")


def _topology(**a) -> None:
    quiet_libraries()
    from pluralign.analysis.topology import compute_topology, stats_rows, write_topology

    run, out = _routing_run(a)
    res = compute_topology(run, **a)
    paths = write_topology(res, out)
    typer.echo(markdown_table(*stats_rows(res)))
    typer.echo(f"wrote {paths['json']} ({len(res['units'])} groups, {res['settings']['n_prompts']} prompts, {len(res['layers'])} router layers)",
               err=True)


def overlap_cmd(
    run: Path = typer.Argument(..., help="A mixture-of-experts training run folder (pluralign train --out)."),
    out: Path = typer.Option(Path("runs/analysis/overlap"), help="Output folder: overlap.json and overlap.png."),
    model: Optional[str] = _R["model"],
    part: str = _R["part"],
    max_items: Optional[int] = _R["max_items"],
    n_consensus: int = typer.Option(8, help="Arithmetic word problems (consensus questions)."),
    max_units: Optional[int] = typer.Option(20, help="At most this many groups (a seeded subset beyond)."),
    k: Optional[int] = typer.Option(None, help="Experts compared per token (default: the routers' top-k; 2 for soft routing)."),
    batch_size: int = _R["batch_size"],
    seed: int = _R["seed"],
    device: str = _R["device"],
    dtype: str = _R["dtype"],
    progress: bool = _R["progress"],
) -> None:
    from pluralign.cli.main import run_guarded

    run_guarded(_overlap, run=run, out=out, model=model, part=part, max_items=max_items, n_consensus=n_consensus, max_units=max_units,
                k=k, batch_size=batch_size, seed=seed, device=device, dtype=dtype, progress=progress)


def _overlap(**a) -> None:
    quiet_libraries()
    from pluralign.analysis.overlap import compute_overlap, overlap_rows, write_overlap

    run, out = _routing_run(a)
    res = compute_overlap(run, **a)
    paths = write_overlap(res, out)
    typer.echo(markdown_table(*overlap_rows(res)))
    typer.echo(f"chance k/E = {res['chance']:.3f}; wrote {paths['json']}", err=True)


# --------------------------------------------------------------------------------- zero-shot
def zeroshot_cmd(
    full_run: Path = typer.Argument(..., help="The full-supervision run (trained from train-full.json, evaluated)."),
    zeroshot_run: Path = typer.Argument(..., help="The zero-shot run (trained from train-zeroshot.json, evaluated)."),
    attributes: str = typer.Option("age_band,sex,education", help="Profile attributes of a combination (as given to zeroshot-split)."),
    out: Optional[Path] = typer.Option(None, help="Also write the table as JSON here."),
) -> None:
    from pluralign.cli.main import run_guarded

    run_guarded(_zeroshot, full_run=full_run, zeroshot_run=zeroshot_run, attributes=attributes, out=out)


def _zeroshot(full_run, zeroshot_run, attributes, out) -> None:
    quiet_libraries()
    from pluralign.analysis.runs import open_run
    from pluralign.analysis.zeroshot import table_rows, zeroshot_table
    from pluralign.io import atomic_write_json, check_writable_file

    if out is not None:
        check_writable_file(out, field="--out")
    attrs = _csv(attributes) or []
    fr, zr = open_run(full_run), open_run(zeroshot_run)
    res = zeroshot_table(fr, zr, attrs=attrs)
    for n in res["notes"]:
        typer.echo(f"note: {n}", err=True)
    typer.echo(markdown_table(*table_rows(res)))
    if out is not None:
        atomic_write_json(out, res)
        typer.echo(f"wrote {out}", err=True)


def zeroshot_split_cmd(
    data: str = typer.Option("wvs-probe", help="Individual (respondent-level) data: a loader name, name:path, or a path."),
    out: Path = typer.Option(..., help="Output folder: zeroshot-split.json, train-zeroshot.json, train-full.json."),
    attributes: str = typer.Option("age_band,sex,education", help="Profile attributes whose combinations are held out."),
    combo_frac: float = typer.Option(0.2, help="Share of each zone's combinations (of >= 2 profiles) held out (at least one)."),
    countries_per_zone: int = typer.Option(1, help="Whole countries held out per zone with at least two countries (0 = none)."),
    holdout_countries: Optional[str] = typer.Option(None, help="Comma-separated countries to hold out instead (ISO3 codes or names)."),
    seed: int = typer.Option(0, help="Seed of the hashed choices."),
    enrich_profile: bool = typer.Option(False, "--enrich-profile/--no-enrich-profile", help="Profiles carry their cultural-map position (train with the same setting: the test units are profile keys)."),
) -> None:
    from pluralign.cli.main import run_guarded

    run_guarded(_zeroshot_split, data=data, out=out, attributes=attributes, combo_frac=combo_frac, countries_per_zone=countries_per_zone,
                holdout_countries=holdout_countries, seed=seed, enrich_profile=enrich_profile)


def _zeroshot_split(**a) -> None:
    quiet_libraries()
    from pluralign.analysis.zeroshot import build_zeroshot_split, write_zeroshot_split
    from pluralign.data import load_dataset

    _positive("--countries-per-zone", a["countries_per_zone"], zero=True)
    _positive("--seed", a["seed"], zero=True)
    _check_out_dir(a["out"])
    ds = load_dataset(a["data"])
    sp = build_zeroshot_split(ds, data=a["data"], attrs=_csv(a["attributes"]) or [], combo_frac=a["combo_frac"],
                              countries_per_zone=a["countries_per_zone"], holdout_countries=_csv(a["holdout_countries"]),
                              seed=a["seed"], enrich_profile=a["enrich_profile"])
    paths = write_zeroshot_split(sp, a["out"])
    s = sp.sizes
    typer.echo(f"held out: {s['held_out_countries']} countries, {s['held_out_combinations']} attribute combinations; "
               f"zero-shot test {s['zeroshot']['test_profiles']} profiles ({s['zeroshot']['test_rows']} rows), "
               f"full-supervision test {s['full']['test_profiles']} profiles ({s['full']['test_rows']} rows)")
    for k, p in paths.items():
        typer.echo(f"wrote {p}", err=True)


# --------------------------------------------------------------------------------- report
def report_cmd(
    runs: List[Path] = typer.Argument(..., help="Run folders: pluralign train --out (with eval/), pluralign eval --out, pluralign softprompt --out."),
    out: Path = typer.Option(Path("report"), help="Output folder: index.html and the plots."),
    title: Optional[str] = typer.Option(None, help="Page title (default: the run names)."),
    collapse: bool = typer.Option(True, "--collapse/--no-collapse", help="Include the mean-collapse analysis."),
    topology: bool = typer.Option(False, "--topology/--no-topology", help="Include the routing topology of mixture-of-experts runs (loads the model)."),
    overlap: bool = typer.Option(False, "--overlap/--no-overlap", help="Include the routing overlap of mixture-of-experts runs (loads the model)."),
    analysis: Optional[List[Path]] = typer.Option(None, help="An analysis file to include (topology.json, overlap.json of pluralign analyze topology / overlap, the zeroshot --out JSON); repeatable."),
    items: Optional[str] = typer.Option(None, help="Questions of the collapse distributions plot."),
    groups: Optional[str] = typer.Option(None, help="Groups of the collapse distributions plot."),
    model: Optional[str] = _R["model"],
    part: str = _R["part"],
    max_items: Optional[int] = _R["max_items"],
    max_units: Optional[int] = typer.Option(200, help="Routing analyses: at most this many groups."),
    n_perm: int = typer.Option(1000, help="Topology: label shuffles."),
    batch_size: int = _R["batch_size"],
    seed: int = _R["seed"],
    device: str = _R["device"],
    dtype: str = _R["dtype"],
) -> None:
    from pluralign.cli.main import run_guarded

    run_guarded(_report, runs=runs, out=out, title=title, collapse=collapse, topology=topology, overlap=overlap, analysis=analysis, items=items,
                groups=groups, model=model, part=part, max_items=max_items, max_units=max_units, n_perm=n_perm, batch_size=batch_size,
                seed=seed, device=device, dtype=dtype)


def _report(runs, out, title, collapse, topology, overlap, analysis, items, groups, **kw) -> None:
    quiet_libraries()
    from pluralign.analysis.report import build_report

    _check_routing({**kw, "n_perm": kw["n_perm"]})
    _check_out_dir(out)
    from pluralign.io import claim_output

    claim_output(out, "report", field="--out", create=False)  # not the working folder nor a run's folder; one writer at a time
    path = build_report(runs, out, title=title, collapse=collapse, topology=topology, overlap=overlap, items=_csv(items),
                        groups=_csv(groups), analyses=list(analysis or []), **kw)
    typer.echo(f"wrote {path}")
