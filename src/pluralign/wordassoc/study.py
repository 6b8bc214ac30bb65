"""The ALIGN budget study: SFT, then SFT + GRPO, for several seeds, all evaluated on the same held-out
cues; resumable (``pluralign wordassoc study``).

Every step is one ``pluralign wordassoc`` command run as its own process (its output in a log file
beside its results); a step whose result exists is skipped, so the same command continues an
interrupted study (a training step that was cut off resumes from its last checkpoint)::

    OUT/eval-vanilla.json                      the model without an adapter (once)
    OUT/s<seed>/sft/adapter, OUT/s<seed>/rl/adapter
    OUT/s<seed>/eval-sft.json, OUT/s<seed>/eval-rl.json
    OUT/report.md                              per seed, and pooled over seeds (associations and WVS transfer)

All seeds share one cue split and one evaluated subset (``split_seed``); the seed sets the training
cues' sample, shuffling, LoRA initialisation and sampling. Training excludes the reversed pairs of
held-out pairs by default (:mod:`pluralign.wordassoc.heldout`). The pooled report gives each metric
as the mean over seeds with the seeds' range, and the paired changes between models with bootstrap
intervals over (seed, cue) pairs.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from pluralign._fields import helpfield, shared_field
from pluralign.errors import PluralignError

MODELS = ("vanilla", "SFT", "SFT+GRPO")


def _held_out_pairs() -> tuple[str, ...]:
    from pluralign.wordassoc.heldout import HELD_OUT_PAIRS

    return tuple(HELD_OUT_PAIRS)


@dataclass
class StudyConfig:
    """The study's settings; each is also the ``pluralign wordassoc study`` flag of the same name."""

    seeds: tuple[int, ...] = helpfield((0, 1, 2), "Training seeds (comma-separated).")
    split_seed: int = helpfield(0, "Seed of the cue split and of the evaluated cues, the same for every seed.", lo=0)
    model: str = shared_field("model")
    data: str | None = helpfield(None, "SWOW strength CSV (or a folder holding one); default: the shared SWOW-EN R1 file.")
    train_cues: int = helpfield(2000, "Training cues (seeded subset).", lo=1)
    sft_steps: int = helpfield(250, "SFT steps.", lo=1)
    sft_lr: float = helpfield(5e-4, "SFT learning rate.", lo=0, open_lo=True)
    rl_steps: int = helpfield(200, "GRPO steps.", lo=1)
    batch_size: int = shared_field("batch_size", 8, "Batch size of both stages.")
    num_generations: int = helpfield(4, "GRPO completions per prompt.", lo=1)
    held_out_pairs: str = helpfield("exclude", "exclude (default) or keep the reversed pairs of held-out pairs in training.", choices=_held_out_pairs)
    eval_cues: int = helpfield(300, "Evaluated test cues.", lo=1)
    num_samples: int = helpfield(3, "Sampled completions per cue (generation).", lo=1)
    max_new_tokens: int = helpfield(20, "New tokens per completion.", lo=1)
    n_tension: int = helpfield(30, "High-tension WVS items of the transfer check.", lo=1)
    fixed_words: int = helpfield(5, "P@N at N generated words.", lo=0)
    threads: int = shared_field("threads", 1)
    out: str = helpfield("runs/wa-study", "Study folder.", path=True)
    extra_train: list[str] = helpfield([], "More `wordassoc train` arguments.", cli=False)
    extra_eval: list[str] = helpfield([], "More `wordassoc eval` arguments.", cli=False)


@dataclass
class Step:
    name: str
    argv: list[str]
    result: Path  # exists when the step is done
    log: Path


def _common(cfg: StudyConfig) -> list[str]:
    out = ["--model", cfg.model, "--threads", str(cfg.threads), "--no-progress"]
    return out + (["--data", cfg.data] if cfg.data else [])


