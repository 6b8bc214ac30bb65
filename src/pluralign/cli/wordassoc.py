"""``pluralign wordassoc``: ALIGN word-association learning (SWOW) — train, evaluate, report."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pluralign.cli._common import (Device, Dtype, Model, Progress, Threads, command_from, command_of, option,
                                   quiet_libraries, shared_option)
from pluralign.cli._wordassoc_options import EVAL_FLAGS, TRAIN_FLAGS, eval_settings, train_settings
from pluralign.errors import PluralignError

HELP = """Word-association learning for cultural alignment (ALIGN, on Small World of Words data).

The model learns native speakers' free associations: first SFT with LoRA on "cue -> the first 3 responses, most common first", then RL (GRPO, the shared implementation of `pluralign train --stage grpo`; the paper used PPO, which TRL removed) on "cue + candidates -> ranked list" with a Spearman reward against the human strengths. Evaluation on held-out cues: Precision@K (K = 5, 10, 40) of generated associations and Spearman rho of rankings; and the transfer to World Values Survey answers of USA and China (JSD, EMD, high-tension items).

Data: a SWOW strength file (cue,response,R1,N,R1.Strength or the R123 columns; SWOW-EN or SWOW-ZH). By default the shared copy of SWOW-EN (CC BY-NC-ND: never copied into outputs). Cues are split 80/10/10 by a seeded hash (--split-seed, default --seed); training uses train cues, evaluation the test (or val) cues. Training also drops the reversed pairs of held-out pairs (a training cue r whose response c is a held-out cue that has r among its responses: --held-out-pairs exclude, the default), so a test pair's cue and its reversed pair are both absent from training; the evaluation reports every metric on all cues and on those with no reversed pair in the adapter's recorded training data.

P@K: of the first K distinct generated words, the share that some SWOW participant gave for the cue, over K (missing words count as misses, so it falls with fewer distinct words); the evaluation also reports the distinct words per cue and P@N at a fixed number N of generated words (--fixed-words, cues topped up to N words by more samples).

Examples:

  pluralign wordassoc train --stage both --train-cues 300 --sft-steps 60 --rl-steps 20 --out runs/wa
  pluralign wordassoc eval --eval-cues 50 --out runs/wa/eval-vanilla.json
  pluralign wordassoc eval --adapter runs/wa/sft/adapter --out runs/wa/eval-sft.json
  pluralign wordassoc report runs/wa/eval-vanilla.json runs/wa/eval-sft.json runs/wa/eval-rl.json
  pluralign wordassoc study --seeds 0,1,2 --out runs/wa-study     # SFT, then SFT + GRPO, per seed; resumable
"""

app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="wordassoc", help=HELP)


def _data(path: Optional[str], language: Optional[str], min_responses: int, on_bad_row: str, on_duplicate: str):
    from pluralign.data.loaders.swow import load_swow

    return load_swow(path, language=language, min_responses=min_responses, on_bad_row=on_bad_row, on_duplicate=on_duplicate)


def _params(order: list, fields: list, own: dict) -> list:
    """The options in ``order``: each a field setting's (:func:`train_settings`), else from ``own``."""
    from pluralign.cli._common import _param

    by = {s.name: s for s in fields}
    return [_param(by[n]) if n in by else own[n] for n in order]


_LANG_HELP = "Data language (en, zh); default from the file name (SWOW-EN / SWOWZH). Must match the prompt template."


def _data_options(min_help: str) -> dict:
    """The data options both sub-commands take, with the same meaning, and the shared ones."""
    from pluralign.cli._common import _param, field_setting
    from pluralign.wordassoc.study import StudyConfig

    return {
        "model": shared_option("model", str, Model()),
        "data": _param(field_setting(StudyConfig, "data")),  # the study's --data, passed on to these commands
        "language": option("language", Optional[str], None, help=_LANG_HELP),
        "min_responses": option("min_responses", int, 3, help=min_help),
        "on_bad_row": option("on_bad_row", str, "error", help="Malformed strength rows: error (default) or skip (counted)."),
        "on_duplicate": option("on_duplicate", str, "error", help="Duplicate cue-response rows: error (default) or merge (sum counts)."),
        "dtype": shared_option("dtype", str, Dtype()), "device": shared_option("device", str, Device()),
        "threads": shared_option("threads", int, Threads()), "progress": shared_option("progress", bool, Progress()),
    }


