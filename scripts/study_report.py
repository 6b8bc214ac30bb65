"""Tables, intervals and plots of the study (``scripts/study.py``) → ``docs/results/study.md``.

    python scripts/study_report.py configs/study/beat-the-mean.json [--out docs/results/study.md]

Reads every finished job's evaluation (``RUN/eval/eval-*.json``) and training log. Per-row EMD is
recomputed from the stored predictions, so paired differences (CuMA − LoRA, CuMA − train_mean,
CuMA − cultural-map reference) are taken on the same (country, item) rows; their intervals are a
two-way bootstrap (countries and items resampled with replacement, 2,000 draws, seed 0) of the
mean difference, after averaging each row over the seeds. Nothing here picks a best seed: every
number is a mean over all seeds of a configuration (± the sd across seeds).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from study import expand  # noqa: E402

REFS = ("uniform", "train_mean", "culture_map_knn")


def load_job(job: dict, items: dict):
    from pluralign.evaluation.metrics import emd, entropy

    ev = job["out"] / "eval"
    files = [f for f in ev.glob("eval-*.json")] if ev.exists() else []
    if not (ev / "summary.json").exists() or not files:
        return None
    res = json.loads(files[0].read_text())
    rows, answers = {}, []
    for p in res.get("predictions", []):
        if "human" in p:  # group data: one row per (country, item)
            rows[(p["group"], p["item_id"])] = emd(np.asarray(p["probs"]), np.asarray(p["human"]), items[p["item_id"]].ordinal)
        else:  # individual data: one row per answer
            answers.append(p)
    m = res["metrics"]
    pred_ent = float(np.mean([entropy(np.asarray(p["probs"])) for p in res["predictions"]]))
    log = []
    lf = job["out"] / "log.jsonl"
    if lf.exists():
        log = [json.loads(x) for x in lf.read_text().splitlines() if x.strip()]
    summ = {}
    sf = job["out"] / "train_summary.json"
    if sf.exists():
        summ = json.loads(sf.read_text())
    return {
        "job": job, "res": res, "rows": rows, "emd": m["emd"], "jsd": m.get("jsd"), "entropy": pred_ent,
        "human_entropy": m.get("human_entropy"), "mass": m.get("option_mass"),
        "refs": {r: res["references"][r]["metrics"].get("emd") for r in REFS if r in res.get("references", {})},
        "log": log, "summary": summ, "answers": answers,
    }


def bootstrap_diff(a: dict, b: dict, n: int = 2000, seed: int = 0):
    """Mean of a - b over shared rows and its 95 % two-way (group x item) bootstrap interval."""
    keys = sorted(set(a) & set(b))
    if not keys:
        return None
    groups = sorted({k[0] for k in keys})
    qs = sorted({k[1] for k in keys})
    gi, qi = {g: i for i, g in enumerate(groups)}, {q: i for i, q in enumerate(qs)}
    D = np.full((len(groups), len(qs)), np.nan)
    for k in keys:
        D[gi[k[0]], qi[k[1]]] = a[k] - b[k]
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n):
        g = rng.integers(0, len(groups), len(groups))
        q = rng.integers(0, len(qs), len(qs))
        stats.append(np.nanmean(D[np.ix_(g, q)]))
    return float(np.nanmean(D)), float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))


def _row_nll(p):
    return -float(np.log(max(float(p["probs"][p["answer"]]), 1e-12)))


def _row_acc(p):
    from pluralign.evaluation.metrics import mode_credit

    return float(mode_credit(np.asarray(p["probs"]), p["answer"]))


_REF_CACHE: dict = {}


def _probe_ref(r):
    """train_mean's prediction rows for an individual-data run: the training respondents' answer
    shares per item, on the run's own split (rebuilt from its train_config.json, as eval does)."""
    from pluralign.evaluation.runner import reference_predictions
    from pluralign.training.config import TrainConfig
    from pluralign.training.run import load_split

    tc = json.loads((r["job"]["out"] / "train_config.json").read_text())
    key = json.dumps({k: tc.get(k) for k in ("data", "split", "test_frac", "test_units", "countries", "questions", "seed", "enrich_profile")})
    if key not in _REF_CACHE:
        _, sp = load_split(TrainConfig.from_dict(tc))
        ps = reference_predictions(sp.test, sp.train)["train_mean"]
        _REF_CACHE[key] = [{"item_id": e.item_id, "answer": e.answer, "respondent_id": e.respondent_id,
                            "group": e.group, "probs": list(p)} for e, p in zip(sp.test.examples, ps)]
    return _REF_CACHE[key]