def plan(cfg: StudyConfig) -> list[Step]:
    """The steps in order: seed-major, so that a partial study holds complete seeds, and each SFT
    adapter evaluated before its GRPO stage starts, so that a study stopped during GRPO already has
    the seed's SFT row."""
    if not cfg.seeds:
        raise PluralignError("names no seed", field="--seeds")
    out = Path(cfg.out)
    ev = [*_common(cfg), "--split-seed", str(cfg.split_seed), "--eval-cues", str(cfg.eval_cues), "--num-samples", str(cfg.num_samples),
          "--max-new-tokens", str(cfg.max_new_tokens), "--n-tension", str(cfg.n_tension), "--fixed-words", str(cfg.fixed_words),
          *cfg.extra_eval]
    tr = [*_common(cfg), "--split-seed", str(cfg.split_seed), "--train-cues", str(cfg.train_cues), "--sft-steps", str(cfg.sft_steps),
          "--sft-lr", str(cfg.sft_lr), "--rl-steps", str(cfg.rl_steps), "--batch-size", str(cfg.batch_size),
          "--num-generations", str(cfg.num_generations), "--held-out-pairs", cfg.held_out_pairs, *cfg.extra_train]
    steps = [Step("eval vanilla", ["eval", *ev, "--seed", str(cfg.seeds[0]), "--out", str(out / "eval-vanilla.json")],
                  out / "eval-vanilla.json", out / "eval-vanilla.log")]
    for s in cfg.seeds:
        d = out / f"s{s}"
        sft, rl = d / "sft" / "adapter", d / "rl" / "adapter"
        steps += [
            Step(f"s{s} SFT", ["train", *tr, "--stage", "sft", "--seed", str(s), "--out", str(d)], sft / "adapter_config.json", d / "sft.log"),
            Step(f"s{s} eval SFT", ["eval", *ev, "--adapter", str(sft), "--seed", str(s), "--out", str(d / "eval-sft.json")],
                 d / "eval-sft.json", d / "eval-sft.log"),
            Step(f"s{s} GRPO", ["train", *tr, "--stage", "rl", "--adapter", str(sft), "--seed", str(s), "--out", str(d)],
                 rl / "adapter_config.json", d / "rl.log"),
            Step(f"s{s} eval SFT+GRPO", ["eval", *ev, "--adapter", str(rl), "--seed", str(s), "--out", str(d / "eval-rl.json")],
                 d / "eval-rl.json", d / "eval-rl.log"),
        ]
    return steps