def _train_cmd():
    own = {
        **_data_options("Drop cues with fewer distinct responses (counted in the summary)."),
        "stage": option("stage", str, "both", help="sft, rl (on --adapter or a fresh LoRA) or both (rl continues the SFT adapter)."),
        "adapter": option("adapter", Optional[Path], None, help="For --stage rl: the SFT adapter to continue."),
        "train_cues": option("train_cues", Optional[int], None, help="Use at most N training cues (a seeded subset; default all)."),
        "lora_r": option("lora_r", int, 16, help="LoRA rank of both stages (alpha = 2 x rank; every linear layer)."),
        "held_out_pairs": option("held_out_pairs", str, "exclude", help="exclude: drop from the training cues' responses every held-out "
                                 "(val or test) cue that has the training cue among its own responses, so no reversed pair of a "
                                 "held-out pair is trained on; keep: the cue split only."),
        "split_seed": option("split_seed", Optional[int], None, help="Seed of the train / val / test cue split (default: --seed)."),
        "out": option("out", Path, Path("runs/wordassoc"), help="Output folder: sft/, rl/ (checkpoints, adapter/, summary.json)."),
    }
    return command_of(_params(TRAIN_FLAGS, train_settings(), own), _train)


def _train(**a) -> None:
    quiet_libraries()
    import torch

    from pluralign.models import load_backbone
    from pluralign.training.config import GRPOSettings
    from pluralign.wordassoc.train import RLStage, SFTStage, align_lora, load_with_adapter, train_rl, train_sft

    from pluralign.cli._validate import validate

    validate("wordassoc train", a)
    from pluralign.wordassoc.heldout import HELD_OUT_PAIRS, prepare_training, rl_depth, sft_depth, training_record

    if a["held_out_pairs"] not in HELD_OUT_PAIRS:
        raise PluralignError(f"must be exclude or keep, got {a['held_out_pairs']!r}", field="--held-out-pairs")
    if a["split_seed"] is not None and a["split_seed"] < 0:
        raise PluralignError(f"must be >= 0, got {a['split_seed']}", field="--split-seed")
    if a["threads"]:
        torch.set_num_threads(a["threads"])
    d = _data(a["data"], a["language"], a["min_responses"], a["on_bad_row"], a["on_duplicate"])
    split_seed = a["seed"] if a["split_seed"] is None else a["split_seed"]
    train, excluded, sp = prepare_training(d, split_seed=split_seed, sample_seed=a["seed"], train_cues=a["train_cues"],
                                           held_out_pairs=a["held_out_pairs"])
    typer.echo(f"data {d.source} ({d.language}, {d.response_set}): {len(d)} cues, dropped {d.dropped}; split {sp.describe()}; "
               f"training on {len(train)} cues", err=True)
    if excluded is not None:
        typer.echo(f"held-out pairs: removed {excluded['pairs_removed']} reversed pairs of {excluded['held_out_cues']} val / test "
                   f"cues from {excluded['train_cues_changed']} training cues", err=True)
    record = dict(split_seed=split_seed, sample_seed=a["seed"], train_cues=a["train_cues"], min_responses=a["min_responses"],
                  held_out_pairs=a["held_out_pairs"], excluded=excluded)
    out: Path = a["out"]
    lora = align_lora(r=a["lora_r"], alpha=2 * a["lora_r"])
    from pluralign.wordassoc.train import check_stage, stage_settings

    # every stage to train, with its settings, checked against what its folder already holds before the model loads
    sft_record = sft_stage = rl_stage = None
    if a["stage"] in ("sft", "both"):
        sft_stage = SFTStage(output_dir=str(out / "sft"), tasks=a["sft_tasks"], n_targets=a["n_targets"], samples_per_cue=a["samples_per_cue"],
                             n_candidates=a["n_candidates"], max_steps=a["sft_steps"], batch_size=a["batch_size"], learning_rate=a["sft_lr"],
                             seed=a["seed"], lora=lora)
        sft_record = training_record(d, stage="sft", depth=sft_depth(n_targets=a["n_targets"], samples_per_cue=a["samples_per_cue"],
                                                                      tasks=a["sft_tasks"], n_candidates=a["n_candidates"]), **record)
        sft_extra = {"training_data": sft_record}
        check_stage(out / "sft", stage_settings(sft_stage, {**sft_extra, "model": a["model"]}), max_steps=a["sft_steps"])
        sft_adapter = out / "sft" / "adapter"
    else:
        sft_adapter = a["adapter"]
        if sft_adapter:
            from pluralign.wordassoc.train import read_meta

            sft_record = read_meta(sft_adapter).get("training_data")
    if a["stage"] in ("rl", "both"):
        rl_stage = RLStage(output_dir=str(out / "rl"), reward=a["reward"], n_candidates=a["n_candidates"], n_targets=a["n_targets"],
                           max_steps=a["rl_steps"], batch_size=a["batch_size"], grpo=GRPOSettings(num_generations=a["num_generations"]),
                           learning_rate=a["rl_lr"], seed=a["seed"], lora=lora)
        rl_record = training_record(d, stage="rl", depth=rl_depth(reward=a["reward"], n_candidates=a["n_candidates"]),
                                    previous=sft_record, **record)
        rl_extra = {"training_data": rl_record}
        rl_settings = {"model": a["model"], "init_adapter": str(Path(sft_adapter).resolve()) if sft_adapter else None}
        check_stage(out / "rl", stage_settings(rl_stage, {**rl_extra, **rl_settings}), max_steps=a["rl_steps"])
    if sft_stage is not None:
        model, tok = load_backbone(a["model"], dtype=a["dtype"], device=a["device"])
        model.train()
        r = train_sft(model, tok, train, sft_stage, progress=a["progress"], extra_meta=sft_extra, settings={"model": a["model"]})
        ls = r["losses"]
        loss = f"loss {ls[0]:.3f} -> {ls[-1]:.3f} ({len(ls)} logs)" if ls else "no loss logged"
        done = " (already finished: nothing trained)" if r.get("already_finished") else ""
        typer.echo(f"SFT{done}: {loss}; adapter {r['adapter']}", err=True)
        sft_adapter = Path(r["adapter"])
    if rl_stage is not None:
        base, tok = load_backbone(a["model"], dtype=a["dtype"], device=a["device"])
        policy = load_with_adapter(base, sft_adapter, trainable=True) if sft_adapter else base
        policy.train()
        r = train_rl(policy, tok, train, rl_stage, progress=a["progress"], extra_meta=rl_extra, settings=rl_settings)
        rw = r["rewards"]
        done = " (already finished: nothing trained)" if r.get("already_finished") else ""
        if rw:
            typer.echo(f"RL (GRPO, {a['reward']}){done}: reward {rw[0]:.3f} -> {rw[-1]:.3f} ({len(rw)} logs); adapter {r['adapter']}", err=True)


