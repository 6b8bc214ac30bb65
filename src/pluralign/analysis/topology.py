"""Routing topology: do groups that are culturally close route alike?

For a mixture-of-experts run (CuMA, MixLoRA, HydraLoRA) the adapted model reads every group's
prompts (the run's own prompt format: persona, labels, chat template) for the same questions, and
the router probabilities (softmax over the experts) are recorded per layer
(:mod:`pluralign.analysis.gates`). A group's **routing signature** is its mean gate vector per layer,
over the answer-position tokens (``answer``: the last prompt token, where the option is read) and
over all prompt tokens (``all``); the signature space is the concatenation over layers.

Groups are countries for group data (labelled by their Inglehart–Welzel zone from
:mod:`pluralign.data.culture`), distinct respondent profiles for individual data (labelled by zone,
age band, sex and education). For each labelling:

* **silhouette** of the labels in signature space (Euclidean), and
* **k-NN agreement**: the share of each group's ``k`` nearest groups that carry its label,

each beside a shuffled-label baseline (the labels permuted over the groups ``n_perm`` times: the
baseline mean and sd) and the permutation p-value ``(1 + #{shuffled >= observed}) / (1 + n_perm)``.
A 2-D map (PCA, and t-SNE with a perplexity below the number of groups) shows the signatures
coloured by zone.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np


SCHEMA = "pluralign.analysis.topology/1"
POSITIONS = ("answer", "all")


# --------------------------------------------------------------------------------- statistics
def _codes(labels: Sequence) -> np.ndarray:
    _, inv = np.unique(np.asarray([str(x) for x in labels]), return_inverse=True)
    return inv


def distances(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=float).reshape(len(X), -1)
    sq = (X * X).sum(1)
    D = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * X @ X.T, 0.0))
    np.fill_diagonal(D, 0.0)
    return D


def silhouette(D: np.ndarray, codes: np.ndarray) -> float:
    """Mean silhouette of the labelling ``codes`` given the distance matrix ``D`` (sklearn's
    definition: a sample alone in its label scores 0)."""
    codes = np.asarray(codes)
    C = int(codes.max()) + 1
    onehot = np.zeros((len(codes), C))
    onehot[np.arange(len(codes)), codes] = 1.0
    sums = D @ onehot  # [n, C]
    counts = onehot.sum(0)
    own = counts[codes]
    a = sums[np.arange(len(codes)), codes] / np.maximum(own - 1, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_other = sums / counts[None, :]
    mean_other[np.arange(len(codes)), codes] = np.inf
    mean_other[:, counts == 0] = np.inf
    b = mean_other.min(1)
    denom = np.maximum(a, b)
    s = np.where(denom > 0, (b - a) / np.where(denom > 0, denom, 1.0), 0.0)
    s[own <= 1] = 0.0
    return float(s.mean())


def neighbour_index(D: np.ndarray, k: int) -> np.ndarray:
    """``[n, k]`` indices of each sample's ``k`` nearest other samples (ties: lower index first)."""
    D = D.copy()
    np.fill_diagonal(D, np.inf)
    return np.argsort(D, axis=1, kind="stable")[:, :k]


def knn_agreement(nn: np.ndarray, codes: np.ndarray) -> float:
    codes = np.asarray(codes)
    return float((codes[nn] == codes[:, None]).mean())


def permutation_test(stat: Callable[[np.ndarray], float], codes: np.ndarray, *, n_perm: int = 1000, seed: int = 0) -> dict:
    """The statistic on ``codes`` and on ``n_perm`` shuffles of them."""
    rng = np.random.default_rng(seed)
    obs = stat(codes)
    null = np.array([stat(rng.permutation(codes)) for _ in range(n_perm)]) if n_perm > 0 else np.array([])
    p = (1 + int((null >= obs - 1e-12).sum())) / (1 + n_perm) if n_perm > 0 else None
    return {"observed": obs, "baseline_mean": float(null.mean()) if len(null) else None,
            "baseline_sd": float(null.std()) if len(null) else None, "p": p, "n_perm": n_perm}


def label_stats(X: np.ndarray, labels: Sequence, *, neighbours: int = 3, n_perm: int = 1000, seed: int = 0) -> dict:
    """Silhouette and k-NN agreement of ``labels`` (None = unlabelled, left out) among the rows
    of ``X``, each with its shuffled-label baseline and permutation p-value."""
    keep = [i for i, lab in enumerate(labels) if lab is not None]
    labs = [str(labels[i]) for i in keep]
    counts = {lab: labs.count(lab) for lab in sorted(set(labs))}
    out: dict = {"n_units": len(keep), "n_labels": len(counts), "counts": counts}
    if len(keep) < 3 or len(counts) < 2:
        out["skipped"] = f"needs at least 3 labelled groups and 2 labels (have {len(keep)} groups, {len(counts)} labels)"
        return out
    if max(counts.values()) < 2:
        out["skipped"] = "every group has a label of its own"
        return out
    D = distances(np.asarray(X)[keep])
    codes = _codes(labs)
    if len(counts) < len(keep):
        out["silhouette"] = permutation_test(lambda c: silhouette(D, c), codes, n_perm=n_perm, seed=seed)
    k = max(1, min(int(neighbours), len(keep) - 1))
    nn = neighbour_index(D, k)
    out["knn"] = permutation_test(lambda c: knn_agreement(nn, c), codes, n_perm=n_perm, seed=seed + 1)
    out["knn"]["k"] = k
    return out


