"""The evaluation runner: dataset + model + method → predictions → metrics → results dict.

Identical prompts (e.g. ``vanilla`` for every country) are scored once. Model-free reference
predictors (uniform; mean answer distribution of the *training* groups) are always reported beside
the model. The results dict follows ``docs/results-schema.md`` (schema ``pluralign.eval/1``).
"""

from __future__ import annotations

import datetime as _dt
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

from pluralign import __version__
from pluralign.data.profile import Profile
from pluralign.data.tasks import IndividualExample, SurveyDataset, mean_distributions
from pluralign.evaluation import metrics as M
from pluralign.evaluation.prompts import Predictions, build_prompts, expand_by_profile, progress_bar
from pluralign.evaluation.readouts import predict_readout
from pluralign.evaluation.scoring import OptionScorer

SCHEMA = "pluralign.eval/1"


@dataclass
class EvalConfig:
    method: str = "vanilla"
    k_shot: int = 3
    batch_size: int = 16
    scoring: str = "next-token"  # or "loglik"
    labels: str = "auto"  # auto | digits | letters
    chat_template: bool | None = None  # None = use the model's if it has one
    seed: int = 0
    max_length: int | None = None
    keep_predictions: bool = True
    map_k: int = 3  # training countries averaged by the cultural-map nearest-neighbour reference
    map_bandwidth: float = 0.5  # map-distance bandwidth of the cultural-map kernel reference
    text_k: int = 5  # training questions averaged by the text-similarity reference (unseen questions)
    text_encoder: str = "minilm-l6"  # question-text encoder of the text-similarity reference (or 'tfidf')
    map_before: int | None = None  # map wave: coordinates from before this survey year (None: latest)
    # read-outs (pluralign.evaluation.readouts) and bootstrap intervals (pluralign.evaluation.bootstrap)
    readout: str = "logprob"  # logprob | verbalized | sampled
    samples: int = 8  # answers sampled per prompt (sampled read-out)
    temperature: float = 1.0  # sampling temperature (sampled read-out)
    max_new_tokens: int | None = None  # generated tokens (default: 24 + 10 K verbalized, 8 sampled)
    bootstrap: int = 1000  # bootstrap replicates for the intervals (0 = none)
    bootstrap_unit: str = "both"  # both (groups x items) | groups | items | cells
    confidence: float = 0.95