def _nll(preds):
    preds = [p for p in preds if "answer" in p]
    return float(np.mean([_row_nll(p) for p in preds])) if preds else None


def _paired_rows(pairs, f, n: int = 2000, seed: int = 0):
    """Mean of f(a) - f(b) over aligned answer rows of several seeds, with a 95 % bootstrap over
    respondents (the rows of one respondent resampled together; keyed by seed and group+profile)."""
    by = defaultdict(list)
    for s_, (a, b) in enumerate(pairs):
        if len(a) != len(b):
            return None
        for x, y in zip(a, b):
            if x["item_id"] != y["item_id"] or x.get("answer") != y.get("answer"):
                return None
            by[(s_, x.get("respondent_id", x["group"]))].append(f(x) - f(y))
    units = list(by.values())
    if not units:
        return None
    sums = np.array([sum(u) for u in units])
    cnt = np.array([len(u) for u in units])
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n):
        i = rng.integers(0, len(units), len(units))
        stats.append(sums[i].sum() / cnt[i].sum())
    return float(sums.sum() / cnt.sum()), float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5)), int(cnt.sum())


def fmt(x, d=4):
    return "—" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{d}f}"


def ms(vals, d=4):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "—"
    if len(vals) == 1:
        return f"{vals[0]:.{d}f}"
    return f"{np.mean(vals):.{d}f} ± {np.std(vals, ddof=1):.{d}f}"


