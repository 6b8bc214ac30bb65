"""``pluralign softprompt``: black-box soft-prompt alignment to a country's Hofstede scores (VSM 2013)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from pluralign.cli._common import (ChatTemplate, Device, Dtype, Model, Progress, Threads, command_of, field_option, markdown_table, option,
                                   quiet_libraries, shared_option)
from pluralign.errors import PluralignError

HELP = """Align a frozen model to a country's Hofstede dimensions with a searched soft prompt.

T virtual-token embeddings (--tokens) are prepended to the model's input. A gradient-free optimiser (--optimizer de | pso | cmaes | sep-cmaes | nsga2) searches them so that the model's answers to the 24 VSM 2013 items, read as option probabilities, give the country's published scores on the six dimensions (PDI, IDV, MAS, UAI, LTO, IVR). The whole population is scored in batched forward passes.

The objective (--objective) compares the model's index scores W.m with the country's over the dimensions it has (mean by default). The VSM manual leaves each index's constant C to the researcher, so: l1-c50 is the L1 with fixed constants (--constants, 50 each: the objective used before, it depends on C); l1-calibrated fits C per dimension so that the model without a prompt scores the mean of the --calibration-countries (the target is never one of them); diff (default) compares between-country differences, the prompt's scores minus each calibration country's in-context scores against Hofstede's differences, so C cancels. The search averages the objective over the item wordings of --wordings (default original,reworded); a third wording, reworded2, is never searched: the report gives the fit on it. Every convention is reported beside the others, on every wording. The seed paper's convention (its C, sum or mean, wording) is unknown, so its numbers are not comparable.

By default the search runs in a random subspace (Black-Box Tuning, Sun et al. 2022): prompt = x_init + A z with z of --subspace-dim coordinates (500; 0 = search all T x hidden numbers), A a fixed seeded Gaussian matrix scaled to the embeddings' spread (--subspace-scale), z in [-B, B] (--subspace-bound 5). It applies to every optimiser; a resumed run regenerates A from the seed.

--optimizer nsga2 (pymoo NSGA-II) searches two objectives at once, the VSM loss and the accuracy on --knowledge N BLEnD questions of the country's region; it writes the Pareto front to pareto.json (+ pareto.safetensors with its prompts, pareto.png) and scores N further, held-out questions before and after.

Before the search the two baselines are scored: naive (no prompt) and in-context (a "you are a person from ..." system message). With --knowledge N, accuracy on N BLEnD cultural-knowledge questions of the country's region is measured before and after.

The output folder gets prompt.safetensors + prompt.json (the best prompt so far; the objective under "objective"), the same prompt as a peft PromptTuning adapter (adapter_config.json + adapter_model.safetensors: peft.PeftModel.from_pretrained(base, OUT) loads it), checkpoint.pkl (resume with --resume, with the same settings: model, objective, wordings, calibration countries, constants, population, seed, optimiser settings; only --gens may change, to run longer). A folder holds one search: a rerun into it without --resume, or into a training or evaluation folder, is refused, log.jsonl, convergence.png and results.json. Apply the prompt with: pluralign eval --soft-prompt OUT.

Examples:

  pluralign softprompt --country USA --optimizer de --pop 32 --gens 50 --out runs/sp-USA
  pluralign softprompt --country CHN --optimizer cmaes --pop 16 --gens 20 --resume --out runs/sp-CHN
  pluralign softprompt --country ARA --baseline        # naive and in-context L1 only
  pluralign softprompt --country IND --optimizer pso --knowledge 60
  pluralign softprompt --country USA --optimizer sep-cmaes --subspace-dim 0     # the full space, separable CMA-ES
  pluralign softprompt --country CHN --optimizer nsga2 --knowledge 40 --pop 16 --gens 24
  pluralign softprompt --country USA --objective l1-c50 --wordings original      # the objective used before issue 29