# ---------------------------------------------------------------------------------- metrics
def compute_metrics(test: SurveyDataset, probs: Sequence[np.ndarray | None]) -> tuple[dict, dict]:
    """Metrics of predicted distributions against the human answers of ``test``.

    Returns ``(overall, per_group)``. Examples whose prediction is ``None`` are skipped (a
    reference predictor may not cover every item); ``coverage`` reports the fraction scored.

    Ties: a predicted distribution's mode is never silently the lowest option (``np.argmax``).
    Options within 1e-9 of the maximum are all modes (:func:`metrics.modes`); accuracy gives each
    example ``|pred_modes ∩ human_modes| / |pred_modes|`` (individual task: the respondent's answer
    is the only human mode; distributional task: the group's tied majority options all count), and
    the hard-label metrics (macro-F1, ``emd_wvb``) split a tied row into one row per tied option of
    weight 1/m. Without ties every definition is the plain argmax one.

    ``macro_f1`` is sklearn's macro-F1 with the (question, option) pair as the class, all test rows
    pooled; ``macro_f1_option_label`` pools the option *numbers* across questions (option 0 of
    every question one class; the headline before issue 29); ``macro_f1_per_question`` averages
    the macro-F1 within each question. ``nll`` (individual data, also per group) is the mean
    negative log-likelihood in nats of the respondent's answer under the predicted distribution,
    each probability clipped below at 1e-12 (:func:`metrics.nll`). ``emd_wvb`` is WorldValuesBench's
    individual-data EMD (per question, W1 between the predicted and true answer positions scaled
    to [0, 1], then averaged over questions); ``emd`` is ours (per group × question cell).
    ``entropy`` is normalised by log K, ``entropy_nats`` is not.
    """
    keep = [i for i, p in enumerate(probs) if p is not None]
    exs = [test.examples[i] for i in keep]
    ps = [np.asarray(probs[i], dtype=float) for i in keep]
    out: dict = {"n": len(exs), "coverage": len(exs) / max(1, len(test.examples))}
    if not exs:
        return out, {}
    out["entropy"] = float(np.mean([M.entropy(p) for p in ps]))
    out["entropy_nats"] = float(np.mean([M.entropy(p, normalised=False) for p in ps]))
    per_group: dict[str, dict] = {}
    groups: dict[str, list[int]] = defaultdict(list)
    for j, e in enumerate(exs):
        groups[e.group].append(j)

    if test.kind == "individual":
        gold = [e.answer for e in exs]  # type: ignore[union-attr]
        qs = [e.item_id for e in exs]
        credit = [M.mode_credit(p, a) for p, a in zip(ps, gold)]
        nlls = [M.nll(p, a) for p, a in zip(ps, gold)]
        out["accuracy"] = float(np.mean(credit))
        out["nll"] = float(np.mean(nlls))
        # hard labels with tied predictions split into weighted rows
        t_pred, t_w, t_gold, t_q = M.expand_ties(ps, gold, qs)
        out["macro_f1"] = M.macro_f1_question_option(t_pred, t_gold, t_q, t_w)
        out["macro_f1_option_label"] = M.macro_f1_option_label(t_pred, t_gold, t_w)
        out["macro_f1_per_question"] = M.macro_f1_per_question(t_pred, t_gold, t_q, t_w)
        out["emd_wvb"] = _emd_wvb(test, gold, qs, t_pred, t_w, t_q)
        # group-level distributions: mean prediction vs empirical answers of the same group and item
        cells: dict[tuple[str, str], list[int]] = defaultdict(list)
        for j, e in enumerate(exs):
            cells[(e.group, e.item_id)].append(j)
        cell_emd, cell_jsd, cell_group = [], [], []
        for (g, q), js in cells.items():
            item = test.items[q]
            h = np.bincount([gold[j] for j in js], minlength=item.n_options).astype(float)
            pm = np.mean([ps[j] for j in js], axis=0)
            cell_emd.append(M.emd(pm, h, item.ordinal))
            cell_jsd.append(M.jsd(pm, h))
            cell_group.append(g)
        out["emd"] = float(np.mean(cell_emd))
        out["jsd"] = float(np.mean(cell_jsd))
        out["n_cells"] = len(cells)
        for g, js in groups.items():
            ge = [cell_emd[c] for c in range(len(cell_group)) if cell_group[c] == g]
            per_group[g] = {
                "n": len(js),
                "accuracy": float(np.mean([credit[j] for j in js])),
                "nll": float(np.mean([nlls[j] for j in js])),
                "emd": float(np.mean(ge)),
            }
        out["accuracy_by_group"] = M.mean_std([v["accuracy"] for v in per_group.values()])
    else:
        emds, jsds, hits, hent, hent_nats = [], [], [], [], []
        for p, e in zip(ps, exs):
            h = np.asarray(e.probs)  # type: ignore[union-attr]
            item = test.items[e.item_id]
            emds.append(M.emd(p, h, item.ordinal))
            jsds.append(M.jsd(p, h))
            hits.append(M.mode_credit(p, h))  # tie-aware: see the docstring
            hent.append(M.entropy(h))
            hent_nats.append(M.entropy(h, normalised=False))
        out["emd"] = float(np.mean(emds))
        out["jsd"] = float(np.mean(jsds))
        out["accuracy"] = float(np.mean(hits))  # predicted mode == human majority option
        out["human_entropy"] = float(np.mean(hent))
        out["human_entropy_nats"] = float(np.mean(hent_nats))
        for g, js in groups.items():
            per_group[g] = {
                "n": len(js),
                "emd": float(np.mean([emds[j] for j in js])),
                "jsd": float(np.mean([jsds[j] for j in js])),
                "accuracy": float(np.mean([hits[j] for j in js])),
            }
    out["emd_by_group"] = M.mean_std([v["emd"] for v in per_group.values()])
    return out, per_group


