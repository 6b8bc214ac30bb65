"""The results table: naive → in-context → searched soft prompts, per country and optimiser.

``python -m pluralign.blackbox.experiment --model smollm2-135m --countries USA,CHN,IND,ARA
--plan de:USA,de:CHN,de:IND,de:ARA,pso:USA,cmaes:USA --pop 6 --gens 3 --out runs/sp-table``

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
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--out", type=Path, default=Path("runs/sp-table"), help="output folder")
    a = ap.parse_args(argv)

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
    summary: dict = {"model": a.model, "tokens": a.tokens, "pop": a.pop, "gens": a.gens, "seed": a.seed,
                     "threads": a.threads, "device": str(next(model.parameters()).device), "baselines": {}, "runs": [],
                     "knowledge": {}, "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    out = a.out
    save = lambda: atomic_write_json(out / "summary.json", summary)  # noqa: E731
    countries = [c.strip() for c in a.countries.split(",") if c.strip()]
    t0 = time.perf_counter()
    naive = PopulationEvaluator.from_questionnaire(model, tok, cfg=PopulationConfig(tokens=0, batch_size=a.batch_size))
    rn = naive.evaluate(torch.zeros(1, 0, H))
    summary["naive_scores"] = scores_dict(rn.scores[0])
    summary["naive_mass"] = float(rn.mean_mass[0])
    summary["naive_seconds"] = round(time.perf_counter() - t0, 1)
    for c in countries:
        tgt = country_target(c)
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
        t1 = time.perf_counter()
        res = run_search(ev, tgt, SearchConfig(optimizer=opt, pop=a.pop, gens=a.gens, seed=a.seed), out_dir=out / f"{tgt.code}-{opt}",
                         progress=False, special_ids=special, meta={"model": a.model})
        prompts[(opt, tgt.code)] = res.best_x
        summary["runs"].append({
            "country": tgt.code, "optimizer": opt, "initial_best": res.initial_best, "loss": res.best_loss,
            "scores": res.best_scores, "evaluations": res.evaluations, "generations": res.generations,
            "curve": [round(h["best"], 3) for h in res.history], "seconds": round(time.perf_counter() - t1, 1),
            "memo_hits": ev.memo_hits,
        })
        save()
        print(f"[{time.perf_counter() - t0:7.0f}s] {opt} {tgt.code}: initial best {res.initial_best:.2f} → {res.best_loss:.2f} "
              f"({res.evaluations} evaluations)", flush=True)
    if a.knowledge:
        from pluralign.blackbox.knowledge import blend_region, build_knowledge_set, knowledge_accuracy
        from pluralign.blackbox.softprompt import SoftPromptModel

        for (opt, code), x in prompts.items():
            if opt != "de":
                continue
            items = build_knowledge_set(blend_region(code), n=a.knowledge, seed=a.seed)
            before = knowledge_accuracy(model, tok, items, batch_size=a.batch_size)
            after = knowledge_accuracy(SoftPromptModel(model, torch.tensor(x, dtype=torch.float32).reshape(a.tokens, H)), tok, items,
                                       batch_size=a.batch_size)
            summary["knowledge"][code] = {"region": before["region"], "n": before["n"], "before": before["accuracy"],
                                          "after": after["accuracy"], "chance": before["chance"], "mass_before": before["mass"],
                                          "mass_after": after["mass"]}
            save()
            print(f"[{time.perf_counter() - t0:7.0f}s] knowledge {code} ({before['region']}): {before['accuracy']:.3f} → "
                  f"{after['accuracy']:.3f}", flush=True)
    summary["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    save()
    return summary


if __name__ == "__main__":
    main()