def reference_rows(cfg, st, questions=None):
    """Per-row EMD of train_mean and culture_map_knn for held-out set ``st`` (model-free, exact)."""
    from pluralign.data import load_dataset, split_dataset
    from pluralign.evaluation.metrics import emd
    from pluralign.evaluation.runner import reference_predictions

    sel = cfg.get("selection", {})
    ds = load_dataset(sel.get("data", "wvs-shares")).filter(questions=questions or sel.get("questions") or None)
    sp = split_dataset(ds, "country", test_frac=0.2, seed=0, test_units=cfg["sets"][st])
    refs = reference_predictions(sp.test, sp.train)
    out = {}
    for name, ps in refs.items():
        out[name] = {(e.group, e.item_id): emd(p, np.asarray(e.probs), ds.items[e.item_id].ordinal)
                     for e, p in zip(sp.test.examples, ps) if p is not None}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("config")
    ap.add_argument("--out", default=str(REPO / "docs" / "results" / "study.md"))
    args = ap.parse_args()
    cfg = json.loads(Path(args.config).read_text())
    from pluralign.data import load_dataset

    items = load_dataset(cfg.get("selection", {}).get("data", "wvs-shares")).items
    for j in cfg["jobs"]:  # other datasets of the study (the respondent probe)
        d = (j.get("selection") or {}).get("data")
        if d and d != cfg.get("selection", {}).get("data", "wvs-shares"):
            items = {**load_dataset(d).items, **items}
    jobs = expand(cfg)
    done = {}
    for j in jobs:
        r = load_job(j, items)
        if r is not None:
            done[j["name"]] = r
    by = defaultdict(list)  # (group, set) -> results over seeds
    for r in done.values():
        by[(r["job"]["group"], r["job"]["set"])].append(r)
    jobq = {j["name"]: (j.get("selection") or {}).get("questions") for j in cfg["jobs"]}
    L = []
    L.append("# Study: does alignment beat the mean? (SmolLM2-135M, CPU)\n")
    L.append(f"Made by `python scripts/study.py {args.config}` (resumable; this page by `scripts/study_report.py`). "
             f"{cfg.get('description', '')}\n")
    c = cfg.get("common", {})
    L.append(f"Training (every run): batch {c.get('batch_size')}, AdamW lr {c.get('lr')} (warm-up {c.get('warmup_ratio')}, "
             f"cosine), adapters on the top {c.get('top_layers')} decoder layers with the cached trunk, soft-label loss "
             f"normalised over the {'options' if c.get('soft_label_norm') == 'options' else 'vocabulary'}, profile "
             f"enrichment {'on' if c.get('enrich_profile') else 'off'} unless a row says otherwise. Recipes: "
             + "; ".join(f"**{k}**: {v}" for k, v in cfg.get("recipes", {}).items())
             + ". EMD is the ordinal Earth Mover's distance on [0, 1] (lower is better); entropy is normalised to "
             f"[0, 1]. Jobs finished: {len(done)} of {len(jobs)}.\n")
    L.append("Held-out sets (zero-shot countries): " + "; ".join(f"**{k}** {', '.join(v)}" for k, v in cfg["sets"].items())
             + ". `val` (countries never in A, B or C) is the only set looked at while choosing a recipe (the pilot rows); "
             "A, B and C were each run once per seed, and every seed that finished is reported.\n")
    sets = [s_ for s_ in cfg["sets"] if s_ != "val"]
    recipes = [("v1", "cuma", "lora"), ("v2", "cuma-v2", "lora-v2")]
    verdict, pooled_all = {}, {}

    def seed_mean_rows(g, st):
        rs = by.get((g, st), [])
        if not rs:
            return {}
        keys = set.intersection(*[set(r["rows"]) for r in rs])
        return {k: float(np.mean([r["rows"][k] for r in rs])) for k in keys}

    L.append("## 1. Zero-shot countries: CuMA vs LoRA vs the model-free references\n")
    L.append("| recipe | set | method | seeds | EMD (mean ± sd) | pred. entropy | human entropy | uniform | train_mean | culture_map_knn (k=3) |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for rec, gc, gl in [("pilot", "pilot-cuma-all", "pilot-lora-all")] + recipes:
        for st in (["val"] if rec == "pilot" else sets):
            for g in (gc, gl):
                rs = by.get((g, st), [])
                if not rs:
                    continue
                refs = rs[0]["refs"]
                L.append(f"| {rec} | {st} | {g} | {len(rs)} | {ms([r['emd'] for r in rs])} | {ms([r['entropy'] for r in rs], 3)} | "
                         f"{fmt(rs[0]['human_entropy'], 3)} | {fmt(refs.get('uniform'))} | {fmt(refs.get('train_mean'))} | "
                         f"{fmt(refs.get('culture_map_knn'))} |")
                verdict[(g, st)] = (np.mean([r["emd"] for r in rs]), refs)
    L.append("")
    L.append("## 2. Paired differences (EMD, negative = the first is better), 95 % two-way bootstrap over countries and items\n")
    L.append("Each row's EMD is first averaged over the seeds that finished for that configuration.\n")
    L.append("| recipe | set | CuMA − LoRA | CuMA − train_mean | CuMA − culture_map_knn | LoRA − train_mean |")
    L.append("|---|---|---|---|---|---|")
    for rec, gc, gl in recipes:
        pooled = defaultdict(dict)
        for st in sets:
            cu, lo = seed_mean_rows(gc, st), seed_mean_rows(gl, st)
            if not cu:
                continue
            rr = reference_rows(cfg, st, jobq.get(gc))
            tm, kn = rr.get("train_mean", {}), rr.get("culture_map_knn", {})
            cells = []
            for a, b in ((cu, lo), (cu, tm), (cu, kn), (lo, tm)):
                d = bootstrap_diff(a, b) if a and b else None
                cells.append("—" if d is None else f"{d[0]:+.4f} [{d[1]:+.4f}, {d[2]:+.4f}]")
            L.append(f"| {rec} | {st} | " + " | ".join(cells) + " |")
            for name, rows in (("cuma", cu), ("lora", lo), ("train_mean", tm), ("knn", kn)):
                pooled[name].update({(st,) + k: v for k, v in rows.items()})
        if pooled.get("cuma"):
            cells = []
            for a, b in (("cuma", "lora"), ("cuma", "train_mean"), ("cuma", "knn"), ("lora", "train_mean")):
                d = bootstrap_diff({k[1:]: v for k, v in pooled[a].items()}, {k[1:]: v for k, v in pooled[b].items()}) if pooled.get(b) else None
                cells.append("—" if d is None else f"{d[0]:+.4f} [{d[1]:+.4f}, {d[2]:+.4f}]")
            L.append(f"| {rec} | all sets | " + " | ".join(cells) + " |")
        pooled_all[rec] = pooled
    L.append("")

    # ------------------------------------------------------------------ set A: methods and ablations
    L.append("## 3. Set A, seed 0: baselines and ablations\n")
    L.append("| job | what | EMD | JSD | pred. entropy | option mass | train_mean | culture_map_knn |")
    L.append("|---|---|---|---|---|---|---|---|")
    what = {j["name"]: j for j in cfg["jobs"]}
    for jname, j in what.items():
        if j.get("set") != "A" and "A" not in j.get("sets", []):
            continue
        r = done.get(f"{jname}-A-s0")
        if r is None:
            continue
        desc = json.dumps(j.get("train", j.get("eval", {})))
        L.append(f"| {jname} | `{desc}` | {fmt(r['emd'])} | {fmt(r['jsd'])} | {fmt(r['entropy'], 3)} | {fmt(r['mass'], 3)} | "
                 f"{fmt(r['refs'].get('train_mean'))} | {fmt(r['refs'].get('culture_map_knn'))} |")
    L.append("")

    # ------------------------------------------------------------------ question split
    L.append("## 4. Seen countries, unseen questions (split by question, seed 0)\n")
    L.append("| job | EMD | pred. entropy | human entropy | uniform | train_mean |")
    L.append("|---|---|---|---|---|---|")
    for jname in [j["name"] for j in cfg["jobs"] if j["name"].startswith("qsplit-")]:
        r = done.get(f"{jname}-s0")
        if r:
            L.append(f"| {jname} | {fmt(r['emd'])} | {fmt(r['entropy'], 3)} | {fmt(r['human_entropy'], 3)} | "
                     f"{fmt(r['refs'].get('uniform'))} | {fmt(r['refs'].get('train_mean'))} |")
    L.append("\n`train_mean` here is the mean over countries of *other* questions' answers, which does not exist for an unseen "
             "question: the runner reports it only where the item was trained on, so on this split it is absent (—).\n")

    # ------------------------------------------------------------------ respondent probe
    probe = sorted({r["job"]["group"] for r in done.values() if r["answers"]})
    if probe:
        L.append("## 5. Individual respondents (wvs-probe, split by respondent)\n")
        L.append("Each respondent's own answer, with the respondent's profile (country, sex, age band, education, ...) in the "
                 "prompt and, for CuMA, in the router. Accuracy: the predicted mode is the respondent's answer (tie-aware); "
                 "NLL: negative log-probability of the respondent's answer (nats); EMD: per (country, item) cell, the mean "
                 "prediction vs the held-out respondents' answers. References are model-free: `uniform`, and `train_mean`, the "
                 "country-equal mean of the training countries' answer shares of the same item (each country counts once, "
                 "whatever its number of respondents). Every reference value is the mean over the same seeds as the job's "
                 "(each seed draws its own respondent split).\n")
        L.append("| job | seeds | accuracy | macro-F1 | NLL | EMD (cells) | uniform acc. | train_mean acc. | train_mean NLL | train_mean EMD |")
        L.append("|---|---|---|---|---|---|---|---|---|---|")
        for g in probe:
            rs = [r for r in done.values() if r["job"]["group"] == g]
            def refm(name, metric):  # a reference's metric over the same seeds as the job's rows
                return [r["res"].get("references", {}).get(name, {}).get("metrics", {}).get(metric) for r in rs]

            L.append(f"| {g} | {len(rs)} | {ms([r['res']['metrics'].get('accuracy') for r in rs], 3)} | "
                     f"{ms([r['res']['metrics'].get('macro_f1') for r in rs], 3)} | {ms([_nll(r['answers']) for r in rs], 3)} | "
                     f"{ms([r['emd'] for r in rs])} | {ms(refm('uniform', 'accuracy'), 3)} | "
                     f"{ms(refm('train_mean', 'accuracy'), 3)} | "
                     f"{ms([_nll(_probe_ref(r)) for r in rs], 3)} | "
                     f"{ms(refm('train_mean', 'emd'))} |")
        cu = {r["job"]["seed"]: r for r in done.values() if r["job"]["group"] == "probe-cuma-v2"}
        lo = {r["job"]["seed"]: r for r in done.values() if r["job"]["group"] == "probe-lora-v2"}
        pairs = sorted(set(cu) & set(lo))
        if pairs:
            L.append("")
            L.append("Paired per answer (same split and seed), 95 % bootstrap over respondents, seeds pooled:\n")
            for label, f in (("NLL", _row_nll), ("accuracy", _row_acc)):
                d = _paired_rows([(cu[s_]["answers"], lo[s_]["answers"]) for s_ in pairs], f)
                if d:
                    L.append(f"- CuMA − LoRA, {label}: {d[0]:+.4f} [{d[1]:+.4f}, {d[2]:+.4f}] over {d[3]} answers ({len(pairs)} seed(s)).")
            for name, runs in (("CuMA", cu), ("LoRA", lo)):
                d = _paired_rows([(runs[s_]["answers"], _probe_ref(runs[s_])) for s_ in pairs], _row_nll)
                if d:
                    L.append(f"- {name} − train_mean, NLL: {d[0]:+.4f} [{d[1]:+.4f}, {d[2]:+.4f}].")
        L.append("")

    # ------------------------------------------------------------------ reading (computed)
    L.append("## Reading (computed from the tables above)\n")
    for rec, gc, gl in recipes:
        for g in (gc, gl):
            got = [(st, verdict[(g, st)]) for st in sets if (g, st) in verdict]
            if not got:
                continue
            nseeds = sorted({len(by[(g, st)]) for st in sets if by.get((g, st))})
            beat_mean = sum(v[0] < v[1].get("train_mean", np.inf) for _, v in got)
            beat_knn = sum(v[0] < v[1].get("culture_map_knn", np.inf) for _, v in got)
            L.append(f"- **{g}** (recipe {rec}, {'/'.join(map(str, nseeds))} seed(s) per set): mean EMD below `train_mean` on "
                     f"{beat_mean} of {len(got)} held-out sets, below the cultural-map reference on {beat_knn} of {len(got)}.")
        pooled = pooled_all.get(rec, {})
        if pooled.get("cuma") and pooled.get("lora"):
            strip = lambda d: {k[1:]: v for k, v in d.items()}  # noqa: E731
            for a_, b_, label in (("cuma", "lora", "CuMA − LoRA"), ("cuma", "train_mean", "CuMA − train_mean")):
                d = bootstrap_diff(strip(pooled[a_]), strip(pooled[b_]))
                if d is None:
                    continue
                L.append(f"- {label} (recipe {rec}, all held-out countries): {d[0]:+.4f} [{d[1]:+.4f}, {d[2]:+.4f}]: "
                         + ("the first is better by more than the interval." if d[2] < 0 else
                            "the second is better by more than the interval." if d[1] > 0 else "the difference is within the interval."))
        ents = [(g, st, np.mean([r["entropy"] for r in by[(g, st)]]), by[(g, st)][0]["human_entropy"]) for g in (gc, gl)
                for st in sets if by.get((g, st))]
        if ents:
            L.append(f"- Entropy of the predictions vs the human answers' (normalised, recipe {rec}): "
                     + "; ".join(f"{g} {st} {e:.3f} vs {h:.3f}" for g, st, e, h in ents) + ".")
    L.append("")
    if cfg.get("notes"):
        L.append("## Reading (written after the runs; the numbers are the tables')\n")
        L += [n + "\n" for n in cfg["notes"]]
    not_run = [j["name"] for j in jobs if j["name"] not in done]
    if not_run:
        L.append(f"**Not run yet ({len(not_run)} jobs; the next `python scripts/study.py` call continues with them):** "
                 + ", ".join(f"`{n}`" for n in not_run) + ".\n")
    L.append("![EMD by method](study_emd.png)\n\n![training loss](study_loss.png)\n")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(L) + "\n")
    plots(done, by, sets, out.parent)
    print(f"wrote {out} ({len(done)} jobs)")


