"""``pluralign wordassoc``: ALIGN word-association learning (SWOW) — train, evaluate, report."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pluralign.cli._common import markdown_table, quiet_libraries
from pluralign.errors import PluralignError

HELP = """Word-association learning for cultural alignment (ALIGN, on Small World of Words data).

The model learns native speakers' free associations: first SFT with LoRA on "cue -> the first 3 responses, most common first", then RL (GRPO, the shared implementation of `pluralign train --stage grpo`; the paper used PPO, which TRL removed) on "cue + candidates -> ranked list" with a Spearman reward against the human strengths. Evaluation on held-out cues: Precision@K (K = 5, 10, 40) of generated associations and Spearman rho of rankings; and the transfer to World Values Survey answers of USA and China (JSD, EMD, high-tension items).

Data: a SWOW strength file (cue,response,R1,N,R1.Strength or the R123 columns; SWOW-EN or SWOW-ZH). By default the shared copy of SWOW-EN (CC BY-NC-ND: never copied into outputs). Cues are split 80/10/10 by a seeded hash; training uses train cues, evaluation the test (or val) cues.

Examples:

  pluralign wordassoc train --stage both --train-cues 300 --sft-steps 60 --rl-steps 20 --out runs/wa
  pluralign wordassoc eval --eval-cues 50 --out runs/wa/eval-vanilla.json
  pluralign wordassoc eval --adapter runs/wa/sft/adapter --out runs/wa/eval-sft.json
  pluralign wordassoc report runs/wa/eval-vanilla.json runs/wa/eval-sft.json runs/wa/eval-rl.json
