"""The soft-prompt budget study: countries x optimisers (full space and random subspace) x seeds. Resumable.

    python scripts/softprompt_study.py --out runs/sp-study                 # run (or continue) every search
    python scripts/softprompt_study.py --out runs/sp-study --dry-run       # the plan and its size
    python scripts/softprompt_study.py --out runs/sp-study --report        # tables (markdown) and curves only
    python scripts/softprompt_study.py --objective diff --wordings original,reworded --out runs/sp-study-c-free   # issue 29

Objective (issue 29; :mod:`pluralign.blackbox.objective`): by default every search minimises the
fixed-C L1 (``l1-c50``) on the ``original`` items, the method of the published tables
(``docs/results/softprompt.md``); ``--objective diff`` (between-country differences against the
calibration countries' in-context scores, so the VSM constant C cancels) or ``l1-calibrated`` (C
fitted on the calibration countries, never on the target) with ``--wordings original,reworded``
(the objective averaged over both) is the method of issue 29. The third wording, ``reworded2``, is
never searched. Whatever the objective, the baselines, the calibration
(the model without a prompt and the calibration countries' in-context references, on every
wording) and each searched prompt are scored on all three wordings under all three conventions; the
report puts them beside each other, with the held-out wording's fit as the headline, the
specificity table (each prompt against every target, under the search objective) and the prompts'
pairwise between-country differences (the prompt for A minus the prompt for B against Hofstede's
A - B). The objective, wordings and calibration countries are part of the study's settings: a
folder made with other ones is refused (use another ``--out``); a summary from before issue 29 reads
as ``l1-c50`` on ``original``.

Defaults: SmolLM2-135M-Instruct, T = 10 virtual tokens, USA / CHN / IND / ARA, DE / PSO / CMA-ES
each in the full T x hidden space (``d0``) and in a random 500-dimensional subspace (``d500``,
Black-Box Tuning), seeds 0, 1, 2, population 16 x (1 + 24 generations) = 400 candidate evaluations
per search; with ``--knowledge N`` (default 100) each searched prompt and no prompt are also scored
on N BLEnD multiple-choice questions of the country's region (the knowledge check; a study made
before it existed gets it for its finished searches on the next run). Optimiser settings are the library defaults (``OptimizerConfig``; CMA-ES: diagonal in
the full space, full covariance in the subspace, step 0.3 / 0.1 of the bound width).

One model load for everything; one evaluator with a memo shared by every search (a candidate's
scores do not depend on the target country; the seeded initial population of a space is the same
for every optimiser and country, so it is scored once). Every search checkpoints each generation in
``OUT/<country>-<optimizer>-d<dim>-s<seed>/`` (``pluralign softprompt``'s files); an interrupted
study continues where it stopped (the running search from its last generation) when the same
command is run again. ``OUT/summary.json`` (rewritten atomically after every search) holds the
baselines and the finished searches; ``--report`` prints the tables from it and draws
``OUT/curves.png`` (best loss so far vs evaluations: median and range over seeds).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import NoReturn

import numpy as np


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def plan(a) -> list[dict]:
    """Seed-major, so that a partial study already holds complete seeds."""
    return [{"seed": int(s), "optimizer": o, "dim": int(d), "country": c}
            for s in _csv(a.seeds) for d in _csv(a.subspace_dims) for o in _csv(a.optimizers) for c in _csv(a.countries)]


def run_name(job: dict) -> str:
    return f"{job['country']}-{job['optimizer']}-d{job['dim']}-s{job['seed']}"


def _fail(message: str) -> NoReturn:
    """One ``error:`` line on stderr and exit status 2 (bad input, never a traceback)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _objective_settings(summary: dict) -> dict:
    """The study's objective settings; a summary from before issue 29 searched the fixed-C L1 on the original items."""
    st = summary.get("settings", {})
    return {"objective": st.get("objective", "l1-c50"), "wordings": st.get("wordings", ["original"]),
            "calibration": st.get("calibration")}