def _emd_wvb(test: SurveyDataset, gold, qs, t_pred, t_w, t_q) -> float:
    """WorldValuesBench individual-data EMD: per question, W1 between the test participants'
    predicted answers (tie-split, weighted) and their true answers on [0, 1]; mean over questions."""
    g_by: dict[str, list[int]] = defaultdict(list)
    p_by: dict[str, list[int]] = defaultdict(list)
    for a, q in zip(gold, qs):
        g_by[q].append(a)
    for j, q in enumerate(t_q):
        p_by[q].append(j)
    vals = [
        M.emd_samples([t_pred[j] for j in p_by[q]], g_by[q], test.items[q].n_options, [t_w[j] for j in p_by[q]])
        for q in g_by
    ]
    return float(np.mean(vals)) if vals else float("nan")


def reference_predictions(
    test: SurveyDataset, train: SurveyDataset | None, *, map_k: int = 3, settings=None
) -> dict[str, list[np.ndarray | None]]:
    """Model-free reference predictors (:mod:`pluralign.evaluation.references`): uniform, the
    training groups' mean, the cultural-map neighbours and kernel, the text-similarity reference
    for unseen questions, and the pooled / per-country answer shares of individual data."""
    from pluralign.evaluation.references import ReferenceSettings
    from pluralign.evaluation.references import reference_predictions as _refs

    return _refs(test, train, settings or ReferenceSettings(map_k=map_k))


def culture_map_knn(test: SurveyDataset, train: SurveyDataset, *, k: int = 3) -> list[np.ndarray | None] | None:
    """The cultural-map nearest-neighbour predictions for group data (None when it does not apply:
    individual data, or groups without a country the map covers)."""
    from pluralign.evaluation.references import culture_map_knn as _knn

    return _knn(test, train, k=k)


def predict(
    model,
    tok,
    test: SurveyDataset,
    cfg: EvalConfig,
    *,
    train: SurveyDataset | None = None,
    profile_kwargs: Callable[[list[Profile]], dict] | None = None,
    progress: bool = True,
) -> Predictions:
    """Score every example. ``profile_kwargs(profiles)`` returns extra forward kwargs for a batch
    (a profile-conditioned adapter uses it); then prompts are never shared across profiles."""
    if getattr(cfg, "readout", "logprob") != "logprob":  # verbalized / sampled: generated answers
        return predict_readout(model, tok, test, cfg, train=train, profile_kwargs=profile_kwargs, progress=progress)
    prompts, labels, options, profiles, index = build_prompts(tok, test, cfg, train)
    if profile_kwargs is not None:  # each profile gets its own rows even when the text is identical
        prompts, labels, options, profiles, index = expand_by_profile(test, prompts, labels, options, index)
    scorer = OptionScorer(model, tok, batch_size=cfg.batch_size, max_length=cfg.max_length)
    extra = (lambda idx: profile_kwargs([profiles[i] for i in idx])) if profile_kwargs else None
    t0 = time.perf_counter()
    bar = progress_bar(len(prompts), f"{cfg.method}", progress)
    try:
        if cfg.scoring == "loglik":
            scores = scorer.continuation(prompts, options, progress=bar.update if bar else None, batch_extra=extra)
        elif cfg.scoring == "next-token":
            scores = scorer.next_token(prompts, labels, progress=bar.update if bar else None, batch_extra=extra)
        else:
            from pluralign.errors import PluralignError

            raise PluralignError(f"unknown scoring {cfg.scoring!r} (next-token | loglik)", field="scoring")
    finally:
        if bar:
            bar.close()
    dt = time.perf_counter() - t0
    return Predictions(
        probs=[scores[i].probs for i in index],
        mass=[scores[i].mass for i in index],
        seconds=dt,
        n_prompts=len(prompts),
    )


