"""Soft-prompt search: initialise from real-token embeddings, run an ask/tell optimiser on the VSM
loss, checkpoint the whole state every generation, log the convergence, save the best prompt.

Files in the output folder (all written atomically):

* ``checkpoint.pkl``: optimiser state (population, RNG), generation, history, best so far;
  ``resume=True`` continues from it (the same seed gives the same run as without interruption);
* ``log.jsonl``: one line per generation (evaluations, best loss, generation best / mean, best
  prompt's dimension scores, option mass, seconds); ``convergence.png`` (at the end): best and mean
  loss per generation;
* ``prompt.safetensors`` + ``prompt.json``: the best prompt so far (loadable by ``pluralign eval --soft-prompt``).
"""

from __future__ import annotations

import json
import pickle
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from pluralign.blackbox.optimizers import OptimizerConfig, make_optimizer
from pluralign.blackbox.population import PopulationEvaluator
from pluralign.blackbox.softprompt import save_soft_prompt
from pluralign.blackbox.vsm import scores_dict
from pluralign.data.loaders.hofstede import HofstedeTarget
from pluralign.errors import PluralignError
from pluralign.io import atomic_write_bytes, atomic_write_text

CHECKPOINT = "checkpoint.pkl"
LOG = "log.jsonl"


@dataclass
class SearchConfig:
    optimizer: str = field(default="de", metadata={"help": "de (differential evolution), pso (particle swarm) or cmaes."})
    pop: int = field(default=32, metadata={"help": "Population size (candidates per generation)."})
    gens: int = field(default=50, metadata={"help": "Generations after the initial population."})
    seed: int = field(default=0, metadata={"help": "Seed of the initial population and of the optimiser."})
    init_scale: float = field(default=1.0, metadata={"help": "Initial candidates are embeddings of random real tokens times this."})
    bound_scale: float = field(default=1.0, metadata={"help": "Bounds per hidden coordinate: [min, max] of the embedding matrix times this."})
    patience: int = field(default=0, metadata={"help": "Stop after this many generations without improvement (0 = never)."})
    min_delta: float = field(default=1e-3, metadata={"help": "Smallest decrease of the best loss that counts as an improvement."})
    target_loss: float = field(default=0.0, metadata={"help": "Stop once the best loss is at or below this."})
    opt: OptimizerConfig = field(default_factory=OptimizerConfig, metadata={"help": "Optimiser hyper-parameters."})


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
) -> SearchResult:
    """Minimise the VSM L1 loss to ``target`` over soft prompts of ``evaluator.cfg.tokens`` tokens."""
    if cfg.pop < 4 and cfg.optimizer == "de":
        raise PluralignError("differential evolution needs a population of at least 4", field="pop")
    if cfg.pop < 2:
        raise PluralignError("the population needs at least 2 candidates", field="pop")
    out = Path(out_dir) if out_dir else None
    T, H = evaluator.cfg.tokens, evaluator.hidden
    state = None
    if resume:
        if out is None or not (out / CHECKPOINT).exists():
            raise PluralignError("nothing to resume: no checkpoint", file=(out / CHECKPOINT) if out else None)
        try:
            state = pickle.loads((out / CHECKPOINT).read_bytes())
        except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
            raise PluralignError(f"unreadable checkpoint ({type(e).__name__})", file=out / CHECKPOINT) from None
        for k, v in (("optimizer", cfg.optimizer), ("tokens", T), ("hidden", H), ("target", target.code)):
            if state["key"].get(k) != v:
                raise PluralignError(f"checkpoint was made with {k}={state['key'].get(k)!r}, not {v!r}", file=out / CHECKPOINT, field=k)
    if state is None:
        x0, lower, upper = init_population(evaluator.model, T, cfg.pop, seed=cfg.seed, init_scale=cfg.init_scale,
                                           bound_scale=cfg.bound_scale, special_ids=special_ids)
        opt = make_optimizer(cfg.optimizer, x0, lower, upper, cfg.opt, seed=cfg.seed)
        state = {"key": {"optimizer": cfg.optimizer, "tokens": T, "hidden": H, "target": target.code},
                 "opt": opt, "gen": -1, "history": [], "initial_best": None, "best_scores": None, "elapsed": 0.0,
                 "plateau": _Plateau(cfg.patience, cfg.min_delta), "config": asdict(cfg)}
    opt = state["opt"]
    history: list[dict] = state["history"]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.gens + 1, initial=state["gen"] + 1, desc=f"{cfg.optimizer} {target.code}", unit="gen", dynamic_ncols=True)
    stopped = "generations"
    t_start = time.perf_counter() - state["elapsed"]
    while state["gen"] < cfg.gens:
        gen = state["gen"] + 1
        X = opt.ask()
        res = evaluator.evaluate(X, target)
        f = res.loss
        improved = float(f.min()) < opt.best_f
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
        if bar is not None:
            bar.update(1)
            bar.set_postfix(best=f"{opt.best_f:.3f}", gen_mean=f"{f.mean():.2f}")
        stop = state["plateau"].update(opt.best_f)
        if out is not None:
            _save(out, state, opt, target, T, H, meta)
        if opt.best_f <= cfg.target_loss:
            stopped = "target_loss"
            break
        if stop:
            stopped = f"no improvement for {cfg.patience} generations"
            break
    if bar is not None:
        bar.close()
    if out is not None and plot and history:
        plot_convergence(history, out / "convergence.png", title=f"{cfg.optimizer} → {target.name}")
    return SearchResult(
        best_x=np.asarray(opt.best_x), best_loss=float(opt.best_f), initial_best=float(state["initial_best"]),
        best_scores=state["best_scores"], history=history, generations=state["gen"], evaluations=opt.n_evals,
        stopped=stopped, out_dir=out, best_mass=state.get("best_mass"),
    )


def _save(out: Path, state: dict, opt, target: HofstedeTarget, T: int, H: int, meta: dict | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / CHECKPOINT, pickle.dumps(state))
    atomic_write_text(out / LOG, "".join(json.dumps(h) + "\n" for h in state["history"]))
    m = {**(meta or {}), "country": target.code, "country_name": target.name, "target": target.scores,
         "loss": opt.best_f, "initial_best_loss": state["initial_best"], "scores": state["best_scores"],
         "option_mass": state.get("best_mass"), "optimizer": state["key"]["optimizer"], "generations": state["gen"],
         "evaluations": opt.n_evals, "config": state["config"]}
    save_soft_prompt(out, torch.tensor(np.asarray(opt.best_x, dtype=np.float32).reshape(T, H)), m)


def plot_convergence(history: list[dict], path: Path, title: str = "") -> Path:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = [h["gen"] for h in history]
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=110)
    ax.plot(g, [h["best"] for h in history], "-o", ms=3, label="best so far")
    ax.plot(g, [h["gen_mean"] for h in history], "--", alpha=0.7, label="generation mean")
    ax.set_xlabel("generation")
    ax.set_ylabel("VSM L1 loss")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


__all__ = ["SearchConfig", "SearchResult", "init_population", "plot_convergence", "run_search"]
