"""Tables and plots of the three-cell study (configs/study/three-cells.json; issue 26), and of
any study whose jobs evaluate on one-way country or question splits (configs/study/map-free.json:
their test part is reported as the cell it is).

    python scripts/cells_report.py configs/study/three-cells.json [--out docs/results/cells]

Reads every finished job of the study (``ROOT/JOB/eval/eval-*@CELL.json``) and writes, per cell
(unseen questions x training countries, training questions x unseen countries, unseen x unseen):

1. EMD, accuracy and option mass of every model row, mean over seeds with every seed listed, beside
   the model-free references, each averaged over the SAME seeds (a reference's value is computed on
   each seed's own split and settings chosen on that seed's validation rows);
2. the paired difference model - reference: the two-way (countries x questions) bootstrap interval
   of the eval, and an interval over countries that counts seeds (per country the mean difference
   over seeds, then a t interval over countries, df = countries - 1) with an exact sign-flip
   permutation p-value over countries;
3. the per-country differences;
4. the agreement of the sampled and renormalised read-outs (EMD between them) and the option mass.

The map references are reported twice: with the coordinates the eval used (``map_before`` of the
config, e.g. waves before 2017 for WVS-7 data) and with the latest coordinates (which come from the
evaluation data's own wave: a leaked, stronger bar), recomputed here from the run's split.
Writes ``OUT/report.md``, ``OUT/cells.json`` and ``OUT/cells.png``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

TEST_CELLS = ("unseen_questions", "unseen_countries", "unseen_both")
CELL_TITLE = {"unseen_questions": "unseen questions x training countries", "unseen_countries": "training questions x unseen countries",
              "unseen_both": "unseen questions x unseen countries"}
# `pluralign eval --part validation`: the validation cells, where training settings are chosen (the references
# there are tuned on the rows they are scored on: only the model rows compare fairly)
for _c in TEST_CELLS:
    CELL_TITLE[f"validation/{_c}"] = "VALIDATION " + CELL_TITLE[_c] + " (references tuned on these rows)"
CELLS = TEST_CELLS + tuple(f"validation/{c}" for c in TEST_CELLS)


def _load(root: Path) -> list[dict]:
    out = []
    for f in sorted(root.glob("*/eval/eval-*.json")):
        r = json.loads(f.read_text())
        if not r.get("cell"):  # a one-way split: its test part is one of the cells
            r["cell"] = {"country": "unseen_countries", "question": "unseen_questions"}.get((r.get("split") or {}).get("by"))
            if r["cell"] is None:
                continue
        job = f.parents[1].name
        ro = (r.get("readout") or {}).get("name", "logprob")
        group = job.rsplit("-s", 1)[0]
        seed = int(job.rsplit("-s", 1)[1]) if "-s" in job else 0
        hset = group.rsplit("-", 1)[1] if "-" in group else ""
        label = group.split("-")[0] + ("" if not r.get("adapter") else "") + f"+{r['method']}" + ("" if ro == "logprob" else f" ({ro})")
        if not r.get("adapter"):
            label = f"base+{r['method']}"
        out.append({"file": f, "job": job, "group": group, "seed": seed, "label": label, "cell": r["cell"], "res": r, "readout": ro,
                    "set": hset})
    return out


def _t_interval(x: np.ndarray, level: float = 0.95):
    from scipy import stats

    n = len(x)
    if n < 2:
        return float(np.mean(x)), None, None
    m, se = float(np.mean(x)), float(np.std(x, ddof=1) / math.sqrt(n))
    h = float(stats.t.ppf(0.5 + level / 2, n - 1)) * se
    return m, m - h, m + h


def _sign_flip_p(x: np.ndarray) -> float:
    """Exact two-sided sign-flip permutation p-value of mean(x) != 0 over units (<= 2^16 flips)."""
    n = len(x)
    if n == 0:
        return float("nan")
    obs = abs(float(np.mean(x)))
    if n > 16:
        rng = np.random.default_rng(0)
        flips = rng.choice([-1.0, 1.0], size=(20000, n))
    else:
        flips = np.array(list(itertools.product([-1.0, 1.0], repeat=n)))
    stats_ = np.abs((flips * x).mean(axis=1))
    return float(np.mean(stats_ >= obs - 1e-12))


def _latest_map_refs(res: dict) -> dict[str, dict]:
    """The map references with the latest (same-wave) coordinates on this result's cell, settings
    chosen on the same validation rows: {name: {"emd": .., "per_group": {g: emd}}}."""
    from pluralign.data import load_dataset, split_dataset
    from pluralign.evaluation.references import ReferenceSettings, reference_predictions, tune_references
    from pluralign.evaluation.runner import compute_metrics

    sp_info = res["split"]
    key = json.dumps([sp_info["data"], sp_info.get("test_units"), sp_info.get("test_questions"), sp_info.get("val_frac"),
                      sp_info.get("question_test_frac"), res["config"]["seed"], res["cell"]])
    if key in _CACHE:
        return _CACHE[key]
    ds = load_dataset(sp_info["data"])
    if sp_info.get("countries") or sp_info.get("questions"):
        ds = ds.filter(countries=sp_info.get("countries") or None, questions=sp_info.get("questions") or None)
    two_way = sp_info.get("by") == "country,question"
    sp = split_dataset(ds, sp_info.get("by"), test_frac=sp_info.get("test_frac", 0.2), seed=res["config"]["seed"],
                       test_units=sp_info.get("test_units") or None, val_frac=sp_info.get("val_frac") or 0.0,
                       test_questions=(sp_info.get("test_questions") or None) if two_way else None,
                       question_test_frac=sp_info.get("question_test_frac") if two_way else None)
    val = sp.val_cells() or ({"all": sp.val} if sp.val is not None else {"loo": sp.train})
    s = tune_references(sp.train, val, ReferenceSettings(text_encoder="tfidf", map_before=None))
    part = sp.test_cells()[res["cell"]] if two_way else sp.test
    out = {}
    for name, preds in reference_predictions(part, sp.train, s).items():
        if name.startswith("culture_map"):
            m, g = compute_metrics(part, preds)
            out[name + " (latest wave)"] = {"emd": m["emd"], "accuracy": m["accuracy"], "per_group": {k: v["emd"] for k, v in g.items()},
                                            "setting": s.map_k if name.endswith("knn") else s.map_bandwidth}
    _CACHE[key] = out
    return out


_CACHE: dict = {}


def build(root: Path) -> dict:
    rows = _load(root)
    if not rows:
        return {}
    report: dict = {"cells": {}}
    sets = sorted({r["set"] for r in rows})
    for st, cell in [(st, c) for st in sets for c in CELLS]:
        rs = [r for r in rows if r["cell"] == cell and r["set"] == st]
        if not rs:
            continue
        models: dict[str, dict[int, dict]] = defaultdict(dict)
        refs: dict[str, dict[int, dict]] = defaultdict(dict)
        for r in rs:
            res = r["res"]
            models[r["label"]][r["seed"]] = {"emd": res["metrics"]["emd"], "accuracy": res["metrics"]["accuracy"],
                                             "option_mass": res["metrics"].get("option_mass"),
                                             "per_group": {g: v["emd"] for g, v in res["per_group"].items()},
                                             "cells": res.get("cells")}
            if r["readout"] == "logprob":
                for name, ref in res["references"].items():
                    if not ref["metrics"].get("n"):  # e.g. train_mean on questions no training row answered
                        continue
                    refs[name].setdefault(r["seed"], {"emd": ref["metrics"]["emd"], "accuracy": ref["metrics"]["accuracy"],
                                                      "per_group": {g: v["emd"] for g, v in ref["per_group"].items()},
                                                      "cells": ref.get("cells"), "settings": res.get("reference_settings")})
                if cell == "unseen_countries":
                    for name, v in _latest_map_refs(res).items():
                        refs[name].setdefault(r["seed"], v)
        seeds_all = sorted({s for m in models.values() for s in m})
        # references averaged over exactly the seeds the models have
        table = []
        for name, by_seed in list(models.items()) + [(f"ref:{k}", v) for k, v in refs.items()]:
            ss = [s for s in seeds_all if s in by_seed]
            emds = [by_seed[s]["emd"] for s in ss]
            table.append({"row": name, "seeds": ss, "emd": float(np.mean(emds)), "emd_per_seed": emds,
                          "accuracy": float(np.mean([by_seed[s]["accuracy"] for s in ss])),
                          "option_mass": (float(np.mean([by_seed[s]["option_mass"] for s in ss]))
                                          if not name.startswith("ref:") and all(by_seed[s].get("option_mass") is not None for s in ss) else None)})
        # paired differences model - reference, over countries (seed means per country)
        diffs = []
        per_country = {}
        logprob_models = [m for m in models if "(sampled)" not in m]
        for mname, mby in models.items():
            if "(sampled)" in mname:
                continue
            def _second(o):  # each model pair once, a trained model minus the base model
                if o == mname:
                    return False
                if o.startswith("base") != mname.startswith("base"):
                    return o.startswith("base")
                return o > mname

            others = {o: models[o] for o in logprob_models if _second(o)}
            for rname, rby in list(refs.items()) + list(others.items()):
                ss = [s for s in seeds_all if s in mby and s in rby]
                if not ss:
                    continue
                groups = sorted(set.intersection(*[set(mby[s]["per_group"]) & set(rby[s]["per_group"]) for s in ss]))
                d = np.array([np.mean([mby[s]["per_group"][g] - rby[s]["per_group"][g] for s in ss]) for g in groups])
                mean, lo, hi = _t_interval(d)
                boot = _boot(mby, rby, ss)
                diffs.append({"model": mname, "reference": rname, "seeds": ss, "countries": len(groups), "diff": mean, "t_lo": lo,
                              "t_hi": hi, "perm_p": _sign_flip_p(d), "boot": boot})
                per_country[f"{mname} - {rname}"] = dict(zip(groups, map(float, d)))
        report["cells"][f"{st}/{cell}"] = {"set": st, "cell": cell, "table": table, "differences": diffs, "per_country": per_country}
    # pooled over the held-out sets (their countries are disjoint): per-country differences of every set together
    if len(sets) > 1:
        pooled = {}
        for key, c in report["cells"].items():
            for pair, d in c["per_country"].items():
                pooled.setdefault((c["cell"], pair), {}).update(d)
        report["pooled"] = []
        for (cell, pair), d in sorted(pooled.items()):
            x = np.array(list(d.values()))
            m, lo, hi = _t_interval(x)
            report["pooled"].append({"cell": cell, "pair": pair, "countries": len(x), "diff": m, "t_lo": lo, "t_hi": hi,
                                     "perm_p": _sign_flip_p(x)})
    # read-out agreement: per job, method and cell scored with both read-outs (from the result files)
    from pluralign.evaluation.report import readout_agreement

    agree = []
    for job in sorted({r["job"] for r in rows}):
        res = [r["res"] for r in rows if r["job"] == job]
        for a in readout_agreement(res):
            lp = next(r for r in res if r.get("method") == a["method"] and r.get("cell") == a["cell"]
                      and (r.get("readout") or {}).get("name", "logprob") == "logprob")
            sm = next(r for r in res if r.get("method") == a["method"] and r.get("cell") == a["cell"]
                      and (r.get("readout") or {}).get("name") == "sampled")
            agree.append({"job": job, **a, "noise_floor": _sampling_floor(lp, sm),
                          "invalid_frac": (sm.get("readout") or {}).get("invalid_frac"),
                          "samples": (sm.get("readout") or {}).get("samples")})
    report["readout_agreement"] = agree
    report["reference_settings"] = {r["job"]: r["res"].get("reference_settings") for r in rows if r["readout"] == "logprob"}
    return report


def _sampling_floor(lp: dict, sm: dict, draws: int = 50) -> float:
    """The EMD between the renormalised distribution p and a histogram of N answers drawn from p
    itself (N: the sampled read-out's samples per prompt), averaged over the rows both read-outs
    answered: what the sampled read-out's disagreement would be from sampling noise alone."""
    from pluralign.evaluation import metrics as M

    n = int((sm.get("readout") or {}).get("samples") or 1)
    rng = np.random.default_rng(0)
    vals = []
    for a, b in zip(lp.get("predictions") or [], sm.get("predictions") or []):
        if a["probs"] is None or b["probs"] is None:
            continue
        p = np.asarray(a["probs"], dtype=float)
        p = p / p.sum()
        vals.append(np.mean([M.emd(p, np.bincount(rng.choice(len(p), size=n, p=p), minlength=len(p)) / n, True)
                             for _ in range(draws)]))
    return float(np.mean(vals)) if vals else float("nan")


def _boot(mby, rby, ss):
    """The two-way bootstrap paired difference of the eval's own cells (seed 0's, or averaged)."""
    from pluralign.evaluation.bootstrap import CellTable, paired_difference

    if any(not mby[s].get("cells") or not rby[s].get("cells") for s in ss):
        return None
    mt = [CellTable.from_json(mby[s]["cells"]) for s in ss]
    rt = [CellTable.from_json(rby[s]["cells"]) for s in ss]
    same = all(t.group == mt[0].group and t.item == mt[0].item for t in mt + rt)
    if same and len(ss) > 1:
        # every seed scored the same cells: average each cell over the seeds, then one bootstrap
        # (countries x questions) of the seed-averaged difference, so seeds are not counted as data
        def avg(ts):
            vals = {m: np.nanmean([t.values[m] for t in ts], axis=0) for m in ts[0].values}
            return CellTable(list(ts[0].group), list(ts[0].item), vals, dict(ts[0].weights))

        mt, rt = [avg(mt)], [avg(rt)]
    vals = [paired_difference(a, b, ["emd"], n_boot=1000, seed=0).get("emd") for a, b in zip(mt, rt)]
    if len(vals) == 1 and vals[0]:
        return {"diff": vals[0]["diff"], "lo": vals[0]["lo"], "hi": vals[0]["hi"], "seed_averaged": len(ss) > 1}
    return {"diff": float(np.mean([v["diff"] for v in vals if v])), "per_seed": vals}


def _f(x, d=3):
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{d}f}"