def plots(done, by, sets, folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    x = np.arange(len(sets))
    w = 0.16
    for ax, (rec, gc, gl) in zip(axes, (("v1", "cuma", "lora"), ("v2", "cuma-v2", "lora-v2"))):
        for i, (g, lab) in enumerate(((gc, "CuMA"), (gl, "LoRA"))):
            m = [np.mean([r["emd"] for r in by[(g, st)]]) if by.get((g, st)) else np.nan for st in sets]
            sd = [np.std([r["emd"] for r in by[(g, st)]]) if by.get((g, st)) else 0 for st in sets]
            ax.bar(x + (i - 2) * w, m, w, yerr=sd, label=f"{lab} (mean ± sd over seeds)")
        for i, (ref, lab) in enumerate((("train_mean", "training-countries mean"), ("culture_map_knn", "cultural-map 3-NN"),
                                        ("uniform", "uniform"))):
            v = [next((by[(g, st)][0]["refs"].get(ref, np.nan) for g in (gc, gl) if by.get((g, st))), np.nan) for st in sets]
            ax.bar(x + i * w, v, w, label=lab, alpha=0.6)
        ax.set_xticks(x, [f"set {s_}" for s_ in sets])
        ax.set_title(f"recipe {rec}")
    axes[0].set_ylabel("EMD on held-out countries (lower is better)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "study_emd.png", dpi=120)
    plt.close(fig)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.2))
    for r in done.values():
        lg = [x for x in r["log"] if "ce" in x and "step" in x]
        if lg and r["job"]["group"] in ("cuma", "lora", "cuma-v2", "lora-v2", "pilot-cuma-all", "pilot-lora-all"):
            ax.plot([x["step"] for x in lg], [x["ce"] for x in lg], lw=0.8,
                    color=("C0" if "cuma" in r["job"]["group"] else "C1"), ls="-" if "v2" in r["job"]["group"] or "pilot" in r["job"]["group"] else ":", alpha=0.7)
    ax.plot([], [], color="C0", label="CuMA (dotted: v1, solid: v2 / pilot)")
    ax.plot([], [], color="C1", label="LoRA")
    ax.set_xlabel("step")
    ax.set_ylabel("soft-label cross-entropy (training batches)")
    ax.set_title("main runs, every set and seed")
    ax.legend()
    # set A, seed 0, recipe v2: the mixtures and ablations beside CuMA and LoRA
    for i, r in enumerate(sorted((r for r in done.values() if r["job"]["set"] == "A" and r["job"]["seed"] == 0
                                  and "v2" in r["job"]["group"]), key=lambda r: r["job"]["group"])):
        lg = [x for x in r["log"] if "ce" in x and "step" in x]
        if lg:
            ax2.plot([x["step"] for x in lg], [x["ce"] for x in lg], lw=0.9, label=r["job"]["group"], color=f"C{i % 10}",
                     ls="-" if i < 10 else "--")
    ax2.set_xlabel("step")
    ax2.set_title("set A, seed 0, recipe v2: mixtures and ablations")
    ax2.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(folder / "study_loss.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