Countries: ISO3 codes, names or Hofstede codes (regions: ARA = Arab countries, AFE, AFW). Saudi Arabia has only LTO and IVR in the Hofstede file; use ARA for all six dimensions.
"""


def register(app: typer.Typer) -> None:
    app.command("softprompt", help=HELP)(softprompt_cmd)




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
    from pluralign.blackbox.objective import (
        OBJECTIVE_LABELS, SEED_PAPER_CONVENTION, WORDINGS, Objective, parse_calibration, parse_objective, parse_wordings,
        same_unit,
    )

    objective_name = parse_objective(a["objective"])
    search_wordings = parse_wordings(a["wordings"])
    try:
        target = country_target(a["country"])
    except PluralignError as e:  # a flag, not the package's scores file, is what the user gets wrong
        raise PluralignError(e.message, field="--country") from None
    given = parse_calibration(a["calibration_countries"])
    calib = [c for c in given if not same_unit(c, target)]
    if not calib:
        raise PluralignError(f"names only the target {target.code}: the calibration needs other countries", field="--calibration-countries")
    if len(calib) < len(given):
        typer.echo(f"note: {target.name} is the target, so it is left out of the calibration countries", err=True)
    vsm = VSMConfig(constants=_parse_constants(a["constants"]), reduction=a["reduction"])
    if target.missing:
        typer.echo(f"note: {target.name} has no score for {', '.join(target.missing)}; the loss uses {', '.join(target.scores)}", err=True)
    out: Path = a["out"] or Path(f"runs/sp-{target.code}-{a['optimizer']}")
    nsga = a["optimizer"] == "nsga2" and not a["baseline"]
    from pluralign.blackbox.search import SearchConfig, check_resume, run_search
    from pluralign.io import claim_output

    # what shapes the search besides its SearchConfig: a resume must use the same
    settings = {"model": a["model"], "objective": objective_name, "wordings": list(search_wordings), "constants": dict(vsm.constants),
                "reduction": vsm.reduction, "chat_template": a["chat_template"], "autocast": a["autocast"]}
    ocfg = OptimizerConfig(de_variant=a["de_variant"], de_F=a["de_f"], de_CR=a["de_cr"], pso_w=a["pso_w"], cma_sigma=a["cma_sigma"])

    def search_config(sub: int) -> SearchConfig:
        return SearchConfig(optimizer=a["optimizer"], pop=a["pop"], gens=a["gens"], seed=a["seed"], init_scale=a["init_scale"],
                            bound_scale=a["bound_scale"], patience=a["patience"], opt=ocfg, subspace_dim=sub,
                            subspace_scale=a["subspace_scale"], subspace_bound=a["subspace_bound"])

    claim_output(out, "softprompt", field="--out", create=False)  # not another kind's folder; one writer at a time
    if not a["baseline"]:
        if a["resume"]:  # the subspace dimension is checked once the model's width is known
            check_resume(out, search_config(a["subspace_dim"]), settings, skip=("subspace_dim",))
        elif any((out / f).exists() for f in ("checkpoint.pkl", "prompt.safetensors", "results.json")):
            raise PluralignError("output folder already holds a soft-prompt search; use --resume to continue it or another --out",
                                 file=out, field="--out")
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

    import numpy as np
    import torch

    if a["threads"]:
        torch.set_num_threads(a["threads"])
    from pluralign.blackbox.objective import ObjectiveEvaluator, build_calibration, readout_table, score_on_wordings
    from pluralign.blackbox.population import PopulationConfig, in_context_system
    from pluralign.models import load_backbone

    typer.echo(f"loading {a['model']} ...", err=True)
    model, tok = load_backbone(a["model"], dtype=a["dtype"], device=a["device"])
    model.requires_grad_(False)
    ct = None if a["chat_template"] else False
    pcfg = dict(batch_size=a["batch_size"], prefix_cache=a["prefix_cache"], chat_template=ct)
    hidden = model.get_input_embeddings().weight.shape[1]
    sub = a["subspace_dim"]
    if sub and not a["baseline"] and sub >= a["tokens"] * hidden:
        typer.echo(f"note: --subspace-dim {sub} is not below the {a['tokens'] * hidden} prompt numbers ({a['tokens']} tokens x {hidden}): "
                   "searching the full space", err=True)
        sub = 0
    # the wordings scored for the report: every shipped one (or only the searched ones with --no-reworded-check)
    scored = tuple(w for w in WORDINGS if w in search_wordings or a["reworded_check"] or a["baseline"])
    held_out = [w for w in scored if w not in search_wordings]
    first = search_wordings[0]
    C = np.array([vsm.constants[d] for d in DIMENSIONS])

    t0 = time.perf_counter()
    typer.echo(f"scoring the baselines (naive, in-context) and {len(calib)} calibration countries on {len(scored)} wordings "
               f"of the 24 VSM items ...", err=True)
    icl_text = in_context_system(target.iso3 or target.name)
    cal, extra = build_calibration(model, tok, calib, wordings=scored, cfg=PopulationConfig(tokens=0, **pcfg), extra_contexts=(icl_text,))
    objective = Objective(objective_name, vsm=vsm, calibration=cal)
    results: dict = {
        "schema": "pluralign.softprompt/1", "model": a["model"], "country": target.to_dict(),
        "vsm": {"constants": vsm.constants, "reduction": vsm.reduction}, "seed": a["seed"],
        "objective": {"name": objective_name, "label": OBJECTIVE_LABELS[objective_name], "search_wordings": list(search_wordings),
                      "report_wordings": list(scored), "held_out_wordings": held_out, "calibration_countries": [c.code for c in calib],
                      "calibrated_constants": {w: dict(zip(DIMENSIONS, cal.constants(target, w).tolist())) for w in scored},
                      "fixed_constants": vsm.constants, "reduction": vsm.reduction, "seed_paper_convention": SEED_PAPER_CONVENTION},
        "calibration": cal.to_dict(),
    }
    conditions = {"naive": (cal.naive, extra["naive_mass"]), "in-context": (extra["extra"][icl_text]["raw"], extra["extra"][icl_text]["mass"])}
    readouts: dict[str, dict] = {}
    rows = []
    for name, (raw, mass) in conditions.items():
        ro = readouts[name] = readout_table(objective, raw, target)
        loss = float(np.mean([ro[w][objective_name] for w in search_wordings]))
        scores = dict(zip(DIMENSIONS, (raw[first] + C).tolist()))
        results[name] = {"loss": loss, "scores": scores, "mass": mass[first], "readouts": ro}
        rows.append([name, *scores.values(), loss, mass[first]])
        typer.echo(f"  {name}: {objective_name} {loss:.2f} ({time.perf_counter() - t0:.0f} s)", err=True)
    results["baseline_seconds"] = round(time.perf_counter() - t0, 2)

    if know_items:
        from pluralign.blackbox.knowledge import knowledge_accuracy

        results["knowledge_before"] = knowledge_accuracy(model, tok, know_items, batch_size=a["batch_size"], chat_template=ct)

    if not a["baseline"]:
        scfg = search_config(sub)
        scfg_pop = PopulationConfig(tokens=a["tokens"], autocast=a["autocast"], **pcfg)
        ev = ObjectiveEvaluator(model, tok, objective, wordings=search_wordings, cfg=scfg_pop)
        kev = None
        if nsga:
            from pluralign.blackbox.knowledge import KnowledgeEvaluator

            kev = KnowledgeEvaluator(model, tok, search_items, cfg=scfg_pop, chat_template=ct)
        special = set(getattr(tok, "all_special_ids", []) or [])
        meta = {"model": a["model"], "naive_loss": results["naive"]["loss"], "in_context_loss": results["in-context"]["loss"]}
        claim_output(out, "softprompt", field="--out")  # created and locked now that the run writes into it
        res = run_search(ev, target, scfg, out_dir=out, resume=a["resume"], progress=a["progress"], meta=meta, special_ids=special,
                         knowledge=kev, settings=settings)
        best = torch.tensor(res.best_x, dtype=torch.float32).reshape(a["tokens"], hidden)
        exact_cfg = PopulationConfig(tokens=a["tokens"], **pcfg)  # fp32: the reported score and the checks
        sc = score_on_wordings(model, tok, best, wordings=scored, cfg=exact_cfg)
        ro = readouts["prompt"] = readout_table(objective, sc["raw"], target)
        best_loss, best_scores, best_mass = res.best_loss, res.best_scores, res.best_mass
        if a["autocast"] != "off":  # the search's objective was approximate: report the best prompt's exact fp32 score
            best_loss = float(np.mean([ro[w][objective_name] for w in search_wordings]))
            best_scores, best_mass = dict(zip(DIMENSIONS, (sc["raw"][first] + C).tolist())), sc["mass"][first]
            typer.echo(f"  best prompt re-scored in fp32: {objective_name} {best_loss:.2f} (the {a['autocast']} search saw "
                       f"{res.best_loss:.2f})", err=True)
        results["search"] = {
            "optimizer": a["optimizer"], "tokens": a["tokens"], "pop": a["pop"], "gens": a["gens"], "generations_run": res.generations,
            "evaluations": res.evaluations, "initial_best": res.initial_best, "loss": best_loss, "scores": best_scores,
            "stopped": res.stopped, "seconds": res.history[-1]["seconds"] if res.history else 0.0, "option_mass": best_mass,
            "subspace_dim": sub, "autocast": a["autocast"], "search_loss": res.best_loss, "objective": objective_name,
            "wordings": list(search_wordings), "readouts": ro, "mass_by_wording": sc["mass"],
        }
        if nsga:
            results["search"]["pareto"] = _pareto_with_heldout(res, kev, know_items, model, tok, a, ct, out, hidden)
        rows.append([f"soft prompt ({a['optimizer']})", *[best_scores[d] for d in DIMENSIONS], best_loss,
                     best_mass if best_mass is not None else float("nan")])
        results["wordings"] = wording_report(readouts, search_wordings, scored)
        if know_items:
            from pluralign.blackbox.knowledge import knowledge_accuracy
            from pluralign.adapters.softprompt import SoftPromptModel

            sp = SoftPromptModel(model, best)
            results["knowledge_after"] = knowledge_accuracy(sp, tok, know_items, batch_size=a["batch_size"], chat_template=ct)
    rows.append(["target", *[target.scores.get(d, float("nan")) for d in DIMENSIONS], 0.0, float("nan")])

    from pluralign.io import atomic_write_json

    claim_output(out, "softprompt", field="--out")
    path = atomic_write_json(out / ("baseline.json" if a["baseline"] else "results.json"), results)
    typer.echo(f"wrote {path}", err=True)
    typer.echo(f"Scores with the fixed constants on the {first} items; {objective_name} = the search objective, mean over "
               f"{', '.join(search_wordings)}:")
    typer.echo(markdown_table(["", *DIMENSIONS, objective_name, "option mass"], rows))
    typer.echo("")
    typer.echo(conventions_markdown(readouts, search_wordings, objective_name))
    if "wordings" in results:
        for w in held_out:
            r = results["wordings"][w]
            red = r["reduction"].get(objective_name)
            typer.echo(f"held-out wording {w} ({objective_name}): naive {r['naive'][objective_name]:.2f} -> prompt "
                       f"{r['prompt'][objective_name]:.2f}" + (f" ({100 * red:.0f} % lower)" if red is not None else ""))
    typer.echo(f"seed paper's convention: {SEED_PAPER_CONVENTION}")
    if "knowledge_before" in results:
        kb, ka = results["knowledge_before"], results.get("knowledge_after")
        held = ", held out from the search" if nsga else ""
        typer.echo(f"BLEnD {kb['region']} knowledge accuracy (n={kb['n']}{held}, chance {kb['chance']:.2f}): before {kb['accuracy']:.3f}"
                   + (f", after {ka['accuracy']:.3f}" if ka else ""))


def wording_report(readouts: dict, search_wordings, scored) -> dict:
    """Per wording: whether it was searched, naive / in-context / prompt under every convention, the
    prompt's reduction from naive (``1 - prompt / naive``) and the share of the searched reduction it
    keeps (``(naive - prompt) / (naive - prompt)`` on the searched wordings; None where the search did
    not improve on naive)."""
    import numpy as np

    out = {}
    for w in scored:
        naive, prompt = readouts["naive"][w], readouts["prompt"][w]
        red, kept = {}, {}
        for n in naive:
            red[n] = 1.0 - prompt[n] / naive[n] if naive[n] > 0 else None
            gain = float(np.mean([readouts["naive"][s][n] - readouts["prompt"][s][n] for s in search_wordings]))
            kept[n] = (naive[n] - prompt[n]) / gain if gain > 0 else None
        out[w] = {"searched": w in search_wordings, "naive": naive, "in-context": readouts["in-context"][w], "prompt": prompt,
                  "reduction": red, "kept": kept}
    return out


def conventions_markdown(readouts: dict, search_wordings, objective_name: str) -> str:
    """Every convention beside the others: rows (condition, wording), columns the objectives."""
    from pluralign.blackbox.objective import OBJECTIVES

    names = [n for n in OBJECTIVES if any(n in v for r in readouts.values() for v in r.values())]
    rows = []
    for cond, ro in readouts.items():
        label = cond if cond != "prompt" else "soft prompt"
        for w, vals in ro.items():
            tag = "searched" if w in search_wordings else "held out"
            rows.append([label, f"{w} ({tag})", *[vals.get(n, float("nan")) for n in names]])
    head = ["", "wording", *[f"{n}{' (searched)' if n == objective_name else ''}" for n in names]]
    return ("Every convention beside the others (l1-c50: fixed C; l1-calibrated: C fitted on the calibration countries; "
            "diff: between-country differences, C cancels):\n" + markdown_table(head, rows))


def _softprompt_params() -> list:
    """The command's options in --help order: the search's settings (:mod:`pluralign.blackbox.config`,
    their help, defaults and accepted values), the shared ones and the command's own."""
    from pluralign.blackbox.config import PopulationConfig as P
    from pluralign.blackbox.config import SearchConfig as S
    from pluralign.blackbox.config import VSMConfig as V

    f = field_option
    return [
        option("country", str, ..., help="Target country: ISO3 code (USA), name, or Hofstede code (ARA = Arab countries)."),
        f(S, "optimizer"), f(P, "tokens"), f(S, "pop"), f(S, "gens"), shared_option("model", str, Model()),
        option("out", Optional[Path], None, help="Output folder (default runs/sp-COUNTRY-OPTIMIZER)."),
        option("resume", bool, False, "--resume", help="Continue from OUT/checkpoint.pkl."),
        option("baseline", bool, False, "--baseline", help="Only score the naive and in-context baselines, no search."),
        f(S, "seed"), f(P, "batch_size"), f(P, "prefix_cache"), f(S, "patience"), f(S, "init_scale"), f(S, "bound_scale"),
        f(S, "de_variant"), f(S, "de_f"), f(S, "de_cr"), f(S, "pso_w"), f(S, "cma_sigma"), f(S, "subspace_dim"), f(S, "subspace_scale"),
        f(S, "subspace_bound"), f(P, "autocast"),
        option("objective", str, "diff", help="What the search minimises: diff (between-country differences against the "
                                               "calibration countries' in-context scores; C cancels), l1-calibrated (L1 with C fitted "
                                               "on the calibration countries, not the target) or l1-c50 (L1 with the fixed --constants; "
                                               "depends on C). All three are reported."),
        option("wordings", str, "original,reworded", help="Item wordings the search averages its objective over: original, "
                                                           "reworded (comma-separated). reworded2 is never searched: the report "
                                                           "gives the fit on it."),
        option("calibration_countries", str, ",".join(("GBR", "DEU", "FRA", "SWE", "POL", "RUS", "TUR", "JPN", "KOR", "IDN", "BRA", "MEX")),
               help="Countries (ISO3, Hofstede codes or names) that calibrate C (l1-calibrated) "
                                                   "and serve as references of the differences (diff); the target is left out if listed."),
        option("constants", Optional[str], None, help="The fixed index constants C of l1-c50, e.g. 'PDI=50,IDV=50' (default 50 for each)."),
        f(V, "reduction"),
        option("knowledge", int, 0, help="BLEnD knowledge questions to score before and after (0 = skip); with nsga2 the search's "
                                          "questions, and up to as many more held out for before / after."),
        shared_option("chat_template", bool, ChatTemplate()),
        option("reworded_check", bool, True, "--reworded-check/--no-reworded-check", help="Score the baselines, the calibration and the "
                                        "searched prompt on every shipped wording (original, reworded, reworded2), not only on "
                                        "--wordings: does the prompt's reduction survive wordings it was not searched on?"),
        shared_option("dtype", str, Dtype()), shared_option("device", str, Device()), shared_option("threads", int, Threads()),
        shared_option("progress", bool, Progress()),
    ]


#: flags from the search's settings and the command's own (``_softprompt_params``)
softprompt_cmd = command_of(_softprompt_params(), _run)