"""

app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="wordassoc", help=HELP)


def _data(path: Optional[str], language: Optional[str], min_responses: int, on_bad_row: str, on_duplicate: str):
    from pluralign.data.loaders.swow import load_swow

    return load_swow(path, language=language, min_responses=min_responses, on_bad_row=on_bad_row, on_duplicate=on_duplicate)


_DATA_HELP = "SWOW strength CSV (or a folder holding one); default: the shared SWOW-EN R1 file."
_LANG_HELP = "Data language (en, zh); default from the file name (SWOW-EN / SWOWZH). Must match the prompt template."
#: options both sub-commands take, with the same meaning
_W = {
    "model": typer.Option("smollm2-135m", help="Short name, hub id, local folder or .gguf file."),
    "data": typer.Option(None, help=_DATA_HELP),
    "language": typer.Option(None, help=_LANG_HELP),
    "on_bad_row": typer.Option("error", help="Malformed strength rows: error (default) or skip (counted)."),
    "on_duplicate": typer.Option("error", help="Duplicate cue-response rows: error (default) or merge (sum counts)."),
    "n_candidates": typer.Option(5, help="Candidates per ranking prompt."),
    "dtype": typer.Option("auto", help="auto (fp32 on CPU, bf16 on CUDA), fp32, bf16."),
    "device": typer.Option("auto", help="auto, cpu, cuda."),
    "threads": typer.Option(None, help="torch CPU threads."),
    "progress": typer.Option(True, help="Show progress bars."),
}


@app.command("train", help="Train on word associations: SFT with LoRA, then GRPO with the Spearman ranking reward. "
             "Re-running with the same --out resumes from the newest checkpoint of each stage.")
def train_cmd(
    model: str = _W["model"],
    data: Optional[str] = _W["data"],
    language: Optional[str] = _W["language"],
    stage: str = typer.Option("both", help="sft, rl (on --adapter or a fresh LoRA) or both (rl continues the SFT adapter)."),
    adapter: Optional[Path] = typer.Option(None, help="For --stage rl: the SFT adapter to continue."),
    train_cues: Optional[int] = typer.Option(None, help="Use at most N training cues (a seeded subset; default all)."),
    min_responses: int = typer.Option(3, help="Drop cues with fewer distinct responses (counted in the summary)."),
    on_bad_row: str = _W["on_bad_row"],
    on_duplicate: str = _W["on_duplicate"],
    sft_tasks: str = typer.Option("generation", help="SFT tasks: generation, or generation,ranking."),
    n_targets: int = typer.Option(3, help="Responses per SFT target (ALIGN: 3)."),
    samples_per_cue: int = typer.Option(1, help="SFT samples per cue (next groups of n_targets responses)."),
    n_candidates: int = _W["n_candidates"],
    sft_steps: int = typer.Option(100, help="SFT optimizer steps."),
    sft_lr: float = typer.Option(2e-4, help="SFT learning rate."),
    rl_steps: int = typer.Option(30, help="GRPO optimizer steps."),
    rl_lr: float = typer.Option(5e-5, help="GRPO learning rate."),
    reward: str = typer.Option("spearman", help="RL reward: spearman (ranking; ALIGN) or precision (generation)."),
    num_generations: int = typer.Option(4, help="GRPO completions per prompt."),
    batch_size: int = typer.Option(8, help="Per-device batch (GRPO: completions per step)."),
    lora_r: int = typer.Option(16, help="LoRA rank."),
    seed: int = typer.Option(0, help="Seed of the cue split, subsets, shuffling and sampling."),
    dtype: str = _W["dtype"],
    device: str = _W["device"],
    threads: Optional[int] = _W["threads"],
    out: Path = typer.Option(Path("runs/wordassoc"), help="Output folder: sft/, rl/ (checkpoints, adapter/, summary.json)."),
    progress: bool = _W["progress"],
) -> None:
    from pluralign.cli.main import run_guarded

    run_guarded(_train, **locals())


def _train(**a) -> None:
    quiet_libraries()
    import torch

    from pluralign.data.loaders.swow import sample_cues, split_cues
    from pluralign.models import load_backbone
    from pluralign.wordassoc.train import LoraSettings, RLStage, SFTStage, load_with_adapter, train_rl, train_sft

    from pluralign.cli._validate import validate

    validate("wordassoc train", a)
    if a["threads"]:
        torch.set_num_threads(a["threads"])
    d = _data(a["data"], a["language"], a["min_responses"], a["on_bad_row"], a["on_duplicate"])
    sp = split_cues(d, seed=a["seed"])
    train = sample_cues(sp.train, a["train_cues"], seed=a["seed"])
    typer.echo(f"data {d.source} ({d.language}, {d.response_set}): {len(d)} cues, dropped {d.dropped}; split {sp.describe()}; "
               f"training on {len(train)} cues", err=True)
    out: Path = a["out"]
    lora = LoraSettings(r=a["lora_r"], alpha=2 * a["lora_r"])
    model, tok = load_backbone(a["model"], dtype=a["dtype"], device=a["device"])
    model.train()
    if a["stage"] in ("sft", "both"):
        st = SFTStage(output_dir=str(out / "sft"), tasks=a["sft_tasks"], n_targets=a["n_targets"], samples_per_cue=a["samples_per_cue"],
                      n_candidates=a["n_candidates"], max_steps=a["sft_steps"], batch_size=a["batch_size"], learning_rate=a["sft_lr"],
                      seed=a["seed"], lora=lora)
        r = train_sft(model, tok, train, st, progress=a["progress"])
        ls = r["losses"]
        loss = f"loss {ls[0]:.3f} -> {ls[-1]:.3f} ({len(ls)} logs)" if ls else "no loss logged"
        typer.echo(f"SFT: {loss}; adapter {r['adapter']}", err=True)
        sft_adapter = Path(r["adapter"])
    else:
        sft_adapter = a["adapter"]
    if a["stage"] in ("rl", "both"):
        base, tok = load_backbone(a["model"], dtype=a["dtype"], device=a["device"])
        policy = load_with_adapter(base, sft_adapter, trainable=True) if sft_adapter else base
        policy.train()
        st = RLStage(output_dir=str(out / "rl"), reward=a["reward"], n_candidates=a["n_candidates"], n_targets=a["n_targets"],
                     max_steps=a["rl_steps"], batch_size=a["batch_size"], num_generations=a["num_generations"],
                     learning_rate=a["rl_lr"], seed=a["seed"], lora=lora)
        r = train_rl(policy, tok, train, st, progress=a["progress"])
        rw = r["rewards"]
        if rw:
            typer.echo(f"RL (GRPO, {a['reward']}): reward {rw[0]:.3f} -> {rw[-1]:.3f} ({len(rw)} logs); adapter {r['adapter']}", err=True)


@app.command("eval", help="Evaluate on held-out cues: P@K of generated associations, Spearman of rankings, and "
             "(with --transfer) WVS answers of USA / China with the persona method.")
def eval_cmd(
    model: str = _W["model"],
    adapter: Optional[Path] = typer.Option(None, help="A word-association adapter (wordassoc train); none = the vanilla model."),
    data: Optional[str] = _W["data"],
    language: Optional[str] = _W["language"],
    split: str = typer.Option("test", help="Which cue part to evaluate: test or val."),
    eval_cues: Optional[int] = typer.Option(50, help="Evaluate at most N cues of that part (seeded subset)."),
    min_responses: int = typer.Option(3, help="Drop cues with fewer distinct responses."),
    on_bad_row: str = _W["on_bad_row"],
    on_duplicate: str = _W["on_duplicate"],
    ks: str = typer.Option("5,10,40", help="Comma-separated K of Precision@K."),
    n_words: int = typer.Option(3, help="Associations asked for per completion (as in training)."),
    num_samples: int = typer.Option(4, help="Completions per cue for the generation task (1 = greedy); merged by frequency."),
    temperature: float = typer.Option(1.0, help="Sampling temperature when num_samples > 1."),
    n_candidates: int = _W["n_candidates"],
    max_new_tokens: int = typer.Option(24, help="New tokens per completion."),
    batch_size: int = typer.Option(16, help="Prompts per generate() call (left-padded)."),
    tasks: str = typer.Option("generation,ranking", help="Which tasks to evaluate: generation, ranking."),
    transfer: bool = typer.Option(True, "--transfer/--no-transfer", help="Also score WVS answers for USA and China."),
    transfer_items: Optional[int] = typer.Option(None, help="WVS items for the transfer (high-tension ones first; default all)."),
    n_tension: int = typer.Option(20, help="Size of the high-tension subset."),
    seed: int = typer.Option(0, help="Seed of the split, the subset and sampling."),
    dtype: str = _W["dtype"],
    device: str = _W["device"],
    threads: Optional[int] = _W["threads"],
    out: Path = typer.Option(Path("runs/wordassoc/eval.json"), help="Results JSON (written atomically)."),
    progress: bool = _W["progress"],
) -> None:
    from pluralign.cli.main import run_guarded

    run_guarded(_eval, **locals())


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
    sp = split_cues(d, seed=a["seed"])
    part = sample_cues(getattr(sp, a["split"]), a["eval_cues"], seed=a["seed"])
    model, tok = load_backbone(a["model"], dtype=a["dtype"], device=a["device"])
    if a["adapter"]:
        from pluralign.wordassoc.train import load_with_adapter

        model = load_with_adapter(model, a["adapter"])
    model.eval()
    res: dict = {
        "schema": "pluralign.wordassoc.eval/1", "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": a["model"], "adapter": str(a["adapter"]) if a["adapter"] else None,
        "data": {"source": d.source, "language": d.language, "response_set": d.response_set, "dropped": d.dropped},
        "split": sp.describe(), "eval_part": a["split"], "n_eval_cues": len(part), "seed": a["seed"],
        "device": str(next(model.parameters()).device), "threads": torch.get_num_threads(),
    }
    if "generation" in tasks:
        cfg = GenConfig(batch_size=a["batch_size"], max_new_tokens=a["max_new_tokens"], num_samples=a["num_samples"],
                        temperature=a["temperature"], seed=a["seed"])
        res["generation"] = evaluate_generation(model, tok, part, cfg, n_words=a["n_words"], ks=ks, progress=a["progress"])
        typer.echo("generation: " + ", ".join(f"P@{k} {res['generation'][f'P@{k}']:.3f}" for k in ks), err=True)
    if "ranking" in tasks:
        cfg = GenConfig(batch_size=a["batch_size"], max_new_tokens=a["max_new_tokens"] + 8, num_samples=1, seed=a["seed"])
        res["ranking"] = evaluate_ranking(model, tok, part, cfg, n_candidates=a["n_candidates"], seed=a["seed"], progress=a["progress"])
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
    from pluralign.wordassoc.stats import LEVEL, N_BOOT, fmt_interval, paired_change
    from pluralign.wordassoc.transfer import TransferConfig, compare_transfer, transfer_dataset, transfer_rows

    validate("wordassoc report", {"out": out})
    rs = [read_json(p, allow_nan=True) for p in results]
    for p, r in zip(results, rs):
        if not isinstance(r, dict) or r.get("schema") != "pluralign.wordassoc.eval/1":
            raise PluralignError("not a `pluralign wordassoc eval` results file", file=p)
    names = [x.strip() for x in labels.split(",")] if labels else [r.get("adapter") or "vanilla" for r in rs]
    if len(names) != len(rs):
        raise PluralignError(f"{len(names)} labels for {len(rs)} results", field="labels")
    header = ["model", "cues", "P@5", "P@10", "P@40", "Spearman", "listed a candidate"]
    rows = []
    for n, r in zip(names, rs):
        g, k = r.get("generation", {}), r.get("ranking", {})
        rows.append([n, r.get("n_eval_cues", "")] + [_with_interval(g, f"P@{kk}") for kk in (5, 10, 40)]
                    + [_with_interval(k, "spearman"), k.get("listed_a_candidate", "")])
    text = markdown_table(header, rows) + "\n"
    level = int(100 * LEVEL)
    text += f"\nBrackets: {level} % percentile bootstrap intervals over cues ({N_BOOT} replicates).\n"
    crows = []
    for i in range(1, len(rs)):
        for j in sorted({0, i - 1}):
            crow = [f"{names[j]} → {names[i]}"]
            for task, metric in (("generation", "P@5"), ("generation", "P@10"), ("ranking", "spearman")):
                a = rs[j].get(task, {}).get("per_cue", {}).get(metric)
                b = rs[i].get(task, {}).get("per_cue", {}).get(metric)
                if not a or not b:
                    crow += ["–", "–"]
                    continue
                ch = paired_change(a, b)
                crow += [fmt_interval(ch["diff"]), fmt_interval(ch["relative"], pct=True)]
            crows.append(crow)
    if crows:
        text += "\n" + markdown_table(["change", "Δ P@5", "relative P@5", "Δ P@10", "relative P@10", "Δ Spearman", "relative Spearman"],
                                      crows) + "\n"
        text += (f"\nPaired over the cues both evaluations hold ({level} % bootstrap intervals, the same resampled cues for "
                 "both); relative = mean(new) / mean(base) − 1, as the ALIGN paper reports P@5; – where the baseline "
                 "mean is 0 or a result lacks per-cue values.\n")
    if all("transfer" in r for r in rs) and len(rs) > 1:
        base = rs[0]["transfer"]
        cfg = base["config"]
        tc = TransferConfig(countries=tuple(cfg["countries"]), target=cfg["target"], n_tension=cfg["n_tension"], n_items=cfg["n_items"], seed=cfg["seed"])
        test, tension, _ = transfer_dataset(tc)
        trows = []
        for n, r in zip(names[1:], rs[1:]):
            cmp = compare_transfer(base["result"], r["transfer"]["result"], test, tension, tc)
            trows += transfer_rows(cmp, f"{names[0]} → {n}")
        text += "\n" + markdown_table(["change", "country", "items", "JSD", "EMD", "high-tension answers moved"], trows) + "\n"
    typer.echo(text)
    if out:
        atomic_write_text(out, text)


def _with_interval(res: dict, metric: str) -> str:
    """``0.093 [0.071, 0.117]`` from a result's ``intervals`` (older results: the bare value)."""
    iv = res.get("intervals", {}).get(metric)
    if iv and iv.get("low") is not None:
        return f"{iv['mean']:.3f} [{iv['low']:.3f}, {iv['high']:.3f}]"
    v = res.get(metric, "")
    return f"{v:.3f}" if isinstance(v, float) else v