def markdown(report: dict) -> str:
    lines = []
    for key, c in report.get("cells", {}).items():
        cell = c["cell"]
        lines += [f"### {'set ' + c['set'] + ': ' if c['set'] else ''}{CELL_TITLE[cell]} (`{cell}`)", "", "| row | EMD (mean over seeds) | EMD per seed | accuracy | option mass |", "|---|---|---|---|---|"]
        for t in sorted(c["table"], key=lambda t: t["emd"]):
            lines.append(f"| {t['row']} | {_f(t['emd'])} | {', '.join(_f(x) for x in t['emd_per_seed'])} (seeds {','.join(map(str, t['seeds']))}) "
                         f"| {_f(t['accuracy'])} | {_f(t['option_mass'])} |")
        lines += ["", "| model - reference | EMD diff | two-way bootstrap 95 % | t over countries 95 % | sign-flip p | countries |", "|---|---|---|---|---|---|"]
        for d in c["differences"]:
            b = d["boot"] or {}
            bs = f"[{_f(b.get('lo'))}, {_f(b.get('hi'))}]" if b.get("lo") is not None else "–"
            ts = f"[{_f(d['t_lo'])}, {_f(d['t_hi'])}]" if d["t_lo"] is not None else "–"
            lines.append(f"| {d['model']} - {d['reference']} | {_f(d['diff'])} | {bs} | {ts} | {_f(d['perm_p'], 3)} | {d['countries']} |")
        lines.append("")
        if cell == "unseen_countries" and c["per_country"]:
            keys = [k for k in c["per_country"] if "ref:" not in k]
            groups = sorted({g for v in c["per_country"].values() for g in v})
            lines += ["Per-country EMD differences (model - reference; negative = the model is closer to the humans):", "",
                      "| difference | " + " | ".join(groups) + " |", "|---|" + "---|" * len(groups)]
            for k in keys:
                lines.append(f"| {k} | " + " | ".join(_f(c["per_country"][k].get(g)) for g in groups) + " |")
            lines.append("")
    if report.get("pooled"):
        lines += ["### Pooled over the held-out sets (their countries are disjoint)", "",
                  "Per country the difference averaged over seeds; mean over all countries with a t interval and an exact "
                  "sign-flip p-value over countries:", "",
                  "| cell | model - reference | EMD diff | t over countries 95 % | sign-flip p | countries |", "|---|---|---|---|---|---|"]
        for d in report["pooled"]:
            ts = f"[{_f(d['t_lo'])}, {_f(d['t_hi'])}]" if d["t_lo"] is not None else "–"
            lines.append(f"| {d['cell']} | {d['pair']} | {_f(d['diff'])} | {ts} | {_f(d['perm_p'], 3)} | {d['countries']} |")
        lines.append("")
    if report.get("readout_agreement"):
        lines += ["Read-outs: EMD between the histogram of the sampled answers (generated as text and parsed) and the "
                  "renormalised option probabilities; beside it, the EMD that sampling noise alone gives (the same number "
                  "of answers drawn from the renormalised distribution itself), the share of samples that named no option, "
                  "and the option mass:", "",
                  "| run | method | cell | EMD(sampled, renormalised) | sampling-noise floor | samples per prompt | samples naming no option | option mass | rows |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for a in report["readout_agreement"]:
            lines.append(f"| {a['job']} | {a['method']} | {a['cell']} | {_f(a['emd'])} | {_f(a.get('noise_floor'))} | {a.get('samples')} "
                         f"| {_f(a.get('invalid_frac'))} | {_f(a['option_mass'])} | {a['n']} |")
        lines.append("")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = list(report.get("cells", {}))
    if not cells:
        return
    fig, axes = plt.subplots(1, len(cells), figsize=(5.5 * len(cells), 4.2), squeeze=False)
    for ax, key in zip(axes[0], cells):
        c = report["cells"][key]
        cell = c["cell"]
        t = sorted(c["table"], key=lambda t: t["emd"])
        names = [x["row"] for x in t]
        colors = ["#999999" if n.startswith("ref:") else "#1f77b4" for n in names]
        ax.barh(range(len(t)), [x["emd"] for x in t], color=colors)
        for i, x in enumerate(t):
            if len(x["emd_per_seed"]) > 1:
                ax.plot(x["emd_per_seed"], [i] * len(x["emd_per_seed"]), "k.", ms=4)
        ax.set_yticks(range(len(t)))
        ax.set_yticklabels(names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("EMD to the human answer shares (lower is better)")
        ax.set_title(("set " + c["set"] + ": " if c["set"] else "") + CELL_TITLE[cell], fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--out", default=None, help="output folder (default: ROOT/report)")
    ap.add_argument("--root", default=None, help="the jobs' folder (default: the config's root), e.g. docs/results/cells/runs, "
                                                  "where the measured runs' result files are kept")
    args = ap.parse_args()
    cfg = json.loads(Path(args.config).read_text())
    root = Path(args.root or cfg["root"])
    if not root.is_absolute():
        root = REPO / root
    out = Path(args.out) if args.out else root / "report"
    rep = build(root)
    if not rep:
        print(f"no finished cell results under {root}", file=sys.stderr)
        return
    out.mkdir(parents=True, exist_ok=True)
    from pluralign.io import atomic_write_json, atomic_write_text

    atomic_write_json(out / "cells.json", rep)
    md = markdown(rep)
    atomic_write_text(out / "report.md", md + "\n")
    plot(rep, out / "cells.png")
    print(md)


if __name__ == "__main__":
    main()