def _eval_cmd():
    own = {
        **_data_options("Drop cues with fewer distinct responses."),
        "adapter": option("adapter", Optional[Path], None, help="A word-association adapter (wordassoc train); none = the vanilla model."),
        "split": option("split", str, "test", help="Which cue part to evaluate: test or val."),
        "eval_cues": option("eval_cues", Optional[int], 50, help="Evaluate at most N cues of that part (seeded subset)."),
        "ks": option("ks", str, "5,10,40", help="Comma-separated K of Precision@K."),
        "n_words": option("n_words", int, 3, help="Associations asked for per completion (as in training)."),
        "tasks": option("tasks", str, "generation,ranking", help="Which tasks to evaluate: generation, ranking."),
        "transfer": option("transfer", bool, True, "--transfer/--no-transfer", help="Also score WVS answers for USA and China."),
        "fixed_words": option("fixed_words", int, 5, help="Also report P@N at N generated words: cues with fewer distinct words are "
                              "sampled again (at most --top-up-rounds rounds) until they have N; 0 = off."),
        "top_up_rounds": option("top_up_rounds", int, 3, help="Rounds of further samples for --fixed-words."),
        "split_seed": option("split_seed", Optional[int], None, help="Seed of the cue split and of the evaluated subset (default: --seed); "
                             "an adapter that records its split must be evaluated on it."),
        "out": option("out", Path, Path("runs/wordassoc/eval.json"), help="Results JSON (written atomically)."),
    }
    return command_of(_params(EVAL_FLAGS, eval_settings(), own), _eval)


