"""``pluralign softprompt``: black-box soft-prompt alignment to a country's Hofstede scores (VSM 2013)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from pluralign.cli._common import markdown_table, quiet_libraries
from pluralign.errors import PluralignError

HELP = """Align a frozen model to a country's Hofstede dimensions with a searched soft prompt.

T virtual-token embeddings (--tokens) are prepended to the model's input. A gradient-free optimiser (--optimizer de | pso | cmaes | sep-cmaes | nsga2) searches them so that the model's answers to the 24 VSM 2013 items, read as option probabilities, give the country's published scores on the six dimensions (PDI, IDV, MAS, UAI, LTO, IVR); the loss is the L1 distance over the dimensions the country has (mean by default). The whole population is scored in batched forward passes.

By default the search runs in a random subspace (Black-Box Tuning, Sun et al. 2022): prompt = x_init + A z with z of --subspace-dim coordinates (500; 0 = search all T x hidden numbers), A a fixed seeded Gaussian matrix scaled to the embeddings' spread (--subspace-scale), z in [-B, B] (--subspace-bound 5). It applies to every optimiser; a resumed run regenerates A from the seed.

--optimizer nsga2 (pymoo NSGA-II) searches two objectives at once, the VSM loss and the accuracy on --knowledge N BLEnD questions of the country's region; it writes the Pareto front to pareto.json (+ pareto.safetensors with its prompts, pareto.png) and scores N further, held-out questions before and after.

Before the search the two baselines are scored: naive (no prompt) and in-context (a "you are a person from ..." system message). With --knowledge N, accuracy on N BLEnD cultural-knowledge questions of the country's region is measured before and after.

The output folder gets prompt.safetensors + prompt.json (the best prompt so far), checkpoint.pkl (resume with --resume), log.jsonl, convergence.png and results.json. Apply the prompt with: pluralign eval --soft-prompt OUT.

Examples:

  pluralign softprompt --country USA --optimizer de --pop 32 --gens 50 --out runs/sp-USA
  pluralign softprompt --country CHN --optimizer cmaes --pop 16 --gens 20 --resume --out runs/sp-CHN
  pluralign softprompt --country ARA --baseline        # naive and in-context L1 only
  pluralign softprompt --country IND --optimizer pso --knowledge 60
  pluralign softprompt --country USA --optimizer sep-cmaes --subspace-dim 0     # the full space, separable CMA-ES
  pluralign softprompt --country CHN --optimizer nsga2 --knowledge 40 --pop 16 --gens 24