def _read_summary(f: Path) -> dict:
    """The study's summary.json, or a clear error naming the file if it is not a JSON object."""
    try:
        summary = json.loads(f.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        _fail(f"{f}: not a readable study summary ({e})")
    if not isinstance(summary, dict):
        _fail(f"{f}: not a study summary (a JSON object was expected)")
    return summary


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="model (short name, hub id or folder)")
    ap.add_argument("--countries", default="USA,CHN,IND,ARA", help="targets (ARA = Hofstede's Arab countries region)")
    ap.add_argument("--optimizers", default="de,pso,cmaes", help="optimisers (de, pso, cmaes, sep-cmaes)")
    ap.add_argument("--subspace-dims", default="0,500", help="0 = the full space; d > 0 = a random d-dimensional subspace")
    ap.add_argument("--seeds", default="0,1,2", help="seeds (initial population, projection, optimiser)")
    ap.add_argument("--tokens", type=int, default=10, help="virtual tokens")
    ap.add_argument("--pop", type=int, default=16, help="population size")
    ap.add_argument("--gens", type=int, default=24, help="generations after the initial population (evaluations = pop x (gens + 1))")
    ap.add_argument("--batch-size", type=int, default=64, help="rows per forward pass")
    ap.add_argument("--autocast", choices=("off", "bf16"), default="off",
                    help="bf16 matrix products in the searches (about 1.9x faster on CPUs with AVX512-BF16 or AMX, about 5x "
                         "slower on AVX2-only CPUs: bench/softprompt_throughput.py --with-autocast tells; not exact); baselines, "
                         "the reported scores of the searched prompts and every check stay fp32. Recorded per search, so a "
                         "study may continue on another machine with the other setting")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda")
    ap.add_argument("--knowledge", type=int, default=100,
                    help="BLEnD knowledge questions of each country's region scored without a prompt and with each searched prompt "
                         "(the same seeded set for every search of a country; none is used by the search); 0 = skip")
    ap.add_argument("--knowledge-root", type=Path, default=None,
                    help="BLEnD annotations folder (*_data.json; default: <shared data>/blend_cultural_knowledge/annotations)")
    from pluralign.blackbox.objective import DEFAULT_CALIBRATION

    ap.add_argument("--objective", default="l1-c50",
                    help="what every search minimises: l1-c50 (default: fixed C = 50, the method of the published tables), "
                         "diff (between-country differences against the calibration countries' in-context scores; C cancels) "
                         "or l1-calibrated (C fitted on the calibration countries, never on the target); all three are "
                         "reported. The seed paper's convention (its C, sum or mean, wording) is unknown")
    ap.add_argument("--wordings", default="original",
                    help="item wordings each search averages its objective over: original (default), reworded, or both "
                         "(original,reworded: each wording costs one more pass per evaluation); reworded2 is never searched: "
                         "the report's held-out wording")
    ap.add_argument("--calibration-countries", default=",".join(DEFAULT_CALIBRATION),
                    help="countries that calibrate C (l1-calibrated) and are the references of the differences (diff); "
                         "a target is left out of its own calibration")
    ap.add_argument("--out", type=Path, default=Path("runs/sp-study"), help="output folder")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and its size, run nothing")
    ap.add_argument("--report", action="store_true", help="only print the tables of OUT/summary.json and draw OUT/curves.png")
    a = ap.parse_args(argv)
    from pluralign.blackbox.objective import parse_calibration, parse_objective, parse_wordings
    from pluralign.errors import PluralignError

    try:
        objective_name = parse_objective(a.objective)
        search_wordings = parse_wordings(a.wordings)
        calib = parse_calibration(a.calibration_countries)
    except PluralignError as e:
        _fail(str(e))
    jobs = plan(a)
    evals = a.pop * (a.gens + 1)
    if a.dry_run:
        spaces = len(_csv(a.subspace_dims)) * len(_csv(a.seeds))
        unique_init = spaces * a.pop
        total = len(jobs) * evals
        print(f"{len(jobs)} searches x {evals} candidate evaluations = {total} "
              f"(about {total - len(jobs) * a.pop + unique_init} after the memo: the initial population of each of the {spaces} "
              f"(space, seed) pairs is scored once); objective {objective_name} on {', '.join(search_wordings)} "
              f"({len(search_wordings) * 24} item prompts per evaluation); calibration: {', '.join(c.code for c in calib)}")
        for j in jobs:
            print("  " + run_name(j))
        return {"jobs": jobs}
    if a.report:
        if not (a.out / "summary.json").exists():
            _fail(f"{a.out / 'summary.json'} does not exist: --out must be a study folder (run the study first)")
        summary = _per_search_precision(_read_summary(a.out / "summary.json"))
        print(markdown(summary))
        curves(summary, a.out / "curves.png")
        return summary

    import torch

    from pluralign.blackbox.objective import (
        WORDINGS, Calibration, Objective, ObjectiveEvaluator, build_calibration, readout_table, score_on_wordings,
    )
    from pluralign.blackbox.population import PopulationConfig, in_context_system
    from pluralign.blackbox.search import CHECKPOINT, SearchConfig, run_search
    from pluralign.blackbox.vsm import VSMConfig
    from pluralign.cli._common import quiet_libraries
    from pluralign.data.loaders.hofstede import DIMENSIONS, country_target
    from pluralign.io import atomic_write_json
    from pluralign.models import load_backbone

    quiet_libraries()
    torch.set_num_threads(a.threads)
    f = a.out / "summary.json"
    summary = _read_summary(f) if f.exists() else {}
    settings = {"model": a.model, "tokens": a.tokens, "pop": a.pop, "gens": a.gens, "objective": objective_name,
                "wordings": list(search_wordings), "calibration": [c.code for c in calib]}
    _per_search_precision(summary)
    if summary:
        had = {**summary.get("settings", {}), **_objective_settings(summary)}
        if had["calibration"] is None and objective_name == "l1-c50":
            had["calibration"] = settings["calibration"]  # a study from before issue 29: the calibration only adds read-outs
        if had != settings:
            _fail(f"{f} was made with {had}, not {settings}: use another --out")
    a.out.mkdir(parents=True, exist_ok=True)
    summary["settings"] = settings
    summary.setdefault("baselines", {})
    summary.setdefault("runs", {})
    summary.setdefault("started", time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
    save = lambda: atomic_write_json(f, summary)  # noqa: E731
    t0 = time.perf_counter()
    model, tok = load_backbone(a.model, device=a.device)
    model.requires_grad_(False)
    H = model.get_input_embeddings().weight.shape[1]
    pcfg = dict(batch_size=a.batch_size)  # exact (fp32) everywhere but the search itself
    vsm = VSMConfig()
    C = np.array([vsm.constants[d] for d in DIMENSIONS])
    all_wordings = tuple(WORDINGS)
    first = search_wordings[0]
    todo = [country_target(c) for c in _csv(a.countries)]
    todo = [t for t in todo if t.code not in summary["baselines"]]
    if todo or "calibration" not in summary:
        # one batched pass: the model without a prompt, each calibration country's reference and each new
        # target's in-context baseline, on every wording
        ctx = {t.code: in_context_system(t.iso3 or t.name) for t in todo}
        cal, extra = build_calibration(model, tok, calib, wordings=all_wordings, cfg=PopulationConfig(tokens=0, **pcfg),
                                       extra_contexts=tuple(ctx.values()))
        summary.setdefault("calibration", cal.to_dict())  # a resumed study keeps the calibration it searched with
        cal = Calibration.from_dict(summary["calibration"])
        objective = Objective(objective_name, vsm=vsm, calibration=cal)
        for tgt in todo:
            ro = {"naive": readout_table(objective, cal.naive, tgt),
                  "in-context": readout_table(objective, extra["extra"][ctx[tgt.code]]["raw"], tgt)}
            mean = lambda r: float(np.mean([r[w][objective_name] for w in search_wordings]))  # noqa: E731
            summary["baselines"][tgt.code] = {
                "name": tgt.name, "target": tgt.scores, "naive_loss": mean(ro["naive"]), "icl_loss": mean(ro["in-context"]),
                "naive_scores": dict(zip(DIMENSIONS, (cal.naive[first] + C).tolist())),
                "icl_scores": dict(zip(DIMENSIONS, (extra["extra"][ctx[tgt.code]]["raw"][first] + C).tolist())),
                "readouts": ro, "icl_raw": {w: dict(zip(DIMENSIONS, v.tolist())) for w, v in extra["extra"][ctx[tgt.code]]["raw"].items()}}
            save()
            print(f"[{time.perf_counter() - t0:7.0f}s] {tgt.code}: naive {summary['baselines'][tgt.code]['naive_loss']:.2f}, "
                  f"in-context {summary['baselines'][tgt.code]['icl_loss']:.2f} ({objective_name})", flush=True)
    cal = Calibration.from_dict(summary["calibration"])
    objective = Objective(objective_name, vsm=vsm, calibration=cal)
    for code, b in summary["baselines"].items():  # baselines from before issue 29: the model without a prompt, read out again
        if "readouts" not in b:
            b["readouts"] = {"naive": readout_table(objective, cal.naive, country_target(code))}
    kevs: dict = {}

    def knowledge(code: str, x) -> dict | None:
        """BLEnD accuracy with no prompt (once per country, in the baselines) and with prompt ``x``."""
        if a.knowledge <= 0:
            return None
        from pluralign.blackbox.knowledge import KnowledgeEvaluator, blend_region, build_knowledge_set

        tgt = country_target(code)
        if code not in kevs:
            items = build_knowledge_set(blend_region(tgt.iso3 or tgt.code), n=a.knowledge, seed=0, root=a.knowledge_root)
            kevs[code] = KnowledgeEvaluator(model, tok, items, cfg=PopulationConfig(tokens=a.tokens, **pcfg))
        kt = kevs[code]
        b = summary["baselines"][tgt.code]
        if "knowledge" not in b:  # no prompt: scored once per country
            k0 = KnowledgeEvaluator(model, tok, kt.items, cfg=PopulationConfig(tokens=0, **pcfg))
            r0 = k0.evaluate(torch.zeros(1, 0, H))
            b["knowledge"] = {"region": k0.region, "n": k0.n, "chance": k0.chance, "accuracy": float(r0["accuracy"][0]),
                              "correct": [int(c) for c in r0["correct"][0]]}
        r = kt.evaluate(torch.as_tensor(np.asarray(x, dtype=np.float32)).reshape(1, a.tokens, H))
        return {"accuracy": float(r["accuracy"][0]), "naive_accuracy": b["knowledge"]["accuracy"], "n": kt.n,
                "correct": [int(c) for c in r["correct"][0]]}

    from pluralign.adapters.softprompt import load_soft_prompt

    for name, r in summary["runs"].items():  # searches finished before the knowledge check existed
        if a.knowledge > 0 and "knowledge" not in r and (a.out / name / "prompt.safetensors").exists():
            x, _ = load_soft_prompt(a.out / name)
            r["knowledge"] = knowledge(r["code"], x.float().numpy())
            save()
    ev = ObjectiveEvaluator(model, tok, objective, wordings=search_wordings,
                            cfg=PopulationConfig(tokens=a.tokens, memo=8192, autocast=a.autocast, **pcfg))
    exact_cfg = PopulationConfig(tokens=a.tokens, **pcfg)  # fp32, no memo: the reported scores on every wording
    special = set(getattr(tok, "all_special_ids", []) or [])
    hits0 = summary.get("memo_hits", 0)  # earlier invocations' memo hits
    for i, job in enumerate(jobs):
        name = run_name(job)
        if name in summary["runs"]:
            continue
        tgt = country_target(job["country"])
        dim = job["dim"] if job["dim"] < a.tokens * H else 0
        cfg = SearchConfig(optimizer=job["optimizer"], pop=a.pop, gens=a.gens, seed=job["seed"], subspace_dim=dim)
        out = a.out / name
        t1 = time.perf_counter()
        res = run_search(ev, tgt, cfg, out_dir=out, resume=(out / CHECKPOINT).exists(), progress=False, special_ids=special,
                         meta={"model": a.model, "study": str(a.out)})
        b = summary["baselines"][tgt.code]
        best = torch.tensor(res.best_x, dtype=torch.float32).reshape(a.tokens, H)
        sc = score_on_wordings(model, tok, best, wordings=all_wordings, cfg=exact_cfg)  # exact fp32, every wording
        ro = readout_table(objective, sc["raw"], tgt)
        exact = {"loss": res.best_loss, "scores": res.best_scores, "mass": res.best_mass}
        if a.autocast != "off":  # the search saw an approximate objective: the reported score is the exact one
            exact = {"loss": float(np.mean([ro[w][objective_name] for w in search_wordings])),
                     "scores": dict(zip(DIMENSIONS, (sc["raw"][first] + C).tolist())), "mass": sc["mass"][first]}
        gain = b["naive_loss"] - exact["loss"]

        def check(w: str) -> dict:
            """The search objective on wording ``w``: naive, the prompt, and the share of the searched reduction kept."""
            n0, n1 = b["readouts"]["naive"][w][objective_name], ro[w][objective_name]
            return {"naive_loss": n0, "loss": n1, "kept": (n0 - n1) / gain if gain > 0 else None}

        summary["runs"][name] = {**job, "code": tgt.code, "subspace_dim": dim, "autocast": a.autocast, "initial_best": res.initial_best,
                                 "loss": exact["loss"], "search_loss": res.best_loss, "objective": objective_name,
                                 "wordings": list(search_wordings),
                                 "scores": exact["scores"], "evaluations": res.evaluations, "generations": res.generations,
                                 "curve": [[h["evals"], round(h["best"], 4)] for h in res.history],
                                 "seconds": res.history[-1]["seconds"] if res.history else 0.0, "option_mass": exact["mass"],
                                 "raw": {w: dict(zip(DIMENSIONS, v.tolist())) for w, v in sc["raw"].items()},
                                 "readouts": ro, "mass_by_wording": sc["mass"],
                                 "reworded": check("reworded"), "held_out": {w: check(w) for w in all_wordings if w not in search_wordings},
                                 "knowledge": knowledge(tgt.code, best)}
        summary["memo_hits"] = hits0 + ev.memo_hits
        save()
        print(f"[{time.perf_counter() - t0:7.0f}s] ({i + 1}/{len(jobs)}) {name}: initial best {res.initial_best:.2f} → "
              f"{exact['loss']:.2f} ({res.evaluations} evaluations, {time.perf_counter() - t1:.0f} s)", flush=True)
    summary["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    save()
    print(markdown(summary))
    curves(summary, a.out / "curves.png")
    return summary


def _per_search_precision(summary: dict) -> dict:
    """Studies from before the precision was recorded per search kept one ``autocast`` in their
    settings: move it onto each of their searches (in place)."""
    ac = summary.get("settings", {}).pop("autocast", None)
    for r in summary.get("runs", {}).values():
        r.setdefault("autocast", ac or "off")
    return summary


def _variant(r: dict) -> str:
    return r["optimizer"] + (f" d={r['subspace_dim']}" if r["subspace_dim"] else " full")


def _runs_of(runs: list[dict], code: str, variant: str) -> list[dict]:
    """The searches (one per seed) of one country and variant."""
    return [r for r in runs if r["code"] == code and _variant(r) == variant]


def _names(runs: list[dict]) -> str:
    return ", ".join(run_name(r) for r in runs)


def markdown(summary: dict) -> str:
    """The study's tables: the search objective per country and variant (mean ± sd and range over
    seeds, the change vs naive, the initial population's best); per-dimension scores; specificity
    (each prompt against every target); every convention beside the others on the held-out and the
    searched wordings; the prompts' pairwise between-country differences; the reworded-items check;
    the knowledge check with paired bootstrap intervals."""
    from pluralign.blackbox.objective import OBJECTIVE_LABELS, SEED_PAPER_CONVENTION
    from pluralign.data.loaders.hofstede import DIMENSIONS

    runs = list(summary.get("runs", {}).values())
    variants = sorted({_variant(r) for r in runs}, key=lambda v: (("full" not in v), v))
    ob = _objective_settings(summary)
    obj_label = f"{ob['objective']} ({OBJECTIVE_LABELS.get(ob['objective'], ob['objective'])})"
    lines = [f"Search objective: {obj_label}, mean over the wordings {', '.join(ob['wordings'])}"
             + (f"; calibration countries {', '.join(ob['calibration'])} (a target never calibrates itself)" if ob["calibration"] else
                "; fixed constants C = 50 (a summary from before issue 29)")
             + f". Seed paper's convention: {SEED_PAPER_CONVENTION}.", "",
             "| target | naive | in-context | " + " | ".join(variants) + " |", "|---|---|---|" + "---|" * len(variants)]
    for code, b in summary.get("baselines", {}).items():
        cells = []
        for v in variants:
            got = _runs_of(runs, code, v)
            if not got:
                cells.append("–")
                continue
            loss = np.array([r["loss"] for r in got])
            init = np.mean([r["initial_best"] for r in got])
            sd = f" ± {loss.std(ddof=1):.2f}" if len(loss) > 1 else ""
            rng_ = f"; range {loss.min():.2f}–{loss.max():.2f}" if len(loss) > 1 else ""
            change = 100 * (loss.mean() / b["naive_loss"] - 1)
            cells.append(f"**{loss.mean():.2f}**{sd} (n={len(loss)}{rng_}; {change:+.0f} % vs naive; initial {init:.2f})")
        lines.append(f"| {code} ({b['name']}) | {b['naive_loss']:.2f} | {b['icl_loss']:.2f} | " + " | ".join(cells) + " |")
    s = summary.get("settings", {})
    lines.append("")
    fp32 = [r for r in runs if r["autocast"] == "off"]
    for ac in sorted({r["autocast"] for r in runs} - {"off"}):
        mine = [r for r in runs if r["autocast"] == ac]
        if not fp32:
            which = "The searches"
        elif len(mine) <= len(fp32):
            which = f"{len(mine)} of the {len(runs)} searches ({_names(mine)}; the other {len(fp32)} in fp32)"
        else:
            which = f"{len(mine)} of the {len(runs)} searches (all but {_names(fp32)}, which searched in fp32)"
        lines.append(f"{which} ran with {ac} matrix products (their curves and the initial-population bests are that objective); every other L1 above, the "
                     "baselines and the checks below are exact fp32 scores of the searched prompts.")
        gap = np.array([r["loss"] - r["search_loss"] for r in mine if r.get("search_loss") is not None])
        if gap.size:
            lines.append(f"Exact minus {ac} L1 of the best prompt: mean {gap.mean():+.2f}, range {gap.min():+.2f} to {gap.max():+.2f} "
                         f"(n={gap.size}): a search keeps the candidates the approximation happens to favour, so its own value is optimistic.")
        lines.append("")
    if runs:  # per-dimension scores: the mean over seeds of the searched prompts' scores
        lines += ["Per-dimension scores (mean over seeds; the fixed constants C = 50, on the first search wording) against the target:", "",
                  "| target | prompt | " + " | ".join(DIMENSIONS) + " | L1 |", "|---|---|" + "---|" * (len(DIMENSIONS) + 1)]
        fmt = lambda d, k: f"{d[k]:.1f}" if d.get(k) is not None else "–"  # noqa: E731
        for code, b in summary.get("baselines", {}).items():
            rows = [("target", b["target"], None), ("naive", b["naive_scores"], b["naive_loss"]), ("in-context", b["icl_scores"], b["icl_loss"])]
            for v in variants:
                got = _runs_of(runs, code, v)
                if got:
                    rows.append((f"{v} (n={len(got)})", {k: float(np.mean([r["scores"][k] for r in got])) for k in DIMENSIONS},
                                 float(np.mean([r["loss"] for r in got]))))
            for label, sc, l1 in rows:
                lines.append(f"| {code} | {label} | " + " | ".join(fmt(sc, k) for k in DIMENSIONS) + f" | {'' if l1 is None else f'{l1:.2f}'} |")
        lines.append("")
    if runs:  # is a searched prompt specific to its country? its scores against every target (no model call)
        targets = summary.get("baselines", {})
        lines += [f"Specificity: the {obj_label} of the searched prompts against every study target (mean over seeds; the searched "
                  "target in bold, where it is the search's own loss). A prompt that fits its own country's profile, not just a "
                  "less extreme respondent, lowers its own column more than the others.", "",
                  "| prompt | " + " | ".join(targets) + " |", "|---|" + "---|" * len(targets)]
        lines.append("| naive | " + " | ".join(f"{_naive_against(summary, b):.2f}" for b in targets.values()) + " |")
        for code in targets:
            for v in variants:
                got = _runs_of(runs, code, v)
                if got:
                    cells = [f"{np.mean([_loss_against(summary, r, t, b) for r in got]):.2f}" for t, b in targets.items()]
                    cells = [f"**{c}**" if t == code else c for c, t in zip(cells, targets)]
                    lines.append(f"| {code} {v} (n={len(got)}) | " + " | ".join(cells) + " |")
        lines.append("")
    lines += _conventions(summary, runs, variants)
    lines += _pairwise(summary, runs, variants)
    rw = [r for r in runs if r.get("reworded")]
    if rw:
        searched = "reworded" in ob["wordings"]
        lines += ["", f"Generalisation check (the items phrased a second way, `vsm2013_items_reworded.json`{'; one of the search wordings' if searched else ''}): "
                  f"the {obj_label} of naive and of the searched prompt on the reworded items, and the share of the searched reduction "
                  "from naive that is kept.", "",
                  "| target | variant | searched (naive → prompt) | reworded (naive → prompt) | kept (mean over seeds) |",
                  "|---|---|---|---|---|"]
        for code, b in summary.get("baselines", {}).items():
            for v in variants:
                got = _runs_of(rw, code, v)
                if not got:
                    continue
                kept = [r["reworded"]["kept"] for r in got if r["reworded"]["kept"] is not None]
                lines.append(f"| {code} | {v} | {b['naive_loss']:.2f} → {np.mean([r['loss'] for r in got]):.2f} | "
                             f"{got[0]['reworded']['naive_loss']:.2f} → {np.mean([r['reworded']['loss'] for r in got]):.2f} | "
                             + (f"{100 * np.mean(kept):.0f} % (n={len(kept)})" if kept else "n/a") + " |")
        lines.append("")
    kn = [r for r in runs if r.get("knowledge")]
    if kn:
        lines += ["", "Knowledge check: accuracy on BLEnD multiple-choice questions of the country's region (4 options, chance "
                  "0.25; none used by the search), without a prompt and with the searched prompt; the change with its paired "
                  "bootstrap interval over questions (all seeds' questions pooled).", "",
                  "| target | region | variant | no prompt | searched prompt (mean over seeds) | change [95 % CI] |", "|---|---|---|---|---|---|"]
        for code, b in summary.get("baselines", {}).items():
            for v in variants:
                got = _runs_of(kn, code, v)
                if not got or "knowledge" not in b:
                    continue
                k0 = np.asarray(b["knowledge"]["correct"], dtype=float)
                d = np.stack([np.asarray(r["knowledge"]["correct"], dtype=float) - k0 for r in got])  # [seeds, questions]
                rng = np.random.default_rng(0)
                boots = d[:, rng.integers(0, d.shape[1], size=(2000, d.shape[1]))].mean(axis=(0, 2))  # questions resampled
                lo, hi = np.percentile(boots, [2.5, 97.5])
                lines.append(f"| {code} | {b['knowledge']['region']} (n={b['knowledge']['n']}) | {v} | {b['knowledge']['accuracy']:.3f} | "
                             f"{np.mean([r['knowledge']['accuracy'] for r in got]):.3f} (n={len(got)}) | {d.mean():+.3f} [{lo:+.3f}, {hi:+.3f}] |")
        lines.append("")
    lines.append(f"{len(runs)} searches; population {s.get('pop')} x {s.get('gens', 0) + 1} = {s.get('pop', 0) * (s.get('gens', 0) + 1)} "
                 f"candidate evaluations each; {summary.get('memo_hits', 0)} memo hits.")
    return "\n".join(lines)


def _study_objective(summary: dict):
    """The :class:`~pluralign.blackbox.objective.Objective` of a study with a stored calibration, else None."""
    from pluralign.blackbox.objective import Calibration, Objective

    if "calibration" not in summary:
        return None
    return Objective(_objective_settings(summary)["objective"], calibration=Calibration.from_dict(summary["calibration"]))


def _unit(code: str, b: dict):
    from pluralign.data.loaders.hofstede import HofstedeTarget, load_hofstede_scores

    row = load_hofstede_scores().get(code)
    return HofstedeTarget(code=code, iso3=row.iso3 if row else None, name=b.get("name", code), unit_type="country",
                          scores=dict(b["target"]))


def _loss_against(summary: dict, run: dict, code: str, b: dict) -> float:
    """The search objective of a searched prompt against the target ``code`` (mean over the search
    wordings); its own target: the search's loss. A study from before issue 29: the fixed-C L1 of its scores."""
    from pluralign.blackbox.objective import score_vector
    from pluralign.blackbox.vsm import l1_loss
    from pluralign.data.loaders.hofstede import DIMENSIONS

    if code == run["code"]:
        return float(run["loss"])
    obj = _study_objective(summary)
    if obj is None or "raw" not in run:
        return float(l1_loss([run["scores"][k] for k in DIMENSIONS], b["target"]))
    t = _unit(code, b)
    return float(np.mean([obj.loss(score_vector(run["raw"][w])[None], t, w)[0] for w in _objective_settings(summary)["wordings"]]))


def _naive_against(summary: dict, b: dict) -> float:
    from pluralign.blackbox.vsm import l1_loss
    from pluralign.data.loaders.hofstede import DIMENSIONS

    if "readouts" in b:
        return float(b["naive_loss"])
    naive = next(iter(summary["baselines"].values()))["naive_scores"]
    return float(l1_loss([naive[k] for k in DIMENSIONS], b["target"]))


def _conventions(summary: dict, runs: list[dict], variants: list[str]) -> list[str]:
    """Every convention beside the others: on each held-out wording and on the searched wordings
    (their mean), naive → searched prompt (mean over seeds) and the change, per target and variant."""
    from pluralign.blackbox.objective import OBJECTIVES

    mine = [r for r in runs if r.get("readouts")]
    if not mine:
        return []
    ob = _objective_settings(summary)
    groups = [(w, [w], "held out") for w in mine[0]["readouts"] if w not in ob["wordings"]]
    groups.append(("searched (mean of " + ", ".join(ob["wordings"]) + ")", ob["wordings"], "searched"))
    out = []
    for title, ws, kind in groups:
        out += ["", f"Every convention beside the others, {title}{' wording (never searched)' if kind == 'held out' else ''}: "
                "naive → searched prompt (mean over seeds), change vs naive. l1-c50: fixed C = 50; l1-calibrated: C fitted on the "
                "calibration countries; diff: between-country differences (C cancels).", "",
                "| target | variant | " + " | ".join(OBJECTIVES) + " |", "|---|---|" + "---|" * len(OBJECTIVES)]
        for code, b in summary.get("baselines", {}).items():
            if "readouts" not in b:
                continue
            for v in variants:
                got = _runs_of(mine, code, v)
                if not got:
                    continue
                cells = []
                for n in OBJECTIVES:
                    try:
                        n0 = float(np.mean([b["readouts"]["naive"][w][n] for w in ws]))
                        n1 = float(np.mean([np.mean([r["readouts"][w][n] for w in ws]) for r in got]))
                    except KeyError:
                        cells.append("–")
                        continue
                    cells.append(f"{n0:.2f} → **{n1:.2f}** ({100 * (n1 / n0 - 1):+.0f} %)" if n0 > 0 else f"{n0:.2f} → {n1:.2f}")
                out.append(f"| {code} | {v} (n={len(got)}) | " + " | ".join(cells) + " |")
        out.append("")
    return out


def _pairwise(summary: dict, runs: list[dict], variants: list[str]) -> list[str]:
    """The prompt for A minus the prompt for B against Hofstede's A − B (C cancels), over every pair
    of study targets searched with the same variant and seed; naive gives every country the same
    scores, so its value is the mean |h_A − h_B|."""
    from itertools import combinations

    from pluralign.blackbox.objective import score_vector, pairwise_diff

    mine = [r for r in runs if r.get("raw")]
    codes = list(summary.get("baselines", {}))
    if not mine or len(codes) < 2:
        return []
    targets = {c: summary["baselines"][c]["target"] for c in codes}
    wordings = list(mine[0]["raw"])
    out = ["", "Between-country differences of the searched prompts: the mean over pairs of study targets (A, B) of the L1 "
           "between (prompt for A − prompt for B) and Hofstede's (A − B), same variant and seed; the constant C cancels. "
           "A model that gives every country the same scores (naive) scores the mean |h_A − h_B|.", "",
           "| variant | " + " | ".join(wordings) + " | pairs × seeds |", "|---|" + "---|" * (len(wordings) + 1)]
    same = [pairwise_diff(np.zeros(6), np.zeros(6), targets[a], targets[b]) for a, b in combinations(codes, 2)]
    out.append("| naive | " + " | ".join(f"{np.nanmean(same):.2f}" for _ in wordings) + f" | {len(same)} |")
    for v in variants:
        vals = {w: [] for w in wordings}
        for seed in sorted({r["seed"] for r in mine}):
            by = {r["code"]: r for r in mine if r["seed"] == seed and _variant(r) == v}
            for a, b in combinations([c for c in codes if c in by], 2):
                for w in wordings:
                    vals[w].append(pairwise_diff(score_vector(by[a]["raw"][w]), score_vector(by[b]["raw"][w]), targets[a], targets[b]))
        n = len(vals[wordings[0]])
        if n:
            out.append(f"| {v} | " + " | ".join(f"{np.nanmean(vals[w]):.2f}" for w in wordings) + f" | {n} |")
    out.append("")
    return out


def curves(summary: dict, path: Path) -> Path | None:
    """Best loss so far vs candidate evaluations: the median over seeds, shaded from the lowest to the
    highest seed, one panel per country."""
    runs = list(summary.get("runs", {}).values())
    if not runs:
        return None
    from pluralign._plot import pyplot, save_png

    plt = pyplot()

    codes = [c for c in summary.get("baselines", {}) if any(r["code"] == c for r in runs)]  # panels with searches only
    variants = sorted({_variant(r) for r in runs})
    colour = {v: f"C{i % 10}" for i, v in enumerate(variants)}  # one colour per variant in every panel (the legend is on the first)
    fig, axes = plt.subplots(1, len(codes), figsize=(max(4.8, 3.8 * len(codes)), 3.4), dpi=110, squeeze=False)
    for ax, code in zip(axes[0], codes):
        for v in variants:
            got = _runs_of(runs, code, v)
            if not got:
                continue
            n = min(len(r["curve"]) for r in got)
            x = [p[0] for p in got[0]["curve"][:n]]
            ys = np.array([[p[1] for p in r["curve"][:n]] for r in got])
            (line,) = ax.plot(x, np.median(ys, axis=0), "--" if "full" in v else "-", color=colour[v],
                            label=f"{v} (n={len(got)})")
            if len(got) > 1:
                ax.fill_between(x, ys.min(axis=0), ys.max(axis=0), color=line.get_color(), alpha=0.15, lw=0)
        b = summary["baselines"][code]
        ax.axhline(b["icl_loss"], color="grey", lw=0.8, ls=":", label="in-context")
        ax.axhline(b["naive_loss"], color="black", lw=0.8, ls=":", label="naive")
        ax.axhline(b["naive_loss"] / 2, color="black", lw=0.6, ls="-.", label="50 % of naive")
        ax.set_title(f"{code} ({b['name']})", fontsize=9)
        ax.set_xlabel("candidate evaluations")
    axes[0][0].set_ylabel(f"best {_objective_settings(summary)['objective']} so far (median; band: seed range)", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, path, dpi=fig.dpi)


if __name__ == "__main__":
    main()
