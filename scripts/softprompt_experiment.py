"""The results table: naive → in-context → searched soft prompts, per country and optimiser.

``python scripts/softprompt_experiment.py --model smollm2-135m --countries USA,CHN,IND,ARA
--plan de:USA,de:CHN,de:IND,de:ARA,pso:USA,cmaes:USA --pop 6 --gens 3 --out runs/sp-table``

A driver of the library (``pluralign.blackbox``), not part of it: one country from the CLI is
``pluralign softprompt``; the budget study is ``scripts/softprompt_study.py``.

One model load for everything; one evaluator shared by every run with a memo of candidate scores
(the seeded initial population is the same for every run, so it is scored once). The summary JSON
is rewritten atomically after every step, so an interrupted run keeps what it finished.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="model short name, hub id or folder")
    ap.add_argument("--countries", default="USA,CHN,IND,ARA", help="targets for the baselines")
    ap.add_argument("--plan", default="de:USA,de:CHN,de:IND,de:ARA,pso:USA,cmaes:USA", help="optimizer:country runs, in order")
    ap.add_argument("--tokens", type=int, default=10, help="virtual tokens")
    ap.add_argument("--pop", type=int, default=6, help="population size")
    ap.add_argument("--gens", type=int, default=3, help="generations after the initial population")
    ap.add_argument("--seed", type=int, default=0, help="seed of the initial population and optimisers")
    ap.add_argument("--batch-size", type=int, default=48, help="rows per forward pass")
    ap.add_argument("--knowledge", type=int, default=0, help="BLEnD questions per country before/after the DE prompt (0 = skip)")
    ap.add_argument("--knowledge-countries", default="", help="only these countries for the knowledge check (default: every DE run)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--out", type=Path, default=Path("runs/sp-table"), help="output folder")
    ap.add_argument("--report", action="store_true", help="only print the markdown tables of OUT/summary.json")
    a = ap.parse_args(argv)
    if a.report:
        import json

        summary = json.loads((a.out / "summary.json").read_text())
        print(markdown(summary))
        return summary

    from pluralign.cli._common import quiet_libraries

    quiet_libraries()
    torch.set_num_threads(a.threads)
    from pluralign.blackbox.population import PopulationConfig, PopulationEvaluator, in_context_system
    from pluralign.blackbox.search import SearchConfig, run_search
    from pluralign.blackbox.vsm import scores_dict
    from pluralign.data.loaders.hofstede import country_target
    from pluralign.io import atomic_write_json
    from pluralign.models import load_backbone

    model, tok = load_backbone(a.model)
    model.requires_grad_(False)
    H = model.get_input_embeddings().weight.shape[1]
    import json

    old = json.loads((a.out / "summary.json").read_text()) if (a.out / "summary.json").exists() else {}
    summary: dict = {"model": a.model, "tokens": a.tokens, "pop": a.pop, "gens": a.gens, "seed": a.seed,
                     "threads": a.threads, "device": str(next(model.parameters()).device), "baselines": {}, "runs": [],
                     "knowledge": {}, "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    out = a.out
    save = lambda: atomic_write_json(out / "summary.json", summary)  # noqa: E731
    countries = [c.strip() for c in a.countries.split(",") if c.strip()]
    t0 = time.perf_counter()
    # an earlier (interrupted) run of the same folder: keep its baselines and finished runs
    summary["baselines"] = dict(old.get("baselines", {}))
    summary["runs"] = [r for r in old.get("runs", []) if r.get("pop") == a.pop and r.get("gens") == a.gens]
    naive = PopulationEvaluator.from_questionnaire(model, tok, cfg=PopulationConfig(tokens=0, batch_size=a.batch_size))
    rn = naive.evaluate(torch.zeros(1, 0, H)) if not old.get("naive_scores") else None
    if rn is None:
        from types import SimpleNamespace

        from pluralign.data.loaders.hofstede import DIMENSIONS

        rn = SimpleNamespace(scores=np.array([[old["naive_scores"][d] for d in DIMENSIONS]]), mean_mass=np.array([old["naive_mass"]]))
    summary["naive_scores"] = scores_dict(rn.scores[0])
    summary["naive_mass"] = float(rn.mean_mass[0])
    summary["naive_seconds"] = old.get("naive_seconds") or round(time.perf_counter() - t0, 1)
    for c in countries:
        tgt = country_target(c)
        if tgt.code in summary["baselines"]:
            continue
        t1 = time.perf_counter()
        icl = PopulationEvaluator.from_questionnaire(
            model, tok, cfg=PopulationConfig(tokens=0, batch_size=a.batch_size, contexts=(in_context_system(tgt.iso3 or tgt.name),)))
        ri = icl.evaluate(torch.zeros(1, 0, H), tgt)
        from pluralign.blackbox.vsm import l1_loss

        summary["baselines"][tgt.code] = {
            "target": tgt.scores, "name": tgt.name, "naive_loss": float(l1_loss(rn.scores, tgt)[0]),
            "icl_loss": float(ri.loss[0]), "icl_scores": scores_dict(ri.scores[0]), "icl_mass": float(ri.mean_mass[0]),
            "icl_seconds": round(time.perf_counter() - t1, 1),
        }
        save()
        print(f"[{time.perf_counter() - t0:7.0f}s] {tgt.code}: naive {summary['baselines'][tgt.code]['naive_loss']:.2f} "
              f"in-context {ri.loss[0]:.2f}", flush=True)
    ev = PopulationEvaluator.from_questionnaire(model, tok, cfg=PopulationConfig(tokens=a.tokens, batch_size=a.batch_size, memo=4096))
    special = set(getattr(tok, "all_special_ids", []) or [])
    prompts: dict[tuple[str, str], np.ndarray] = {}
    for step in [s.strip() for s in a.plan.split(",") if s.strip()]:
        opt, _, c = step.partition(":")
        tgt = country_target(c)
        if any(r["country"] == tgt.code and r["optimizer"] == opt for r in summary["runs"]):
            continue
        t1 = time.perf_counter()
        res = run_search(ev, tgt, SearchConfig(optimizer=opt, pop=a.pop, gens=a.gens, seed=a.seed), out_dir=out / f"{tgt.code}-{opt}",
                         progress=False, special_ids=special, meta={"model": a.model})
        prompts[(opt, tgt.code)] = res.best_x
        summary["runs"].append({
            "country": tgt.code, "optimizer": opt, "initial_best": res.initial_best, "loss": res.best_loss,
            "scores": res.best_scores, "evaluations": res.evaluations, "generations": res.generations,
            "curve": [round(h["best"], 3) for h in res.history], "seconds": round(time.perf_counter() - t1, 1),
            "memo_hits": ev.memo_hits, "pop": a.pop, "gens": a.gens,
        })
        save()
        _knowledge(a, model, tok, opt, tgt, res.best_x, H, summary, t0)
        save()
        print(f"[{time.perf_counter() - t0:7.0f}s] {opt} {tgt.code}: initial best {res.initial_best:.2f} → {res.best_loss:.2f} "
              f"({res.evaluations} evaluations)", flush=True)
    summary["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    save()
    return summary


def markdown(summary: dict) -> str:
    """The results tables (L1 per country and method; per-dimension scores; knowledge) in markdown."""
    from pluralign.data.loaders.hofstede import DIMENSIONS

    runs = {(r["country"], r["optimizer"]): r for r in summary.get("runs", [])}
    opts = [o for o in ("de", "pso", "cmaes") if any(k[1] == o for k in runs)]
    lines = ["| target | naive | in-context | " + " | ".join(f"{o.upper()} (initial best → best)" for o in opts) + " |",
             "|---|---|---|" + "---|" * len(opts)]
    for code, b in summary.get("baselines", {}).items():
        cells = []
        for o in opts:
            r = runs.get((code, o))
            cells.append(f"{r['initial_best']:.2f} → **{r['loss']:.2f}**" if r else "–")
        lines.append(f"| {code} ({b['name']}) | {b['naive_loss']:.2f} | {b['icl_loss']:.2f} | " + " | ".join(cells) + " |")
    lines += ["", "| target | method | " + " | ".join(DIMENSIONS) + " | L1 |", "|---|---|" + "---|" * (len(DIMENSIONS) + 1)]
    naive = summary.get("naive_scores", {})
    for code, b in summary.get("baselines", {}).items():
        tgt = b["target"]
        lines.append(f"| {code} | target | " + " | ".join(f"{tgt[d]:.0f}" if d in tgt else "–" for d in DIMENSIONS) + " | |")
        lines.append(f"| {code} | naive | " + " | ".join(f"{naive[d]:.1f}" for d in DIMENSIONS) + f" | {b['naive_loss']:.2f} |")
        lines.append(f"| {code} | in-context | " + " | ".join(f"{b['icl_scores'][d]:.1f}" for d in DIMENSIONS) + f" | {b['icl_loss']:.2f} |")
        for o in opts:
            r = runs.get((code, o))
            if r and r.get("scores"):
                lines.append(f"| {code} | {o} | " + " | ".join(f"{r['scores'][d]:.1f}" for d in DIMENSIONS) + f" | {r['loss']:.2f} |")
    if summary.get("knowledge"):
        lines += ["", "| target | BLEnD region | questions | accuracy before | after (DE prompt) | chance | option mass before → after |",
                  "|---|---|---|---|---|---|---|"]
        for code, k in summary["knowledge"].items():
            lines.append(f"| {code} | {k['region']} | {k['n']} | {k['before']:.3f} | {k['after']:.3f} | {k['chance']:.2f} | "
                         f"{k['mass_before']:.2f} → {k['mass_after']:.2f} |")
    return "\n".join(lines)


def _knowledge(a, model, tok, opt, tgt, x, H, summary, t0) -> None:
    """BLEnD accuracy before and after the DE prompt of ``tgt`` (the countries in --knowledge-countries)."""
    if not a.knowledge or opt != "de":
        return
    kc = [c.strip().upper() for c in a.knowledge_countries.split(",") if c.strip()]
    if kc and tgt.code not in kc and (tgt.iso3 or "") not in kc:
        return
    from pluralign.blackbox.knowledge import blend_region, build_knowledge_set, knowledge_accuracy
    from pluralign.adapters.softprompt import SoftPromptModel

    items = build_knowledge_set(blend_region(tgt.iso3 or tgt.code), n=a.knowledge, seed=a.seed)
    before = knowledge_accuracy(model, tok, items, batch_size=a.batch_size)
    sp = SoftPromptModel(model, torch.tensor(x, dtype=torch.float32).reshape(a.tokens, H))
    after = knowledge_accuracy(sp, tok, items, batch_size=a.batch_size)
    summary["knowledge"][tgt.code] = {"region": before["region"], "n": before["n"], "before": before["accuracy"],
                                      "after": after["accuracy"], "chance": before["chance"], "mass_before": before["mass"],
                                      "mass_after": after["mass"]}
    print(f"[{time.perf_counter() - t0:7.0f}s] knowledge {tgt.code} ({before['region']}): {before['accuracy']:.3f} → "
          f"{after['accuracy']:.3f}", flush=True)


if __name__ == "__main__":
    main()