def perplexity_for(n: int) -> float:
    """A t-SNE perplexity valid for ``n`` points (strictly below ``n``): (n - 1) / 3, at most 30."""
    return float(min(30.0, max(1.0, (n - 1) / 3.0)))


def embed_2d(X: np.ndarray, *, seed: int = 0) -> dict:
    """PCA and t-SNE coordinates of the rows of ``X`` (t-SNE needs at least 4 rows)."""
    from sklearn.decomposition import PCA

    X = np.asarray(X, dtype=float).reshape(len(X), -1)
    out: dict = {"pca": None, "tsne": None, "perplexity": None, "pca_explained": None}
    if len(X) >= 2:
        n_comp = min(2, X.shape[1], len(X))
        pca = PCA(n_components=n_comp, random_state=seed).fit(X)
        Y = pca.transform(X)
        if n_comp == 1:
            Y = np.hstack([Y, np.zeros((len(Y), 1))])
        out["pca"] = Y.tolist()
        out["pca_explained"] = [float(v) for v in pca.explained_variance_ratio_]
    if len(X) >= 4:
        from sklearn.manifold import TSNE

        perp = perplexity_for(len(X))
        ts = TSNE(n_components=2, perplexity=perp, init="pca", learning_rate="auto", random_state=seed, max_iter=500)
        out["tsne"] = ts.fit_transform(X).tolist()
        out["perplexity"] = perp
    return out


# --------------------------------------------------------------------------------- signatures
def signatures(record, unit_index: Sequence[int], n_units: int) -> dict[str, np.ndarray]:
    """Per position, ``[U, L, E]``: the mean router probabilities of each unit's prompts."""
    ui = np.asarray(unit_index)
    out = {}
    for pos, arr in (("answer", record.last), ("all", record.mean)):
        sig = np.zeros((n_units, arr.shape[1], arr.shape[2]), dtype=np.float64)
        for u in range(n_units):
            sig[u] = arr[ui == u].mean(0)
        out[pos] = sig
    return out


def topology_stats(sigs: dict[str, np.ndarray], units, *, neighbours: int = 3, n_perm: int = 1000, seed: int = 0) -> dict:
    """Per position and label kind, :func:`label_stats`; plus the 2-D maps."""
    kinds = list(dict.fromkeys(k for u in units for k in u.labels))
    stats, maps = {}, {}
    for pos, sig in sigs.items():
        X = sig.reshape(len(sig), -1)
        stats[pos] = {kind: label_stats(X, [u.labels.get(kind) for u in units], neighbours=neighbours, n_perm=n_perm, seed=seed)
                      for kind in kinds}
        maps[pos] = embed_2d(X, seed=seed)
    return {"stats": stats, "maps": maps}


def compute_topology(run, *, model: str | None = None, device: str = "auto", dtype: str = "auto", part: str = "all",
                     max_items: int | None = 8, max_units: int | None = 200, batch_size: int = 8, neighbours: int = 3,
                     n_perm: int = 1000, seed: int = 0, progress: bool = False, loaded=None) -> dict:
    """Record the run's routing for its groups and compute signatures, statistics and maps.
    ``loaded``: an already loaded ``(model, tokenizer, profile_kwargs)`` of the run."""
    from pluralign.analysis._prep import load_run_data, load_run_model, spread, unit_prompts, units_of
    from pluralign.analysis.gates import record_prompts
    from pluralign.analysis.runs import prompt_config

    ds, exs = load_run_data(run, part)
    units = units_of(ds, exs, max_units=max_units, seed=seed)
    item_ids = spread(sorted({e.item_id for e in exs}), max_items)
    items = [ds.items[q] for q in item_ids]
    cfg = prompt_config(run)
    m, tok, pkw = loaded or load_run_model(run, model=model, device=device, dtype=dtype)
    prompts, profiles, ui, _ = unit_prompts(tok, units, items, cfg)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(prompts), desc="routing", unit="prompt", leave=False)
    try:
        rec = record_prompts(m, tok, prompts, profiles=profiles, profile_kwargs=pkw, batch_size=batch_size,
                             progress=bar.update if bar else None)
    finally:
        if bar:
            bar.close()
    sigs = signatures(rec, ui, len(units))
    res = topology_stats(sigs, units, neighbours=neighbours, n_perm=n_perm, seed=seed)
    return {
        "schema": SCHEMA, "run": str(run.path), "name": run.name, "method": run.method, "kind": ds.kind,
        "settings": {"part": part, "items": item_ids, "prompt_method": cfg.method, "labels": cfg.labels, "n_prompts": len(prompts),
                     "neighbours": neighbours, "n_perm": n_perm, "seed": seed, "gates": "router softmax probabilities",
                     "n_experts": rec.n_experts, "top_k": rec.k},
        "layers": rec.layers,
        "units": [{"id": u.id, "labels": u.labels} for u in units],
        "signatures": {pos: np.round(s, 5).tolist() for pos, s in sigs.items()},
        **res,
    }


