"""Routing overlap: do different groups use the same experts for the same question?

The CuMA paper compares how much the experts chosen for different demographic groups overlap on
value questions (WorldValuesBench), where the groups should differ, and on questions with one right
answer (GSM8K), where they need not. Here the same comparison on the run's own value questions and
on simple arithmetic word problems generated in code (:func:`arithmetic_items`, the consensus
questions; asked in the same survey format with four numeric options).

Every unit (country of group data; distinct respondent profile of individual data) is asked every
question with the run's prompt format; per router layer, the overlap of two units on a question is
``|top-k(u) ∩ top-k(v)| / k`` of the experts the router selects, averaged over all unit pairs and
questions, at

* ``answer`` — the answer position (the last prompt token), and
* ``query`` — the question's own tokens: the longest common token suffix of the units' prompts
  of that question (the question, the options and the generation prompt after the persona),
  averaged over those tokens.

Chance level (two random k-subsets of E experts) is ``k / E``.
"""

from __future__ import annotations

import random
from typing import Sequence

import numpy as np

from pluralign.data.items import SurveyItem
from pluralign.errors import PluralignError

SCHEMA = "pluralign.analysis.overlap/1"

_NAMES = ("Ana", "Ben", "Chen", "Dara", "Emeka", "Fatima", "Goran", "Hana", "Ivan", "Jun", "Kofi", "Lena")
_THINGS = ("apple", "book", "pencil", "stamp", "marble", "coin", "card", "shell")