def subprocess_runner(argv: list[str], log: Path) -> int:
    """``python -m pluralign.cli.main wordassoc ARGV``, stdout and stderr to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as fh:
        fh.write("$ pluralign wordassoc " + " ".join(argv) + "\n")
        fh.flush()
        return subprocess.call([sys.executable, "-m", "pluralign.cli.main", "wordassoc", *argv], stdout=fh, stderr=subprocess.STDOUT)


def run(cfg: StudyConfig, *, runner: Callable[[list[str], Path], int] = subprocess_runner, dry: bool = False,
        echo: Callable[[str], None] = print) -> list[str]:
    """Run the steps whose result is missing (all of them, and nothing else, with ``dry``: only list
    them). A failing step stops the study (its log names the reason)."""
    done = []
    for st in plan(cfg):
        if st.result.exists():
            echo(f"{st.name}: done (skipped)")
            continue
        echo(f"{st.name}: " + ("would run" if dry else "running") + ": pluralign wordassoc " + " ".join(st.argv))
        if dry:
            continue
        rc = runner(st.argv, st.log)
        if rc != 0 or not st.result.exists():
            raise PluralignError(f"{st.name} failed (exit {rc}); see {st.log}; run the study again to continue", field="study")
        done.append(st.name)
    return done


def load_results(cfg: StudyConfig) -> dict:
    """``{"vanilla": result, seed: {"SFT": result, "SFT+GRPO": result}}`` of the finished evaluations."""
    from pluralign.io import read_json

    out = Path(cfg.out)
    res: dict = {}
    if (out / "eval-vanilla.json").exists():
        res["vanilla"] = read_json(out / "eval-vanilla.json", allow_nan=True)
    for s in cfg.seeds:
        got = {}
        for name, f in (("SFT", "eval-sft.json"), ("SFT+GRPO", "eval-rl.json")):
            p = out / f"s{s}" / f
            if p.exists():
                got[name] = read_json(p, allow_nan=True)
        if got:
            res[s] = got
    return res


def _metric(r: dict, key: str, clean: bool = False) -> tuple[float | None, dict | None]:
    """(mean, per-cue dict) of ``P@K`` (``P@5``, ``P@10``, ...), ``fixed`` (P@N at N words), ``spearman`` or ``distinct``."""
    task = "ranking" if key == "spearman" else "generation"
    g = r.get(task) or {}
    if clean:
        g = g.get("clean") or {}
    if key == "fixed":
        fw = g.get("fixed_words") or {}
        return (fw.get(f"P@{fw['n_words']}"), fw.get("per_cue")) if fw else (None, None)
    if key == "distinct":
        dw = g.get("distinct_words") or {}
        return dw.get("mean"), None
    return g.get(key), (g.get("per_cue") or {}).get(key)


def pooled_markdown(cfg: StudyConfig, results: dict | None = None) -> str:
    """Per seed: ``wordassoc report``'s tables; pooled: mean over seeds [seed range] of each metric,
    and the paired changes over (seed, cue) pairs, on all cues and on the cues held out for real."""
    import numpy as np

    from pluralign.wordassoc.report import markdown_table, transfer_comparisons, transfer_table, wordassoc_tables
    from pluralign.wordassoc.stats import LEVEL, fmt_interval, paired_change

    results = load_results(cfg) if results is None else results
    seeds = [s for s in cfg.seeds if s in results]
    if "vanilla" not in results or not seeds:
        raise PluralignError(f"no finished evaluation in {cfg.out} yet (run the study first)", field="--out")
    text = [f"# ALIGN study: {len(seeds)} of {len(cfg.seeds)} seeds finished ({', '.join(map(str, seeds))})", ""]
    keys = [("P@5", "P@5"), ("P@10", "P@10"), ("fixed", f"P@{cfg.fixed_words} at {cfg.fixed_words} words"), ("spearman", "Spearman"),
            ("distinct", "distinct words / cue")]
    for clean in (False, True):
        rows = []
        for m in MODELS:
            runs = [results["vanilla"]] if m == "vanilla" else [results[s][m] for s in seeds if m in results[s]]
            if not runs:
                continue
            cells = [m, len(runs)]
            for k, _ in keys:
                vals = [v for v in (_metric(r, k, clean)[0] for r in runs) if v is not None]
                cells.append("–" if not vals else f"{np.mean(vals):.3f}" + (f" [{min(vals):.3f}, {max(vals):.3f}]" if len(vals) > 1 else ""))
            rows.append(cells)
        title = "cues held out for real (no reversed pair in the model's training data)" if clean else "all evaluated cues"
        text += [f"## Pooled over seeds, {title}", "", markdown_table(["model", "seeds", *[lab for _, lab in keys]], rows), "",
                 "Mean over seeds [lowest, highest seed]; vanilla has no seed.", ""]
        crows = []
        for a, b in (("vanilla", "SFT"), ("vanilla", "SFT+GRPO"), ("SFT", "SFT+GRPO")):
            crow = [f"{a} → {b}"]
            for k, _ in keys[:4]:
                pa, pb = {}, {}
                for s in seeds:
                    ra = results["vanilla"] if a == "vanilla" else results[s].get(a)
                    rb = results[s].get(b)
                    if not ra or not rb:
                        continue
                    da, db = _metric(ra, k, clean)[1], _metric(rb, k, clean)[1]
                    if da and db:
                        pa.update({f"{s}|{c}": v for c, v in da.items()})
                        pb.update({f"{s}|{c}": v for c, v in db.items()})
                if not pa:
                    crow += ["–", "–"]
                    continue
                ch = paired_change(pa, pb)
                crow += [fmt_interval(ch["diff"]), fmt_interval(ch["relative"], pct=True)]
            crows.append(crow)
        head = ["change"] + [x for _, lab in keys[:4] for x in (f"Δ {lab}", "relative")]
        text += [markdown_table(head, crows), "",
                 f"Paired over (seed, cue) pairs both evaluations hold; {int(100 * LEVEL)} % bootstrap intervals over those pairs "
                 "(each seed's cues are the same cues, so the intervals mix cue and seed variation).", ""]
    per_seed = {}  # seed -> (model names, results, transfer comparisons against vanilla), each computed once
    for s in seeds:
        names = ["vanilla", *[m for m in MODELS[1:] if m in results[s]]]
        rs = [results["vanilla"], *[results[s][m] for m in names[1:]]]
        per_seed[s] = (names, rs, transfer_comparisons(rs))
    text += _pooled_transfer(results, per_seed)
    for s, (names, rs, cmps) in per_seed.items():
        text += [f"## Seed {s}", "", wordassoc_tables(rs, names)]
        transfer = transfer_table(rs, names, cmps)
        if transfer:
            text += [transfer]
    return "\n".join(text)


def _uniform_like(r: dict) -> dict:
    """``r`` with every transfer answer replaced by the uniform distribution over its options: the
    answer that needs no model, and the end point of an answer distribution that only flattens."""
    t = r["transfer"]
    preds = [dict(p, probs=[1.0 / len(p["probs"])] * len(p["probs"]), mass=None) for p in t["result"]["predictions"]]
    return {"transfer": {**t, "result": {**t["result"], "predictions": preds}}}


def _label_mass(r: dict, country: str) -> float | None:
    """Mean next-token probability mass on the option labels of ``country``'s transfer answers."""
    import numpy as np

    m = [p["mass"] for p in r["transfer"]["result"].get("predictions", [])
         if p.get("group") == country and isinstance(p.get("mass"), (int, float))]
    return float(np.mean(m)) if m else None