def _eval(**a) -> None:
    quiet_libraries()
    import datetime as dt

    import torch

    from pluralign.data.loaders.swow import sample_cues, split_cues
    from pluralign.io import atomic_write_json
    from pluralign.models import load_backbone
    from pluralign.wordassoc.generate import GenConfig, evaluate_generation, evaluate_ranking

    from pluralign.cli._validate import validate

    validate("wordassoc eval", a)
    from pluralign.io import check_replaceable, json_schema_of

    check_replaceable(a["out"], own=lambda f: json_schema_of(f) == "pluralign.wordassoc.eval/1",
                      what="an earlier `pluralign wordassoc eval` result")
    for name in ("fixed_words", "top_up_rounds", "split_seed"):
        if a[name] is not None and a[name] < 0:
            raise PluralignError(f"must be >= 0, got {a[name]}", field="--" + name.replace("_", "-"))
    if a["threads"]:
        torch.set_num_threads(a["threads"])
    try:
        ks = [int(k) for k in a["ks"].split(",") if k.strip()]
    except ValueError:
        raise PluralignError(f"--ks must be integers, got {a['ks']!r}", field="ks") from None
    tasks = {t.strip() for t in a["tasks"].split(",") if t.strip()}
    if not tasks <= {"generation", "ranking"}:
        raise PluralignError(f"unknown task(s) {sorted(tasks - {'generation', 'ranking'})}", field="tasks")
    if a["split"] not in ("test", "val"):
        raise PluralignError("--split must be test or val", field="split")
    d = _data(a["data"], a["language"], a["min_responses"], a["on_bad_row"], a["on_duplicate"])
    split_seed = a["seed"] if a["split_seed"] is None else a["split_seed"]
    sp = split_cues(d, seed=split_seed)
    part = sample_cues(getattr(sp, a["split"]), a["eval_cues"], seed=split_seed)
    from pluralign.wordassoc.heldout import adapter_leaks

    meta = None
    if a["adapter"]:
        from pluralign.wordassoc.train import read_meta

        meta = read_meta(a["adapter"]) if Path(a["adapter"]).is_dir() else None
    leaks, leak_source = adapter_leaks(
        d, part, meta, split_seed=split_seed, adapter=bool(a["adapter"]), min_responses=a["min_responses"],
        reload=lambda m: _data(a["data"], a["language"], m, a["on_bad_row"], a["on_duplicate"]))
    model, tok = load_backbone(a["model"], dtype=a["dtype"], device=a["device"])
    if a["adapter"]:
        from pluralign.wordassoc.train import load_with_adapter

        model = load_with_adapter(model, a["adapter"])
    model.eval()
    res: dict = {
        "schema": "pluralign.wordassoc.eval/1", "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": a["model"], "adapter": str(a["adapter"]) if a["adapter"] else None,
        "data": {"source": d.source, "language": d.language, "response_set": d.response_set, "dropped": d.dropped},
        "split": sp.describe(), "eval_part": a["split"], "n_eval_cues": len(part), "seed": a["seed"], "split_seed": split_seed,
        "held_out_pairs": {"source": leak_source, "cues_with_reversed_pair_in_training": len(leaks),
                           "reversed_pairs": sum(len(v) for v in leaks.values()), "clean_cues": len(part) - len(leaks),
                           "training_excluded_reversed_pairs": ((meta or {}).get("training_data") or {}).get("held_out_pairs") == "exclude"},
        "device": str(next(model.parameters()).device), "threads": torch.get_num_threads(),
    }
    if leaks:
        typer.echo(f"held-out pairs: {len(leaks)} of {len(part)} cues have a reversed pair in the training data ({leak_source}); "
                   "every metric is also given without them", err=True)
    if "generation" in tasks:
        cfg = GenConfig(batch_size=a["batch_size"], max_new_tokens=a["max_new_tokens"], num_samples=a["num_samples"],
                        temperature=a["temperature"], seed=a["seed"])
        res["generation"] = evaluate_generation(model, tok, part, cfg, n_words=a["n_words"], ks=ks, progress=a["progress"],
                                                fixed_words=a["fixed_words"], top_up_rounds=a["top_up_rounds"], leaks=leaks,
                                                leak_source=leak_source)
        g = res["generation"]
        fw = g.get("fixed_words")
        fixed = ""
        if fw:
            n = fw["n_words"]
            fixed = f"; P@{n} at {n} generated words {fw[f'P@{n}']:.3f}"
        typer.echo("generation: " + ", ".join(f"P@{k} {g[f'P@{k}']:.3f}" for k in ks)
                   + f"; distinct words per cue {g['distinct_words']['mean']:.1f}" + fixed, err=True)
    if "ranking" in tasks:
        cfg = GenConfig(batch_size=a["batch_size"], max_new_tokens=a["max_new_tokens"] + 8, num_samples=1, seed=a["seed"])
        res["ranking"] = evaluate_ranking(model, tok, part, cfg, n_candidates=a["n_candidates"], seed=a["seed"], progress=a["progress"],
                                          leaks=leaks)
        typer.echo(f"ranking: Spearman {res['ranking']['spearman']:.3f}", err=True)
    if a["transfer"]:
        from pluralign.wordassoc.transfer import TransferConfig, evaluate_transfer, transfer_dataset

        tc = TransferConfig(n_tension=a["n_tension"], n_items=a["transfer_items"], batch_size=a["batch_size"], seed=a["seed"])
        test, tension, ranking = transfer_dataset(tc)
        r = evaluate_transfer(model, tok, test, tc, model_name=a["model"], progress=a["progress"])
        res["transfer"] = {"config": {k: v for k, v in vars(tc).items()}, "tension_items": tension,
                           "tension_jsd": {q: ranking[q] for q in tension}, "result": r}
        typer.echo(f"transfer: per-country {r['per_group']}", err=True)
    atomic_write_json(a["out"], res)
    typer.echo(f"wrote {a['out']}", err=True)