def arithmetic_items(n: int = 8, *, seed: int = 0) -> list[SurveyItem]:
    """``n`` arithmetic word problems (addition, subtraction, multiplication, division) as
    nominal survey items with four numeric options, the right answer among them; deterministic."""
    rng = random.Random(f"arith|{seed}")
    items = []
    for i in range(n):
        name, thing = rng.choice(_NAMES), rng.choice(_THINGS)
        kind = i % 4
        if kind == 0:
            a, b = rng.randint(3, 40), rng.randint(2, 30)
            text, ans = f"{name} has {a} {thing}s and gets {b} more. How many {thing}s does {name} have now?", a + b
        elif kind == 1:
            a = rng.randint(20, 60)
            b = rng.randint(2, a - 5)
            text, ans = f"{name} has {a} {thing}s and gives {b} of them away. How many {thing}s are left?", a - b
        elif kind == 2:
            a, b = rng.randint(2, 9), rng.randint(3, 12)
            text, ans = f"A box holds {a} {thing}s. How many {thing}s are in {b} boxes?", a * b
        else:
            b, q = rng.randint(2, 9), rng.randint(2, 12)
            text, ans = f"{b * q} {thing}s are shared equally among {b} children. How many {thing}s does each child get?", q
        wrong = set()
        while len(wrong) < 3:
            w = ans + rng.choice([-1, 1]) * rng.randint(1, max(3, ans // 4))
            if w > 0 and w != ans:
                wrong.add(w)
        opts = sorted({ans, *wrong})
        items.append(SurveyItem(id=f"ARITH{i + 1}", text=text, options=tuple(str(o) for o in opts), ordinal=False,
                                category="arithmetic", source="pluralign.analysis.overlap"))
    return items


def pair_overlap(topk_sets: np.ndarray, n_experts: int, k: int) -> np.ndarray:
    """``topk_sets`` ``[U, L, (S,) k]`` expert indices of U units; the mean over unit pairs (and over
    the S tokens) of ``|A ∩ B| / k`` per layer: ``[L]``."""
    U = topk_sets.shape[0]
    if U < 2:
        raise PluralignError("routing overlap needs at least two groups", field="--max-units")
    hot = np.zeros((*topk_sets.shape[:-1], n_experts), dtype=np.float32)
    np.put_along_axis(hot, topk_sets.astype(np.int64), 1.0, axis=-1)
    flat = hot.reshape(U, hot.shape[1], -1, n_experts)  # [U, L, S, E]
    inter = np.einsum("ulse,vlse->uvls", flat, flat) / k  # [U, U, L, S]
    iu = np.triu_indices(U, 1)
    return inter[iu].mean(axis=(0, 2))


def overlap_of(record, unit_index: Sequence[int], query_index: Sequence[int], queries: Sequence[int], n_units: int) -> dict:
    """Per layer, the mean overlap over ``queries`` (indices into the query list), at the answer
    position and over the query's shared tokens."""
    ui, qi = np.asarray(unit_index), np.asarray(query_index)
    ans, tok = [], []
    for q in queries:
        rows = [np.where((ui == u) & (qi == q))[0][0] for u in range(n_units)]
        ans.append(pair_overlap(record.last_topk[rows], record.n_experts, record.k))
        if record.tail_topk is not None:
            S = min(record.tail_topk[r].shape[1] for r in rows)
            tok.append(pair_overlap(np.stack([record.tail_topk[r][:, -S:] for r in rows]), record.n_experts, record.k))
    out = {"answer": np.mean(ans, axis=0).tolist()}
    if tok:
        out["query"] = np.mean(tok, axis=0).tolist()
    return out


def compute_overlap(run, *, model: str | None = None, device: str = "auto", dtype: str = "auto", part: str = "all",
                    max_items: int | None = 8, n_consensus: int = 8, max_units: int | None = 20, batch_size: int = 8,
                    k: int | None = None, seed: int = 0, progress: bool = False, loaded=None) -> dict:
    """Record the run's routing for its groups on value and arithmetic questions; overlap per layer."""
    from pluralign.analysis._prep import load_run_data, load_run_model, spread, unit_prompts, units_of
    from pluralign.analysis.gates import common_suffix, record_prompts, token_ids
    from pluralign.analysis.runs import prompt_config

    if n_consensus < 1:
        raise PluralignError(f"must be a positive whole number, got {n_consensus}", field="--n-consensus")
    ds, exs = load_run_data(run, part)
    units = units_of(ds, exs, max_units=max_units, seed=seed)
    if len(units) < 2:
        raise PluralignError(f"routing overlap needs at least two groups; the run's {part} part has {len(units)}", field="--part")
    value = [ds.items[q] for q in spread(sorted({e.item_id for e in exs}), max_items)]
    consensus = arithmetic_items(n_consensus, seed=seed)
    items = value + consensus
    cfg = prompt_config(run)
    m, tok, pkw = loaded or load_run_model(run, model=model, device=device, dtype=dtype)
    prompts, profiles, ui, qi = unit_prompts(tok, units, items, cfg)
    ids = token_ids(tok, prompts, m)
    suffix = {}
    for q in range(len(items)):
        suffix[q] = common_suffix([ids[i] for i in range(len(prompts)) if qi[i] == q])
    tails = [max(1, suffix[q]) for q in qi]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(prompts), desc="routing", unit="prompt", leave=False)
    try:
        rec = record_prompts(m, tok, prompts, profiles=profiles, profile_kwargs=pkw, batch_size=batch_size, tails=tails, k=k,
                             progress=bar.update if bar else None)
    finally:
        if bar:
            bar.close()
    nv = len(value)
    res_v = overlap_of(rec, ui, qi, range(nv), len(units))
    res_c = overlap_of(rec, ui, qi, range(nv, len(items)), len(units))
    summary = {}
    for pos in res_v:
        summary[pos] = {"value": float(np.mean(res_v[pos])), "consensus": float(np.mean(res_c[pos]))}
        summary[pos]["consensus_minus_value"] = summary[pos]["consensus"] - summary[pos]["value"]
    return {
        "schema": SCHEMA, "run": str(run.path), "name": run.name, "method": run.method, "kind": ds.kind,
        "settings": {"part": part, "value_items": [it.id for it in value], "consensus_items": [{"id": it.id, "text": it.text,
                     "options": list(it.options)} for it in consensus], "units": [u.id for u in units], "prompt_method": cfg.method,
                     "k": rec.k, "n_experts": rec.n_experts, "seed": seed,
                     "query_tokens": {"value": [suffix[q] for q in range(nv)], "consensus": [suffix[q] for q in range(nv, len(items))]}},
        "chance": rec.k / rec.n_experts,
        "layers": rec.layers,
        "value": res_v, "consensus": res_c, "summary": summary,
    }


def overlap_rows(res: dict) -> tuple[list[str], list[list]]:
    header = ["layer", "value (answer)", "consensus (answer)"]
    has_q = "query" in res["value"]
    if has_q:
        header += ["value (query tokens)", "consensus (query tokens)"]
    rows = []
    for i, layer in enumerate(res["layers"]):
        row = [layer, res["value"]["answer"][i], res["consensus"]["answer"][i]]
        if has_q:
            row += [res["value"]["query"][i], res["consensus"]["query"][i]]
        rows.append(row)
    mean = ["mean", res["summary"]["answer"]["value"], res["summary"]["answer"]["consensus"]]
    if has_q:
        mean += [res["summary"]["query"]["value"], res["summary"]["query"]["consensus"]]
    rows.append(mean)
    return header, rows


def plot_overlap(res: dict, path):
    from pluralign._plot import pyplot, save_png

    plt = pyplot()
    L = len(res["layers"])
    x = np.arange(L)
    fig, ax = plt.subplots(figsize=(max(5.5, 0.35 * L + 3), 3.8))
    ax.plot(x, res["value"]["answer"], "-o", color="#1f77b4", ms=4, label="value questions, answer position")
    ax.plot(x, res["consensus"]["answer"], "-s", color="#ff7f0e", ms=4, label="arithmetic questions, answer position")
    if "query" in res["value"]:
        ax.plot(x, res["value"]["query"], "--", color="#1f77b4", label="value questions, question tokens")
        ax.plot(x, res["consensus"]["query"], "--", color="#ff7f0e", label="arithmetic questions, question tokens")
    ax.axhline(res["chance"], color="grey", ls=":", lw=1, label=f"chance (k/E = {res['chance']:.2f})")
    ax.set_xticks(x)
    ax.set_xticklabels([lay.rsplit(".", 1)[-1] for lay in res["layers"]], fontsize=7)
    ax.set_xlabel("router layer")
    ax.set_ylabel(f"shared top-{res['settings']['k']} experts between groups")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(f"routing overlap of {len(res['settings']['units'])} groups ({res.get('name', '')})", fontsize=9)
    fig.tight_layout()
    return save_png(fig, path)


def write_overlap(res: dict, out, *, prefix: str = "overlap") -> dict:
    from pathlib import Path

    from pluralign.io import atomic_write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"plot": plot_overlap(res, out / f"{prefix}.png")}
    paths["json"] = atomic_write_json(out / f"{prefix}.json", dict(res, plots={"plot": paths["plot"].name}))
    return paths


__all__ = ["SCHEMA", "arithmetic_items", "pair_overlap", "overlap_of", "compute_overlap", "overlap_rows", "plot_overlap", "write_overlap"]
