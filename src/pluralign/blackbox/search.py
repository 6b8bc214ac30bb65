"""Soft-prompt search: initialise from real-token embeddings, run an ask/tell optimiser on the VSM
loss, checkpoint the whole state every generation, log the convergence, save the best prompt.

The loss is what the evaluator returns: the fixed-C L1 on the original items for a
:class:`~pluralign.blackbox.population.PopulationEvaluator`, or an objective of
:mod:`~pluralign.blackbox.objective` averaged over its search wordings for an
:class:`~pluralign.blackbox.objective.ObjectiveEvaluator`. Which one (objective, wordings,
calibration countries) is part of the checkpoint's key (a resumed search must use the same) and is
written to ``prompt.json`` under ``objective``.

Files in the output folder (all written atomically):

* ``checkpoint.pkl``: optimiser state (population, RNG), generation, history, best so far;
  ``resume=True`` continues from it (the same seed gives the same run as without interruption);
* ``log.jsonl``: one line per generation (evaluations, best loss, generation best / mean, best
  prompt's dimension scores, option mass, seconds); ``convergence.png`` (at the end): best and mean
  loss per generation;
* ``prompt.safetensors`` + ``prompt.json``: the best prompt so far (loadable by ``pluralign eval --soft-prompt``),
  and the same prompt as a peft PromptTuning adapter, ``adapter_config.json`` +
  ``adapter_model.safetensors`` (``peft.PeftModel.from_pretrained(base, out)`` applies it).

``subspace_dim = d > 0`` searches ``z`` in a random d-dimensional subspace instead (BBT,
:mod:`~pluralign.blackbox.subspace`), for every optimiser; the files are the same (full prompts).

``optimizer = "nsga2"`` minimises two objectives, the VSM loss and minus the accuracy on BLEnD
questions (``knowledge``: a :class:`~pluralign.blackbox.knowledge.KnowledgeEvaluator`); it also
writes ``pareto.json`` (the non-dominated candidates: loss, accuracy, scores, generation found),
``pareto.safetensors`` (their prompts, ``[K, T, hidden]``, tensor ``prompts``) and, at the end,
``pareto.png``. ``prompt.safetensors`` is the front's lowest-loss point.
"""

from __future__ import annotations

import json
import pickle
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from pluralign.adapters.softprompt import save_soft_prompt
from pluralign.blackbox.config import SearchConfig
from pluralign.blackbox.optimizers import OPTIMIZERS
from pluralign.blackbox.population import PopulationEvaluator
from pluralign.blackbox.vsm import scores_dict
from pluralign.data.loaders.hofstede import HofstedeTarget
from pluralign.errors import PluralignError
from pluralign.io import atomic_write_bytes, atomic_write_text

CHECKPOINT = "checkpoint.pkl"
LOG = "log.jsonl"
PARETO = "pareto.json"
PARETO_PROMPTS = "pareto.safetensors"


@dataclass
class SearchResult:
    best_x: np.ndarray
    best_loss: float
    initial_best: float
    best_scores: dict
    history: list[dict]
    generations: int
    evaluations: int
    stopped: str
    out_dir: Path | None = None
    best_mass: float | None = None  # probability the best prompt leaves on the option labels
    pareto: list[dict] | None = None  # nsga2: the non-dominated points (loss, accuracy, scores, ...)
    pareto_x: np.ndarray | None = None  # nsga2: their prompts [K, T*hidden]