def stats_rows(res: dict) -> tuple[list[str], list[list]]:
    """One row per (position, label kind): observed vs shuffled baseline and p."""
    header = ["tokens", "labels", "groups", "label values", "silhouette", "shuffled (mean ± sd)", "p",
              "k-NN agreement", "shuffled (mean ± sd)", "p"]
    rows = []
    for pos, by in res["stats"].items():
        for kind, st in by.items():
            if "skipped" in st:
                rows.append([pos, kind, st["n_units"], st["n_labels"], st["skipped"], "", "", "", "", ""])
                continue
            sil, knn = st.get("silhouette"), st["knn"]

            def trip(t):
                if not t:
                    return ["n/a", "", ""]
                return [t["observed"], f"{t['baseline_mean']:.3f} ± {t['baseline_sd']:.3f}", t["p"]]

            rows.append([pos, kind, st["n_units"], st["n_labels"], *trip(sil), *trip(knn)])
    return header, rows


# --------------------------------------------------------------------------------- plots
def plot_map(res: dict, path, *, color_by: str = "zone") -> "Path":
    """The signatures' PCA and t-SNE maps (rows: answer-position / all-token signatures),
    coloured by ``color_by``; group names written beside the points when there are few."""
    from pluralign._plot import PALETTE, pyplot, save_png

    plt = pyplot()
    units = res["units"]
    labs = [str(u["labels"].get(color_by)) for u in units]
    values = sorted(set(labs))
    colour = {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(values)}
    positions = [p for p in POSITIONS if p in res["maps"]]
    fig, axes = plt.subplots(len(positions), 2, figsize=(10.5, 4.1 * len(positions)), squeeze=False)
    for r, pos in enumerate(positions):
        mp = res["maps"][pos]
        for c, (key, title) in enumerate((("pca", "PCA"), ("tsne", "t-SNE"))):
            ax = axes[r][c]
            Y = mp.get(key)
            if Y is None:
                ax.text(0.5, 0.5, f"{title}: too few groups", ha="center", va="center", transform=ax.transAxes)
                ax.set_axis_off()
                continue
            Y = np.asarray(Y)
            for v in values:
                sel = [i for i, lab in enumerate(labs) if lab == v]
                ax.scatter(Y[sel, 0], Y[sel, 1], s=36, color=colour[v], label=v, edgecolor="k", linewidth=0.3)
            if len(units) <= 40:
                for i, u in enumerate(units):
                    ax.annotate(u["id"], Y[i], fontsize=6.5, xytext=(3, 2), textcoords="offset points")
            sub = f" (perplexity {mp['perplexity']:.1f})" if key == "tsne" and mp.get("perplexity") else ""
            if key == "pca" and mp.get("pca_explained"):
                sub = " (" + ", ".join(f"{100 * v:.0f} %" for v in mp["pca_explained"]) + " of variance)"
            st = res["stats"][pos].get(color_by, {})
            sil = (st.get("silhouette") or {})
            extra = f"\nsilhouette {sil['observed']:.2f} (shuffled {sil['baseline_mean']:.2f}, p={sil['p']:.3f})" if sil else ""
            ax.set_title(f"{pos} tokens, {title}{sub}{extra}", fontsize=8.5)
            ax.set_xticks([])
            ax.set_yticks([])
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False, title=color_by)
    fig.suptitle(f"routing signatures of {res.get('name', '')} ({len(units)} groups, {len(res['layers'])} router layers)", fontsize=10)
    fig.tight_layout(rect=(0, 0.04 + 0.025 * math.ceil(len(values) / 4), 1, 0.97))
    return save_png(fig, path)


def write_topology(res: dict, out, *, prefix: str = "topology") -> dict:
    from pathlib import Path

    from pluralign.io import atomic_write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"map": plot_map(res, out / f"{prefix}-map.png")}
    if res["kind"] == "individual":
        from pluralign.analysis._prep import ATTRIBUTES

        for a in ATTRIBUTES:
            paths[f"map_{a}"] = plot_map(res, out / f"{prefix}-map-{a}.png", color_by=a)
    data = dict(res, plots={k: p.name for k, p in paths.items()})
    paths["json"] = atomic_write_json(out / f"{prefix}.json", data)
    return paths


__all__ = ["SCHEMA", "silhouette", "knn_agreement", "neighbour_index", "permutation_test", "label_stats", "perplexity_for",
           "embed_2d", "signatures", "topology_stats", "compute_topology", "stats_rows", "plot_map", "write_topology", "distances"]