train_cmd = app.command("train", help="Train on word associations: SFT with LoRA, then GRPO with the Spearman ranking reward. "
                        "Re-running with the same --out resumes from the newest checkpoint of each stage.")(_train_cmd())
eval_cmd = app.command("eval", help="Evaluate on held-out cues: P@K of generated associations, Spearman of rankings, and "
                       "(with --transfer) WVS answers of USA / China with the persona method.")(_eval_cmd())


@app.command("report", help="Table of several `wordassoc eval` results (the first is the baseline for the transfer comparison).")
def report_cmd(
    results: list[Path] = typer.Argument(..., help="eval JSON files; the first is the baseline (e.g. the vanilla model)."),
    labels: Optional[str] = typer.Option(None, help="Comma-separated row labels (default: adapter folder names)."),
    out: Optional[Path] = typer.Option(None, help="Also write the markdown here."),
) -> None:
    from pluralign.cli.main import run_guarded

    run_guarded(_report, results=results, labels=labels, out=out)


def _report(results: list[Path], labels: Optional[str], out: Optional[Path]) -> None:
    from pluralign.cli._validate import validate
    from pluralign.io import atomic_write_text, read_json

    validate("wordassoc report", {"out": out})
    from pluralign.io import check_replaceable, is_markdown_table_file

    check_replaceable(out, own=lambda f: is_markdown_table_file(f, notes=True), what="a report written by `pluralign wordassoc report`",
                      inputs=results)
    rs = [read_json(p, allow_nan=True) for p in results]
    for p, r in zip(results, rs):
        if not isinstance(r, dict) or r.get("schema") != "pluralign.wordassoc.eval/1":
            raise PluralignError("not a `pluralign wordassoc eval` results file", file=p)
    names = [x.strip() for x in labels.split(",")] if labels else [r.get("adapter") or "vanilla" for r in rs]
    if len(names) != len(rs):
        raise PluralignError(f"{len(names)} labels for {len(rs)} results", field="labels")
    from pluralign.wordassoc.report import transfer_table, wordassoc_tables

    text = wordassoc_tables(rs, names)
    transfer = transfer_table(rs, names)
    if transfer:
        text += "\n" + transfer
    typer.echo(text)
    if out:
        atomic_write_text(out, text)


def _study(**a) -> None:
    from pluralign._fields import settings
    from pluralign.io import atomic_write_text
    from pluralign.wordassoc.study import StudyConfig, parse_seeds, pooled_markdown, run

    from pluralign.cli._validate import validate

    validate("wordassoc study", a)
    seeds = parse_seeds(a["seeds"])
    if a["out"].exists() and not a["out"].is_dir():
        raise PluralignError("exists and is not a folder", file=a["out"], field="--out")
    given = {s.name: a[s.name] for s in settings(StudyConfig) if s.name in a}
    cfg = StudyConfig(**{**given, "seeds": seeds, "out": str(a["out"])})
    if not a["report"]:
        run(cfg, dry=a["dry_run"], echo=lambda m: typer.echo(m, err=True))
        if a["dry_run"]:
            return
    text = pooled_markdown(cfg)
    atomic_write_text(a["out"] / "report.md", text + "\n")
    typer.echo(text)
    typer.echo(f"wrote {a['out'] / 'report.md'}", err=True)


def _study_cmd():
    from pluralign.wordassoc.study import StudyConfig

    return command_from(StudyConfig, _study, after=[
        option("dry_run", bool, False, "--dry-run", help="List the steps still to run, run nothing."),
        option("report", bool, False, "--report", help="Only write OUT/report.md from the finished evaluations.")])


#: every flag but --dry-run and --report is a StudyConfig setting
study_cmd = app.command("study", help="The budget study: for each seed, SFT then SFT + GRPO, each evaluated (with the vanilla model) on the "
             "same held-out cues; then OUT/report.md, per seed and pooled over seeds with intervals. Every step is one "
             "`pluralign wordassoc` process with its log in OUT; finished steps are skipped, so the same command continues an "
             "interrupted study. Defaults: the budget run of docs/results/align.md, 3 seeds.")(_study_cmd())