def init_population(model, tokens: int, pop: int, *, seed: int, init_scale: float = 1.0, bound_scale: float = 1.0,
                    special_ids: set[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x0[pop, tokens*hidden]`` from embeddings of random real tokens (no special tokens), and the
    per-coordinate bounds (tiled over the tokens)."""
    E = model.get_input_embeddings().weight.detach().float().cpu().numpy()
    V, H = E.shape
    rng = np.random.default_rng(seed)
    allowed = np.setdiff1d(np.arange(V), np.fromiter(special_ids or (), dtype=np.int64))
    ids = rng.choice(allowed, size=(pop, tokens), replace=True)
    x0 = (E[ids] * init_scale).reshape(pop, tokens * H)
    lo = np.minimum(E.min(0), 0) * bound_scale
    hi = np.maximum(E.max(0), 0) * bound_scale
    lower, upper = np.tile(lo, tokens), np.tile(hi, tokens)
    return np.clip(x0, lower, upper), lower, upper


def embedding_std(model) -> float:
    """Standard deviation of all entries of the input embedding matrix (BBT's scale of A)."""
    return float(model.get_input_embeddings().weight.detach().float().std())


class _Plateau:
    def __init__(self, patience: int, min_delta: float):
        self.patience, self.min_delta, self.best, self.stale = patience, min_delta, float("inf"), 0

    def update(self, best: float) -> bool:
        if best < self.best - self.min_delta:
            self.best, self.stale = best, 0
        else:
            self.stale += 1
        return self.patience > 0 and self.stale >= self.patience


def run_search(
    evaluator: PopulationEvaluator,
    target: HofstedeTarget,
    cfg: SearchConfig,
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    meta: dict | None = None,
    special_ids: set[int] | None = None,
    plot: bool = True,
    knowledge=None,
    settings: dict | None = None,
) -> SearchResult:
    """Minimise the evaluator's VSM loss to ``target`` over soft prompts of ``evaluator.cfg.tokens`` tokens
    (with ``nsga2``: the loss and minus the accuracy of ``knowledge``, a KnowledgeEvaluator).

    ``settings``: further values that shape the search (the CLI passes the model, the objective,
    the wordings, the index constants, the reduction, the chat template and autocast), recorded in the checkpoint. A
    resumed search must have the same ``cfg`` (only ``gens`` may change) and the same settings;
    otherwise it is refused, naming every value that differs."""
    if cfg.optimizer not in OPTIMIZERS:
        raise PluralignError(f"unknown optimizer {cfg.optimizer!r} (available: {', '.join(sorted(OPTIMIZERS))})", field="optimizer")
    if cfg.pop < 4 and cfg.optimizer == "de":
        raise PluralignError("differential evolution needs a population of at least 4", field="pop")
    if cfg.pop < 2:
        raise PluralignError("the population needs at least 2 candidates", field="pop")
    if cfg.subspace_dim < 0:
        raise PluralignError(f"the subspace dimension must be 0 (off) or positive, got {cfg.subspace_dim}", field="subspace_dim")
    multi = OPTIMIZERS[cfg.optimizer].n_obj > 1
    if multi and knowledge is None:
        raise PluralignError(f"{cfg.optimizer} optimises the VSM loss and the BLEnD knowledge accuracy: it needs knowledge questions "
                             "(CLI: --knowledge N)", field="knowledge")
    out = Path(out_dir) if out_dir else None
    T, H = evaluator.cfg.tokens, evaluator.hidden
    know_key = f"{knowledge.region}:{knowledge.n}" if multi else None
    obj_key = objective_key(evaluator)
    state = None
    if resume:
        state = load_checkpoint(out)
        for k, v in (("optimizer", cfg.optimizer), ("tokens", T), ("hidden", H), ("target", target.code),
                     ("subspace_dim", cfg.subspace_dim), ("knowledge", know_key), *obj_key.items()):
            got = state["key"].get(k, _OLD_KEY_DEFAULTS.get(k))
            if got != v:
                raise PluralignError(f"checkpoint was made with {k}={got!r}, not {v!r}", file=out / CHECKPOINT, field=k)
        _check_resume_settings(state, cfg, settings, out / CHECKPOINT)
        state["config"] = asdict(cfg)  # the same but for gens: the record says how far it now runs
    if state is None:
        from pluralign.blackbox.subspace import make_search_optimizer

        x0, lower, upper = init_population(evaluator.model, T, cfg.pop, seed=cfg.seed, init_scale=cfg.init_scale,
                                           bound_scale=cfg.bound_scale, special_ids=special_ids)
        opt = make_search_optimizer(cfg.optimizer, x0, lower, upper, cfg.opt, seed=cfg.seed, subspace_dim=cfg.subspace_dim,
                                    embedding_std=embedding_std(evaluator.model) if cfg.subspace_dim else None,
                                    subspace_scale=cfg.subspace_scale, subspace_bound=cfg.subspace_bound)
        state = {"key": {"optimizer": cfg.optimizer, "tokens": T, "hidden": H, "target": target.code, "subspace_dim": cfg.subspace_dim,
                         "knowledge": know_key, **obj_key},
                 "opt": opt, "gen": -1, "history": [], "initial_best": None, "best_scores": None, "elapsed": 0.0,
                 "plateau": _Plateau(cfg.patience, cfg.min_delta), "config": asdict(cfg), "settings": dict(settings or {})}
    opt = state["opt"]
    history: list[dict] = state["history"]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        desc = cfg.optimizer + (f"@{cfg.subspace_dim}" if cfg.subspace_dim else "")
        bar = tqdm(total=cfg.gens + 1, initial=state["gen"] + 1, desc=f"{desc} {target.code}", unit="gen", dynamic_ncols=True)
    stopped = "generations"
    t_start = time.perf_counter() - state["elapsed"]
    while state["gen"] < cfg.gens:
        gen = state["gen"] + 1
        X = opt.ask()
        res = evaluator.evaluate(X, target)
        f = res.loss
        improved = float(f.min()) < opt.best_f
        acc = None
        if multi:
            kres = knowledge.evaluate(X)
            acc = kres["accuracy"]
            opt.tell(X, np.stack([f, -acc], axis=1))
            _remember(state, opt, gen, X, f, acc, res)
        else:
            opt.tell(X, f)
        if improved:
            state["best_scores"] = scores_dict(res.scores[int(np.argmin(f))])
            state["best_mass"] = float(res.mean_mass[int(np.argmin(f))])
        if gen == 0:
            state["initial_best"] = float(f.min())
        state["gen"] = gen
        state["elapsed"] = time.perf_counter() - t_start
        history.append({
            "gen": gen, "evals": opt.n_evals, "best": opt.best_f, "gen_best": float(f.min()), "gen_mean": float(f.mean()),
            "gen_std": float(f.std()), "mass": float(res.mean_mass.mean()), "best_scores": state["best_scores"],
            "seconds": round(state["elapsed"], 2),
        })
        if multi:
            history[-1].update({"gen_best_accuracy": float(acc.max()), "gen_mean_accuracy": float(acc.mean()),
                                "front": int(len(opt.front_F)), "front_best_accuracy": float(-opt.front_F[:, 1].min())})
        if bar is not None:
            bar.update(1)
            bar.set_postfix(best=f"{opt.best_f:.3f}", gen_mean=f"{f.mean():.2f}")
        stop = state["plateau"].update(opt.best_f)
        if out is not None:
            _save(out, state, opt, target, T, H, meta, model_config=getattr(getattr(evaluator, "model", None), "config", None))
        if opt.best_f <= cfg.target_loss:
            stopped = "target_loss"
            break
        if stop:
            stopped = f"no improvement for {cfg.patience} generations"
            break
    if bar is not None:
        bar.close()
    if out is not None and plot and history:
        plot_convergence(history, out / "convergence.png", title=f"{label_of(cfg)} → {target.name}", ylabel=loss_label(obj_key))
        if multi:
            plot_pareto(state, pareto_points(state, opt), out / "pareto.png", title=f"{label_of(cfg)} → {target.name}, {knowledge.region}")
    return SearchResult(
        best_x=np.asarray(opt.best_x), best_loss=float(opt.best_f), initial_best=float(state["initial_best"]),
        best_scores=state["best_scores"], history=history, generations=state["gen"], evaluations=opt.n_evals,
        stopped=stopped, out_dir=out, best_mass=state.get("best_mass"),
        pareto=pareto_points(state, opt) if multi else None, pareto_x=np.asarray(opt.front_X) if multi else None,
    )


#: SearchConfig fields a resumed search may change
RESUMABLE_SEARCH_CHANGES = ("gens",)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict) and k == "opt":
            out.update(_flat(v))
        else:
            out[prefix + k] = v
    return out


def load_checkpoint(out: str | Path | None) -> dict:
    """The search state saved in ``out/checkpoint.pkl``; one clear error when there is none or it
    cannot be read."""
    out = Path(out) if out else None
    if out is None or not (out / CHECKPOINT).exists():
        raise PluralignError("nothing to resume: no checkpoint", file=(out / CHECKPOINT) if out else None)
    try:
        state = pickle.loads((out / CHECKPOINT).read_bytes())
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise PluralignError(f"unreadable checkpoint ({type(e).__name__})", file=out / CHECKPOINT) from None
    if not isinstance(state, dict) or not isinstance(state.get("key"), dict):
        raise PluralignError("not a soft-prompt search checkpoint", file=out / CHECKPOINT)
    return state


def check_resume(out: str | Path, cfg: SearchConfig, settings: dict | None, *, skip: tuple[str, ...] = ()) -> None:
    """Before any work: refuse ``--resume`` when ``out`` has no readable checkpoint or its
    configuration / settings differ from ``cfg`` / ``settings`` (``skip``: fields not known yet)."""
    state = load_checkpoint(out)
    _check_resume_settings(state, cfg, settings, Path(out) / CHECKPOINT, skip=skip)


def _check_resume_settings(state: dict, cfg: SearchConfig, settings: dict | None, ckpt: Path, *, skip: tuple[str, ...] = ()) -> None:
    """Refuse a resume whose search configuration or settings differ from the checkpoint's, naming
    each (as a flag: ``pop`` -> ``--pop``). A checkpoint that recorded no settings (made before
    they were recorded) is checked on its configuration only."""
    old, new = _flat(state.get("config") or {}), _flat(asdict(cfg))
    diff = [(k, old[k], new.get(k)) for k in old if k not in RESUMABLE_SEARCH_CHANGES + skip and old[k] != new.get(k)]
    if "settings" in state:
        was, now = state["settings"] or {}, dict(settings or {})
        diff += [(k, was.get(k), now.get(k)) for k in sorted(set(was) | set(now)) if was.get(k) != now.get(k)]
    if diff:
        said = ", ".join(f"--{k.lower().replace('_', '-')} {a!r} -> {b!r}" for k, a, b in diff)
        raise PluralignError(f"--resume with different settings than the checkpoint's ({said}); give the same values, "
                             "or start afresh in another --out", file=ckpt, field="--resume")


#: what a checkpoint made before the objective was recorded was searched on
_OLD_KEY_DEFAULTS = {"subspace_dim": 0, "objective": "l1-c50", "wordings": ["original"], "calibration": None}


def objective_key(evaluator) -> dict:
    """The objective a search minimises, as recorded in its checkpoint and prompt.json: name, search
    wordings and calibration countries (an :class:`~pluralign.blackbox.objective.ObjectiveEvaluator`),
    or the fixed-C L1 on the original items (a plain :class:`PopulationEvaluator`)."""
    key = getattr(evaluator, "objective_key", None)
    return dict(key) if key else {"objective": "l1-c50", "wordings": ["original"], "calibration": None}


def loss_label(key: dict) -> str:
    from pluralign.blackbox.objective import OBJECTIVE_LABELS

    name = key.get("objective", "l1-c50")
    words = key.get("wordings") or ["original"]
    return f"VSM loss ({OBJECTIVE_LABELS.get(name, name)}; {'+'.join(words)})"


def label_of(cfg: SearchConfig) -> str:
    return cfg.optimizer + (f" (subspace d={cfg.subspace_dim})" if cfg.subspace_dim else "")


def _key(x: np.ndarray) -> str:
    import hashlib

    return hashlib.sha1(np.ascontiguousarray(x, dtype=np.float64).tobytes()).hexdigest()


def _remember(state: dict, opt, gen: int, X, f, acc, res) -> None:
    """Multi-objective runs: every evaluated (loss, accuracy) for the plot; for the candidates on the
    front, the generation that found them and their dimension scores (dropped when they leave it)."""
    state.setdefault("evaluated", []).extend([float(a), float(b)] for a, b in zip(f, acc))
    old = state.get("front_info", {})
    fresh = {_key(X[i]): i for i in range(len(f))}
    info = {}
    for x in opt.front_X:
        k = _key(x)
        if k in old:
            info[k] = old[k]
        elif k in fresh:
            i = fresh[k]
            info[k] = {"gen": gen, "scores": scores_dict(res.scores[i]), "mass": float(res.mean_mass[i])}
    state["front_info"] = info


def pareto_points(state: dict, opt) -> list[dict]:
    """The non-dominated points, lowest loss first."""
    pts = []
    info = state.get("front_info", {})
    for x, F in zip(opt.front_X, opt.front_F):
        meta = info.get(_key(x), {})
        pts.append({"loss": float(F[0]), "accuracy": float(-F[1]), "gen": meta.get("gen"), "scores": meta.get("scores"),
                    "option_mass": meta.get("mass")})
    return pts


def plot_pareto(state: dict, points: list[dict], path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev = np.asarray(state.get("evaluated", []), dtype=float).reshape(-1, 2)
    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=110)
    if len(ev):
        ax.scatter(ev[:, 0], ev[:, 1], s=8, alpha=0.35, color="grey", label="evaluated")
    fl = [p["loss"] for p in points]
    fa = [p["accuracy"] for p in points]
    ax.step(fl, fa, where="post", color="C3", alpha=0.6)
    ax.scatter(fl, fa, s=22, color="C3", label=f"Pareto front ({len(points)})", zorder=3)
    ax.set_xlabel("VSM loss (lower is better)")
    ax.set_ylabel("knowledge accuracy (higher is better)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return _save_png(fig, path)


def _save(out: Path, state: dict, opt, target: HofstedeTarget, T: int, H: int, meta: dict | None, *, model_config=None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / CHECKPOINT, pickle.dumps(state))
    atomic_write_text(out / LOG, "".join(json.dumps(h) + "\n" for h in state["history"]))
    m = {**(meta or {}), "country": target.code, "country_name": target.name, "target": target.scores,
         "loss": opt.best_f, "initial_best_loss": state["initial_best"], "scores": state["best_scores"],
         "option_mass": state.get("best_mass"), "optimizer": state["key"]["optimizer"], "generations": state["gen"],
         "evaluations": opt.n_evals, "config": state["config"],
         "objective": {k: state["key"].get(k, _OLD_KEY_DEFAULTS[k]) for k in ("objective", "wordings", "calibration")}}
    save_soft_prompt(out, torch.tensor(np.asarray(opt.best_x, dtype=np.float32).reshape(T, H)), m, model_config=model_config)
    if opt.front_X is not None:
        from safetensors.torch import save

        from pluralign.io import atomic_write_json

        pts = pareto_points(state, opt)
        atomic_write_json(out / PARETO, {"schema": "pluralign.pareto/1", "objectives": ["vsm_l1_loss", "knowledge_accuracy"],
                                         "vsm_objective": m["objective"],
                                         "country": target.code, "optimizer": state["key"]["optimizer"], "generations": state["gen"],
                                         "evaluations": opt.n_evals, "prompts_file": PARETO_PROMPTS, "points": pts})
        t = torch.tensor(np.asarray(opt.front_X, dtype=np.float32).reshape(-1, T, H)).contiguous()
        atomic_write_bytes(out / PARETO_PROMPTS, save({"prompts": t}, metadata={"format": "pluralign.pareto/1"}))


def _save_png(fig, path: Path) -> Path:
    """Write a matplotlib figure as PNG atomically (at the figure's own dpi) and close it."""
    from pluralign._plot import save_png

    fig.tight_layout()
    return save_png(fig, path, dpi=fig.dpi)


def plot_convergence(history: list[dict], path: Path, title: str = "", ylabel: str = "VSM L1 loss") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = [h["gen"] for h in history]
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=110)
    ax.plot(g, [h["best"] for h in history], "-o", ms=3, label="best so far")
    ax.plot(g, [h["gen_mean"] for h in history], "--", alpha=0.7, label="generation mean")
    ax.set_xlabel("generation")
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return _save_png(fig, path)


__all__ = ["SearchConfig", "SearchResult", "embedding_std", "init_population", "pareto_points", "plot_convergence", "plot_pareto",
           "run_search"]