def evaluate(
    model,
    tok,
    test: SurveyDataset,
    cfg: EvalConfig | None = None,
    *,
    train: SurveyDataset | None = None,
    model_name: str = "",
    split: dict | None = None,
    profile_kwargs: Callable[[list[Profile]], dict] | None = None,
    progress: bool = True,
    adapter: str | None = None,
    references=None,
    cell: str | None = None,
) -> dict:
    """Evaluate and return the results dict (schema ``pluralign.eval/1``). ``references``: the
    :class:`~pluralign.evaluation.references.ReferenceSettings` (e.g. chosen on validation rows by
    ``tune_references``; default: from ``cfg``); ``cell``: the two-way split's cell of ``test``."""
    cfg = cfg or EvalConfig()
    if references is None:
        from pluralign.evaluation.references import ReferenceSettings

        references = ReferenceSettings(map_k=cfg.map_k, map_bandwidth=cfg.map_bandwidth, text_k=cfg.text_k,
                                       text_encoder=cfg.text_encoder, map_before=cfg.map_before)
    preds = predict(model, tok, test, cfg, train=train, profile_kwargs=profile_kwargs, progress=progress)
    overall, per_group = compute_metrics(test, preds.probs)
    overall["option_mass"] = float(np.mean(preds.mass))
    _add_group_mass(test, preds.mass, per_group)
    from pluralign.evaluation.bootstrap import add_benchmark

    boot = dict(n_boot=cfg.bootstrap, seed=cfg.seed, level=cfg.confidence, unit=cfg.bootstrap_unit)
    intervals, cells = add_benchmark(test, preds.probs, overall, per_group, **boot)
    refs = {}
    for name, ps in reference_predictions(test, train, settings=references).items():
        m, g = compute_metrics(test, ps)
        refs[name] = {"metrics": m, "per_group": g}
        refs[name]["intervals"], refs[name]["cells"] = add_benchmark(test, ps, m, g, **boot)
    result = {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "pluralign_version": __version__,
        "model": model_name,
        "adapter": adapter,
        "dataset": {"name": test.name, "source": test.source, "kind": test.kind, "n_items": len(test.items), "groups": test.groups()},
        "split": split or {},
        "cell": cell,
        "reference_settings": asdict(references),
        "method": cfg.method,
        "config": asdict(cfg),
        "timing": {"seconds": preds.seconds, "prompts": preds.n_prompts, "prompts_per_second": preds.n_prompts / max(preds.seconds, 1e-9)},
        "metrics": overall,
        "per_group": per_group,
        "references": refs,
        "readout": {"name": cfg.readout, **preds.extra.get("readout", {})},
        "intervals": intervals,
        "cells": cells,
    }
    if cfg.keep_predictions:
        result["predictions"] = [
            _pred_row(e, p, m) for e, p, m in zip(test.examples, preds.probs, preds.mass)
        ]
    return result


def _add_group_mass(test: SurveyDataset, mass, per_group: dict[str, dict]) -> None:
    """Set ``per_group[g]["option_mass"]``: the mean next-token mass on the option labels over the
    group's examples (how much the model SAYS a label when it answers as that group), averaged
    like the overall ``option_mass``."""
    by_group: dict[str, list[float]] = defaultdict(list)
    for e, m in zip(test.examples, mass):
        by_group[e.group].append(m)
    for g, row in per_group.items():
        row["option_mass"] = float(np.mean(by_group[g]))


def _pred_row(e, p, mass) -> dict:
    probs = None if p is None else [round(float(x), 6) for x in p]  # None: a read-out gave no answer
    row = {"group": e.group, "item_id": e.item_id, "probs": probs, "mass": round(float(mass), 6)}
    if isinstance(e, IndividualExample):
        row["respondent_id"] = e.respondent_id
        row["answer"] = e.answer
    else:
        row["human"] = [round(float(x), 6) for x in e.probs]
    return row