def _pooled_transfer(results: dict, per_seed: dict) -> list[str]:
    """The WVS transfer over seeds (``per_seed``: seed -> (names, results, comparisons) of
    :func:`pooled_markdown`): each country's JSD (all items, high-tension items) and label mass,
    vanilla → each trained model (mean over seeds [range]), each seed's high-tension moves toward the
    target culture with its sign test, and the seeds' counts added up; and, as the control, the same
    change from vanilla to the uniform answer (what flattening alone does)."""
    import numpy as np

    from pluralign.wordassoc.report import markdown_table, transfer_comparisons
    from pluralign.wordassoc.stats import sign_test

    vanilla = results["vanilla"]
    per: dict = {}  # model -> [(seed, comparison, result)]
    for s, (names, rs, cmps) in per_seed.items():
        for m, r, cmp in zip(names[1:], rs[1:], cmps or []):
            per.setdefault(m, []).append((s, cmp, r))
    if not per:
        return []
    uniform = transfer_comparisons([vanilla, _uniform_like(vanilla)])[0]

    def span(before: float | None, after: list) -> str:
        after = [a for a in after if a is not None]
        if before is None or not after:
            return "–"
        rng = f" [{min(after):.3f}, {max(after):.3f}]" if len(after) > 1 else ""
        return f"{before:.3f} → {np.mean(after):.3f}{rng}"

    rows = []
    for m, got in [*per.items(), ("uniform (no model)", [("–", uniform, None)])]:
        first = got[0][1]
        target = first["target"]
        for c in first["countries"]:
            cells = [f"vanilla → {m}", c, len(got) if got[0][2] is not None else "–"]
            for subset in ("all", "high_tension"):
                cells.append(span(first["table"][subset][c]["before"]["jsd"],
                                  [cmp["table"][subset][c]["after"]["jsd"] for _, cmp, _ in got]))
            cells.append(span(_label_mass(vanilla, c), [_label_mass(r, c) for _, _, r in got if r is not None]))
            tests = [(s, cmp["moves_high_tension"][c][f"sign_test_target_{target}"]) for s, cmp, _ in got]
            cells.append("; ".join((f"s{s}: " if s != "–" else "") + f"{t['toward']} vs {t['away']} (p = {t['p_two_sided']:.2g})"
                                   for s, t in tests))
            tot = sign_test(sum(t["toward"] for _, t in tests), sum(t["away"] for _, t in tests))
            cells.append(f"{tot['toward']} vs {tot['away']} (p = {tot['p_two_sided']:.2g})" if len(tests) > 1 else "–")
            rows.append(cells)
    n_items, n_tension = uniform["n_items"], uniform["n_tension"]
    head = ["change", "country", "seeds", f"JSD, all {n_items} items", f"JSD, {n_tension} high-tension items", "label mass",
            f"high-tension answers toward {target} vs away, per seed", "seeds added up"]
    return ["## Value transfer (WVS answers, persona), over seeds", "", markdown_table(head, rows), "",
            f"JSD: vanilla → mean over seeds [lowest, highest seed]. Label mass: the next-token probability on the option labels "
            f"(mean over items). Toward {target}: the margin JSD(pred, other country) − JSD(pred, {target}) grew on that item "
            "(unchanged answers dropped); p: two-sided exact sign test. The seeds share the same items, so the added-up test "
            "treats repeated items as independent and is optimistic. The uniform row is the control: every answer replaced "
            "by the uniform distribution, the end point of answers that only flatten.", ""]


def parse_seeds(s: str | Sequence[int]) -> tuple[int, ...]:
    if not isinstance(s, str):
        return tuple(int(x) for x in s)
    parts = [x.strip() for x in s.split(",") if x.strip()]
    if not parts:
        raise PluralignError("names no seed", field="--seeds")
    try:
        seeds = tuple(int(x) for x in parts)
    except ValueError:
        raise PluralignError(f"seeds must be whole numbers, got {s!r}", field="--seeds") from None
    if len(set(seeds)) != len(seeds) or any(x < 0 for x in seeds):
        raise PluralignError(f"seeds must be distinct and >= 0, got {s!r}", field="--seeds")
    return seeds


__all__ = ["MODELS", "Step", "StudyConfig", "load_results", "parse_seeds", "plan", "pooled_markdown", "run", "subprocess_runner"]
