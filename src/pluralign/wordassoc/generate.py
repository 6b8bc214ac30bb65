"""Batched generation (left padding) and the held-out evaluation of both tasks.

Generation sorts prompts by length, left-pads each batch (``model.generate`` then continues every
row from its last real token; transformers derives position ids from the attention mask), and
decodes only the new tokens. With ``num_samples`` > 1 the model is sampled that many times per cue
and the associations are merged: a word named in more samples ranks higher, ties by mean position.
This mirrors how SWOW strengths count how many people gave a response.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict
from typing import Sequence

import numpy as np
import torch

from pluralign.data.loaders.swow import SwowData, check_language
from pluralign.errors import PluralignError
from pluralign.models.chat import build_chat_prompt
from pluralign.wordassoc.config import GenConfig
from pluralign.wordassoc.metrics import distinct_counts, precision_at_k, ranking_spearman
from pluralign.wordassoc.tasks import generation_messages, parse_associations, ranking_examples
from pluralign.wordassoc.stats import cue_interval


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _encode(tok, text: str) -> list[int]:
    add = not (tok.bos_token and text.startswith(tok.bos_token))
    return tok(text, add_special_tokens=add)["input_ids"]


@torch.inference_mode()
def generate_texts(model, tok, prompts: Sequence[str], cfg: GenConfig | None = None, *, progress: bool = True) -> list[list[str]]:
    """Completions for each prompt (``cfg.num_samples`` of them), in prompt order."""
    cfg = cfg or GenConfig()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    seqs = [_encode(tok, p) for p in prompts]
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    out: list[list[str]] = [[] for _ in prompts]
    sample = cfg.num_samples > 1
    gen_kw = dict(max_new_tokens=cfg.max_new_tokens, do_sample=sample, num_return_sequences=cfg.num_samples,
                  pad_token_id=tok.pad_token_id)
    if sample:
        gen_kw.update(temperature=cfg.temperature, top_p=cfg.top_p, top_k=0)
    else:
        gen_kw.update(temperature=None, top_p=None, top_k=None)
    if cfg.min_new_tokens:
        gen_kw["min_new_tokens"] = cfg.min_new_tokens
    torch.manual_seed(cfg.seed)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(prompts), desc="generating", unit="prompt", leave=False)
    dev = _device(model)
    was_training = model.training
    model.eval()
    try:
        for s in range(0, len(order), cfg.batch_size):
            idx = order[s:s + cfg.batch_size]
            width = max(len(seqs[i]) for i in idx)
            ids = torch.full((len(idx), width), tok.pad_token_id, dtype=torch.long)
            att = torch.zeros((len(idx), width), dtype=torch.long)
            for r, i in enumerate(idx):
                L = len(seqs[i])
                ids[r, width - L:] = torch.tensor(seqs[i])
                att[r, width - L:] = 1
            gen = model.generate(input_ids=ids.to(dev), attention_mask=att.to(dev), **gen_kw)
            new = gen[:, width:].cpu()
            texts = tok.batch_decode(new, skip_special_tokens=True)
            for r, i in enumerate(idx):
                out[i] = texts[r * cfg.num_samples:(r + 1) * cfg.num_samples]
            if bar:
                bar.update(len(idx))
    finally:
        if bar:
            bar.close()
        if was_training:
            model.train()
    return out


def merge_samples(samples: Sequence[Sequence[str]]) -> list[str]:
    """Merge the association lists of several samples: more samples first, then mean position."""
    count: dict[str, int] = defaultdict(int)
    pos: dict[str, list[int]] = defaultdict(list)
    for words in samples:
        for p, w in enumerate(words):
            count[w] += 1
            pos[w].append(p)
    return sorted(count, key=lambda w: (-count[w], float(np.mean(pos[w])), w))


def _prompt(tok, messages, cfg: GenConfig) -> str:
    return build_chat_prompt(tok, messages, use_chat_template=cfg.chat_template)


def evaluate_generation(
    model, tok, data: SwowData, cfg: GenConfig | None = None, *, n_words: int = 3, ks: Sequence[int] = (5, 10, 40),
    progress: bool = True, keep: int = 20, fixed_words: int = 0, top_up_rounds: int = 3,
    leaks: dict[str, list[str]] | None = None, leak_source: str | None = None,
) -> dict:
    """P@K of generated associations on the cues of ``data`` (held-out cues).

    Besides P@K (:func:`~pluralign.wordassoc.metrics.precision_at_k`, from the ``cfg.num_samples``
    completions) the result holds ``distinct_words`` (how many distinct associations each cue got,
    :func:`~pluralign.wordassoc.metrics.distinct_counts`) and, with ``fixed_words = N > 0``, P@N at N
    generated words: cues with fewer than N distinct words are sampled again (``max(2, num_samples)``
    more completions a round, other seeds, at most ``top_up_rounds`` rounds) and P@N is taken over
    the first N words of all their completions merged, so that every model is measured on the same
    number of words (cues still short count their missing words as misses; how many is reported).

    ``leaks``: ``{cue: [responses]}``, the evaluated cues whose reversed pair was in the model's
    training data (:func:`pluralign.data.loaders.swow.reversed_pairs`); every metric is then also
    given on the other cues, under ``clean`` (``leak_source`` says where the training data came from)."""
    import dataclasses

    cfg = cfg or GenConfig()
    check_language(data, data.language)
    if fixed_words < 0 or top_up_rounds < 0:
        raise PluralignError("fixed_words and top_up_rounds must be >= 0", field="fixed_words")
    cues = list(data.cues)
    prompts = [_prompt(tok, generation_messages(c, n_words, data.language), cfg) for c in cues]
    t0 = time.perf_counter()
    texts = generate_texts(model, tok, prompts, cfg, progress=progress)
    res: dict = {"task": "generation", "n_cues": len(cues), "n_words_asked": n_words, "config": asdict(cfg)}
    human = {c: [a.response for a in data.cues[c]] for c in cues}
    parsed = [[parse_associations(t) for t in samples] for samples in texts]
    merged = [merge_samples(p) for p in parsed]
    pk: dict[int, list[float]] = {k: [precision_at_k(w, human[c], k) for c, w in zip(cues, merged)] for k in ks}
    rows = [{"cue": c, "generated": w[:max(ks)], "human_top": human[c][:10], "raw": samples[0]}
            for c, w, samples in zip(cues, merged, texts)]
    for k in ks:
        res[f"P@{k}"] = float(np.mean(pk[k])) if pk[k] else float("nan")
    res["intervals"] = {f"P@{k}": cue_interval(pk[k], seed=cfg.seed) for k in ks}
    res["per_cue"] = {f"P@{k}": dict(zip(cues, pk[k])) for k in ks}
    res["cues_below_k_human"] = {f"{k}": sum(len(data.cues[c]) < k for c in cues) for k in ks}
    res["mean_associations_per_cue"] = float(np.mean([len(w) for w in merged])) if merged else 0.0
    res["distinct_words"] = distinct_counts(merged, ks)
    fixed = None
    if fixed_words:
        N = fixed_words
        topped, rounds = set(), 0
        for rnd in range(1, top_up_rounds + 1):
            short = [i for i, w in enumerate(merge_samples(p) for p in parsed) if len(w) < N]
            if not short:
                break
            rounds = rnd
            topped.update(short)
            more_cfg = dataclasses.replace(cfg, seed=cfg.seed + 1000 * rnd, num_samples=max(2, cfg.num_samples))
            more = generate_texts(model, tok, [prompts[i] for i in short], more_cfg, progress=progress)
            for i, samples in zip(short, more):
                parsed[i] += [parse_associations(t) for t in samples]
        filled = [merge_samples(p) for p in parsed]
        vals = [precision_at_k(w, human[c], N) for c, w in zip(cues, filled)]
        fixed = {"n_words": N, f"P@{N}": float(np.mean(vals)) if vals else float("nan"), "interval": cue_interval(vals, seed=cfg.seed),
                 "per_cue": dict(zip(cues, vals)), "top_up_rounds": rounds, "cues_topped_up": len(topped),
                 "cues_short": sum(len(w) < N for w in filled), "distinct_words": distinct_counts(filled, (N,))}
        res["fixed_words"] = fixed
    if leaks is not None:
        clean = [c for c in cues if c not in leaks]
        leaked = [c for c in cues if c in leaks]
        cl: dict = {"n_cues": len(clean)}
        for k in ks:
            v = [res["per_cue"][f"P@{k}"][c] for c in clean]
            cl[f"P@{k}"] = float(np.mean(v)) if v else float("nan")
        cl["intervals"] = {f"P@{k}": cue_interval([res["per_cue"][f"P@{k}"][c] for c in clean], seed=cfg.seed) for k in ks}
        cl["per_cue"] = {f"P@{k}": {c: res["per_cue"][f"P@{k}"][c] for c in clean} for k in ks}
        if fixed:
            N = fixed["n_words"]
            v = [fixed["per_cue"][c] for c in clean]
            cl["fixed_words"] = {"n_words": N, f"P@{N}": float(np.mean(v)) if v else float("nan"), "interval": cue_interval(v, seed=cfg.seed),
                                 "per_cue": {c: fixed["per_cue"][c] for c in clean}}
        res["held_out_pairs"] = {"source": leak_source, "cues_with_reversed_pair_in_training": len(leaked),
                                 "reversed_pairs": sum(len(leaks[c]) for c in leaked), "clean_cues": len(clean)}
        res["clean"] = cl
    dt = time.perf_counter() - t0
    res["seconds"] = dt
    res["cues_per_second"] = len(cues) / max(dt, 1e-9)
    res["examples"] = rows[:keep]
    return res


def evaluate_ranking(
    model, tok, data: SwowData, cfg: GenConfig | None = None, *, n_candidates: int = 5, seed: int = 0,
    progress: bool = True, keep: int = 20, leaks: dict[str, list[str]] | None = None,
) -> dict:
    """Spearman ρ between the model's ranking of each cue's candidates and the human strengths
    (greedy decoding unless ``cfg.num_samples`` > 1, then the mean over samples). ``leaks``: as in
    :func:`evaluate_generation` (the mean over the other cues under ``clean``)."""
    cfg = cfg or GenConfig()
    recs = ranking_examples(data, n_candidates=n_candidates, seed=seed)
    prompts = [_prompt(tok, r["prompt"], cfg) for r in recs]
    t0 = time.perf_counter()
    texts = generate_texts(model, tok, prompts, cfg, progress=progress)
    dt = time.perf_counter() - t0
    rhos, parsed, rows = [], [], []
    for r, samples in zip(recs, texts):
        vals = []
        for t in samples:
            words = parse_associations(t)
            vals.append(ranking_spearman(words, r["candidates"], r["strengths"]))
            parsed.append(any(w in {c.lower() for c in r["candidates"]} for w in words))
        rhos.append(float(np.mean(vals)))
        rows.append({"cue": r["cue"], "candidates": r["candidates"], "human_order": r["target"], "raw": samples[0], "spearman": rhos[-1]})
    if not rhos:
        raise PluralignError("no cue to rank", file=data.source)
    out = {
        "task": "ranking", "n_cues": len(recs), "n_candidates": n_candidates, "spearman": float(np.mean(rhos)),
        "spearman_std": float(np.std(rhos)), "listed_a_candidate": float(np.mean(parsed)), "seconds": dt,
        "intervals": {"spearman": cue_interval(rhos, seed=cfg.seed)},
        "per_cue": {"spearman": {r["cue"]: v for r, v in zip(recs, rhos)}},
        "config": asdict(cfg), "examples": rows[:keep],
    }
    if leaks is not None:
        clean = {r["cue"]: v for r, v in zip(recs, rhos) if r["cue"] not in leaks}
        out["clean"] = {"n_cues": len(clean), "spearman": float(np.mean(list(clean.values()))) if clean else float("nan"),
                        "intervals": {"spearman": cue_interval(list(clean.values()), seed=cfg.seed)}, "per_cue": {"spearman": clean}}
    return out


__all__ = ["GenConfig", "generate_texts", "merge_samples", "evaluate_generation", "evaluate_ranking"]