Countries: ISO3 codes, names or Hofstede codes (regions: ARA = Arab countries, AFE, AFW). Saudi Arabia has only LTO and IVR in the Hofstede file; use ARA for all six dimensions.
"""


def register(app: typer.Typer) -> None:
    app.command("softprompt", help=HELP)(softprompt_cmd)


def softprompt_cmd(
    country: str = typer.Option(..., help="Target country: ISO3 code (USA), name, or Hofstede code (ARA = Arab countries)."),
    optimizer: str = typer.Option("de", help="de (differential evolution, pymoo), pso (particle swarm, pymoo), cmaes (cma; full covariance "
                                             "up to 1000 dimensions, diagonal above), sep-cmaes (separable CMA-ES), nsga2 (pymoo NSGA-II: VSM "
                                             "loss and BLEnD accuracy, needs --knowledge)."),
    tokens: int = typer.Option(10, help="Virtual tokens T."),
    pop: int = typer.Option(32, help="Population size."),
    gens: int = typer.Option(50, help="Generations after the initial population."),
    model: str = typer.Option("smollm2-135m", help="Short name (smollm2-135m), hub id, local folder or .gguf file."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default runs/sp-COUNTRY-OPTIMIZER)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoint.pkl."),
    baseline: bool = typer.Option(False, "--baseline", help="Only score the naive and in-context baselines, no search."),
    seed: int = typer.Option(0, help="Seed of the initial population and the optimiser."),
    batch_size: int = typer.Option(64, help="(candidate, item) rows per forward pass."),
    prefix_cache: bool = typer.Option(True, "--prefix-cache/--no-prefix-cache", help="Reuse the KV cache of the prompt prefix shared by all items."),
    patience: int = typer.Option(0, help="Early stop after this many generations without improvement (0 = off)."),
    init_scale: float = typer.Option(1.0, help="Initial candidates: embeddings of random real tokens times this."),
    bound_scale: float = typer.Option(1.0, help="Bounds: per-coordinate [min, max] of the embedding matrix times this."),
    de_variant: str = typer.Option("DE/rand/1/bin", "--de-variant", help="DE strategy (pymoo): DE/rand|best|target-to-best/1|2/bin|exp."),
    de_f: float = typer.Option(0.5, "--de-f", help="DE differential weight F."),
    de_cr: float = typer.Option(0.9, "--de-cr", help="DE crossover probability CR."),
    pso_w: float = typer.Option(0.9, help="PSO inertia weight."),
    cma_sigma: Optional[float] = typer.Option(None, help="CMA-ES initial step as a fraction of the mean bound width (default 0.3 in "
                                                          "the full space, 0.1 in a subspace: BBT's sigma = 1 for z in [-5, 5])."),
    subspace_dim: int = typer.Option(500, help="Search a random subspace of this many dimensions (BBT); 0 = the full T x hidden space "
                                               "(also used when the dimension is not below T x hidden)."),
    subspace_scale: float = typer.Option(1.0, help="A ~ N(0, (scale x embedding std)^2 / d): a unit z moves each prompt coordinate by about scale x std."),
    subspace_bound: float = typer.Option(5.0, help="z is kept in [-bound, bound] per coordinate."),
    autocast: str = typer.Option("off", help="off, or bf16: run the search's matrix products in bfloat16 (about 1.9x faster on CPUs with AVX512-BF16 or AMX, about 5x slower on AVX2-only CPUs; "
                                             "scores differ slightly from fp32). The baselines, the best prompt's reported score and the "
                                             "reworded check stay fp32."),
    constants: Optional[str] = typer.Option(None, help="Index constants C, e.g. 'PDI=50,IDV=50' (default 50 for each)."),
    reduction: str = typer.Option("mean", help="L1 over dimensions: mean or sum."),
    knowledge: int = typer.Option(0, help="BLEnD knowledge questions to score before and after (0 = skip); with nsga2 the search's "
                                          "questions, and up to as many more held out for before / after."),
    chat_template: bool = typer.Option(True, "--chat-template/--no-chat-template", help="Use the model's chat template."),
    reworded_check: bool = typer.Option(True, "--reworded-check/--no-reworded-check", help="After the search, also score naive and the "
                                        "searched prompt on the same 24 items phrased a second way (the shipped rewording): does the "
                                        "prompt's L1 reduction survive other wording? (2 more evaluations.)"),
    dtype: str = typer.Option("auto", help="auto (fp32 on CPU, bf16 on CUDA), fp32, bf16, fp16."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, ..."),
    threads: int = typer.Option(0, help="CPU threads for torch (0 = torch's default)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    from pluralign.cli.main import run_guarded

    run_guarded(_run, **{k: v for k, v in locals().items() if k != "run_guarded"})


def _pareto_with_heldout(res, kev, heldout, model, tok, a, ct, out: Path, hidden: int) -> list[dict]:
    """The front's points with the accuracy of each prompt on the held-out questions (one batched
    pass), written back to OUT/pareto.json."""
    from pluralign.io import atomic_write_json, read_json

    pts = [dict(p) for p in res.pareto]
    for p in pts:
        p["search_accuracy"] = p.pop("accuracy")
    if heldout:
        from pluralign.blackbox.knowledge import KnowledgeEvaluator
        from pluralign.blackbox.population import PopulationConfig

        hev = KnowledgeEvaluator(model, tok, heldout, cfg=PopulationConfig(tokens=a["tokens"], batch_size=a["batch_size"],
                                                                           prefix_cache=a["prefix_cache"]), chat_template=ct)
        h = hev.evaluate(res.pareto_x.reshape(len(pts), a["tokens"], hidden))
        for p, acc in zip(pts, h["accuracy"]):
            p["heldout_accuracy"] = float(acc)
    f = out / "pareto.json"
    if f.exists():
        doc = read_json(f)
        doc.update({"points": pts, "search_questions": kev.n, "heldout_questions": len(heldout or []), "region": kev.region})
        atomic_write_json(f, doc)
    return pts


def _parse_constants(s: str | None) -> dict[str, float]:
    """``--constants 'PDI=50,IDV=40'``: each dimension at most once, each value a finite number."""
    import math

    from pluralign.data.loaders.hofstede import DIMENSIONS

    out = {d: 50.0 for d in DIMENSIONS}
    if s is None:
        return out
    parts = [p for p in s.split(",") if p.strip()]
    if not parts:
        raise PluralignError("names no constant (give e.g. PDI=50,IDV=40, or leave it out for 50 each)", field="--constants")
    seen = set()
    for part in parts:
        k, eq, v = part.partition("=")
        k = k.strip().upper()
        if not eq:
            raise PluralignError(f"{part.strip()!r} is not DIMENSION=NUMBER (e.g. PDI=50)", field="--constants")
        if k not in DIMENSIONS:
            raise PluralignError(f"unknown dimension {k!r} (known: {', '.join(DIMENSIONS)})", field="--constants")
        if k in seen:
            raise PluralignError(f"{k} is given twice", field="--constants")
        seen.add(k)
        try:
            x = float(v)
        except ValueError:
            raise PluralignError(f"{k}: not a number: {v.strip()!r}", field="--constants") from None
        if not math.isfinite(x):
            raise PluralignError(f"{k}: must be a finite number, got {v.strip()!r}", field="--constants")
        out[k] = x
    return out


def _run(**a) -> None:
    quiet_libraries()
    from pluralign.blackbox.optimizers import OptimizerConfig
    from pluralign.blackbox.vsm import VSMConfig
    from pluralign.data.loaders.hofstede import DIMENSIONS, country_target

    from pluralign.cli._validate import validate

    # validate everything cheap before loading a model (the search's options only when there is a search)
    validate("softprompt", a, skip=("tokens", "pop", "gens", "patience") if a["baseline"] else ())
    target = country_target(a["country"])
    vsm = VSMConfig(constants=_parse_constants(a["constants"]), reduction=a["reduction"])
    if target.missing:
        typer.echo(f"note: {target.name} has no score for {', '.join(target.missing)}; the loss uses {', '.join(target.scores)}", err=True)
    out: Path = a["out"] or Path(f"runs/sp-{target.code}-{a['optimizer']}")
    nsga = a["optimizer"] == "nsga2" and not a["baseline"]
    know_items = search_items = None
    if a["knowledge"] > 0:  # read (and check) the BLEnD questions before the model loads
        from pluralign.blackbox.knowledge import blend_region, build_knowledge_set

        region = blend_region(target.iso3 or target.code)
        if nsga:
            pool = build_knowledge_set(region, n=2 * a["knowledge"], seed=a["seed"])
            search_items, know_items = pool[: a["knowledge"]], pool[a["knowledge"] :]
            if len(search_items) < 2:
                raise PluralignError(f"BLEnD has only {len(search_items)} usable questions for {region}", field="--knowledge")
            if not know_items:
                typer.echo(f"note: all {len(search_items)} usable {region} questions go to the search; no held-out check", err=True)
                know_items = None
        else:
            know_items = build_knowledge_set(region, n=a["knowledge"], seed=a["seed"])

    import torch

    if a["threads"]:
        torch.set_num_threads(a["threads"])
    from pluralign.blackbox.population import PopulationConfig, PopulationEvaluator, in_context_system
    from pluralign.blackbox.search import SearchConfig, run_search
    from pluralign.models import load_backbone

    typer.echo(f"loading {a['model']} ...", err=True)
    model, tok = load_backbone(a["model"], dtype=a["dtype"], device=a["device"])
    model.requires_grad_(False)
    ct = None if a["chat_template"] else False
    pcfg = dict(batch_size=a["batch_size"], prefix_cache=a["prefix_cache"], chat_template=ct)
    hidden = model.get_input_embeddings().weight.shape[1]
    empty = torch.zeros(1, 0, hidden)
    sub = a["subspace_dim"]
    if sub and not a["baseline"] and sub >= a["tokens"] * hidden:
        typer.echo(f"note: --subspace-dim {sub} is not below the {a['tokens'] * hidden} prompt numbers ({a['tokens']} tokens x {hidden}): "
                   "searching the full space", err=True)
        sub = 0

    results: dict = {"schema": "pluralign.softprompt/1", "model": a["model"], "country": target.to_dict(), "vsm": {
        "constants": vsm.constants, "reduction": vsm.reduction}, "seed": a["seed"]}
    t0 = time.perf_counter()
    typer.echo("scoring the baselines (naive, in-context) on the 24 VSM items ...", err=True)
    naive_ev = PopulationEvaluator.from_questionnaire(model, tok, cfg=PopulationConfig(tokens=0, **pcfg), vsm=vsm)
    icl_ev = PopulationEvaluator.from_questionnaire(
        model, tok, cfg=PopulationConfig(tokens=0, contexts=(in_context_system(target.iso3 or target.name),), **pcfg), vsm=vsm)
    rows = []
    for name, ev in (("naive", naive_ev), ("in-context", icl_ev)):
        r = ev.evaluate(empty, target)
        results[name] = {"loss": float(r.loss[0]), "scores": dict(zip(DIMENSIONS, r.scores[0].tolist())), "mass": float(r.mean_mass[0])}
        rows.append([name, *r.scores[0].tolist(), float(r.loss[0]), float(r.mean_mass[0])])
        typer.echo(f"  {name}: L1 {float(r.loss[0]):.2f} ({time.perf_counter() - t0:.0f} s)", err=True)
    results["baseline_seconds"] = round(time.perf_counter() - t0, 2)

    if know_items:
        from pluralign.blackbox.knowledge import knowledge_accuracy

        results["knowledge_before"] = knowledge_accuracy(model, tok, know_items, batch_size=a["batch_size"], chat_template=ct)

    if not a["baseline"]:
        ocfg = OptimizerConfig(de_variant=a["de_variant"], de_F=a["de_f"], de_CR=a["de_cr"], pso_w=a["pso_w"], cma_sigma=a["cma_sigma"])
        scfg = SearchConfig(optimizer=a["optimizer"], pop=a["pop"], gens=a["gens"], seed=a["seed"], init_scale=a["init_scale"],
                            bound_scale=a["bound_scale"], patience=a["patience"], opt=ocfg, subspace_dim=sub,
                            subspace_scale=a["subspace_scale"], subspace_bound=a["subspace_bound"])
        scfg_pop = PopulationConfig(tokens=a["tokens"], autocast=a["autocast"], **pcfg)
        ev = PopulationEvaluator.from_questionnaire(model, tok, cfg=scfg_pop, vsm=vsm)
        kev = None
        if nsga:
            from pluralign.blackbox.knowledge import KnowledgeEvaluator

            kev = KnowledgeEvaluator(model, tok, search_items, cfg=scfg_pop, chat_template=ct)
        special = set(getattr(tok, "all_special_ids", []) or [])
        meta = {"model": a["model"], "naive_loss": results["naive"]["loss"], "in_context_loss": results["in-context"]["loss"]}
        res = run_search(ev, target, scfg, out_dir=out, resume=a["resume"], progress=a["progress"], meta=meta, special_ids=special,
                         knowledge=kev)
        best = torch.tensor(res.best_x, dtype=torch.float32).reshape(a["tokens"], hidden)
        exact_cfg = PopulationConfig(tokens=a["tokens"], **pcfg)  # fp32: the reported score and the checks
        best_loss, best_scores, best_mass = res.best_loss, res.best_scores, res.best_mass
        if a["autocast"] != "off":  # the search's objective was approximate: report the best prompt's exact fp32 score
            from pluralign.blackbox.population import rescore_exact

            ex = rescore_exact(model, tok, best, target, cfg=exact_cfg, vsm=vsm)
            best_loss, best_scores, best_mass = ex["loss"], ex["scores"], ex["mass"]
            typer.echo(f"  best prompt re-scored in fp32: L1 {best_loss:.2f} (the {a['autocast']} search saw {res.best_loss:.2f})", err=True)
        results["search"] = {
            "optimizer": a["optimizer"], "tokens": a["tokens"], "pop": a["pop"], "gens": a["gens"], "generations_run": res.generations,
            "evaluations": res.evaluations, "initial_best": res.initial_best, "loss": best_loss, "scores": best_scores,
            "stopped": res.stopped, "seconds": res.history[-1]["seconds"] if res.history else 0.0, "option_mass": best_mass,
            "subspace_dim": sub, "autocast": a["autocast"], "search_loss": res.best_loss,
        }
        if nsga:
            results["search"]["pareto"] = _pareto_with_heldout(res, kev, know_items, model, tok, a, ct, out, hidden)
        rows.append([f"soft prompt ({a['optimizer']})", *[best_scores[d] for d in DIMENSIONS], best_loss,
                     best_mass if best_mass is not None else float("nan")])
        if a["reworded_check"]:
            from pluralign.blackbox.population import reworded_check

            rw = reworded_check(model, tok, best, target, cfg=exact_cfg, vsm=vsm,
                                searched={"naive": results["naive"]["loss"], "prompt": best_loss})
            results["reworded"] = rw
            for name in ("naive", "prompt"):
                label = "naive, reworded items" if name == "naive" else f"soft prompt ({a['optimizer']}), reworded items"
                rows.append([label, *[rw[name]["scores"][d] for d in DIMENSIONS], rw[name]["loss"], rw[name]["mass"]])
        if know_items:
            from pluralign.blackbox.knowledge import knowledge_accuracy
            from pluralign.blackbox.softprompt import SoftPromptModel

            sp = SoftPromptModel(model, best)
            results["knowledge_after"] = knowledge_accuracy(sp, tok, know_items, batch_size=a["batch_size"], chat_template=ct)
    rows.append(["target", *[target.scores.get(d, float("nan")) for d in DIMENSIONS], 0.0, float("nan")])

    from pluralign.io import atomic_write_json

    path = atomic_write_json(out / ("baseline.json" if a["baseline"] else "results.json"), results)
    typer.echo(f"wrote {path}", err=True)
    typer.echo(markdown_table(["", *DIMENSIONS, "L1", "option mass"], rows))
    if "reworded" in results:
        rw = results["reworded"]
        kept = f"{100 * rw['kept']:.0f} %" if rw.get("kept") is not None else "n/a (the search did not improve on naive)"
        typer.echo(f"reworded items: L1 naive {rw['naive']['loss']:.2f} -> prompt {rw['prompt']['loss']:.2f}; "
                   f"share of the searched reduction kept: {kept}")
    if "knowledge_before" in results:
        kb, ka = results["knowledge_before"], results.get("knowledge_after")
        held = ", held out from the search" if nsga else ""
        typer.echo(f"BLEnD {kb['region']} knowledge accuracy (n={kb['n']}{held}, chance {kb['chance']:.2f}): before {kb['accuracy']:.3f}"
                   + (f", after {ka['accuracy']:.3f}" if ka else ""))
