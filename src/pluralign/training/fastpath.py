"""The cached-trunk fast path: train adapters on the top layers from cached hidden states.

When only the top N decoder layers carry adapters (``TrainConfig.top_layers``), every layer below
the first adapted one is frozen and sees the same input in every epoch, so its output is computed
once per training row and kept (``TrainRow.trunk``, ``[tokens, hidden]`` on the CPU). Each step
then runs only the adapted layers, from those states (``AdaptedModel.forward(inputs_embeds=...,
start_layer=...)``). This is exact, not an approximation: the frozen layers have no dropout and no
trainable input. :func:`verify_fast_path` checks it on real rows before training starts (logits of
the cached path against the full forward), so an architecture whose decoder treats
``inputs_embeds`` differently (e.g. one that rescales them) is refused instead of trained wrongly.

Memory: ``rows x tokens x hidden`` values in the backbone's dtype (SmolLM2, 4.9k rows x ~110 tokens
x 576: 1.2 GB in fp32). Identical prompts share one tensor.
"""

from __future__ import annotations

import io
import time

import torch

from pluralign.errors import PluralignError
from pluralign.io import atomic_write_bytes


def trunk_fingerprint(model, start: int) -> str:
    """Identifies the frozen trunk: backbone shape, dtype, start layer and a checksum of the
    weights of the layers below ``start`` and of the embeddings (so a changed model never reuses
    another's cache)."""
    import hashlib

    _, _, layers = model.decoder_layers()
    h = hashlib.sha256()
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    h.update(f"{cfg.model_type}|{cfg.hidden_size}|{cfg.num_hidden_layers}|{start}".encode())
    mods = [model.get_input_embeddings()] + [layers[i] for i in range(start)]
    for mod in mods:
        for n, p in mod.named_parameters():
            t = p.detach().flatten()
            h.update(f"{n}|{p.dtype}|{tuple(p.shape)}|{float(t[:4096].double().sum()):.10e}|{float(t[-4096:].double().sum()):.10e}".encode())
    return h.hexdigest()[:24]


def _row_key(ids) -> str:
    import hashlib

    return hashlib.sha1(",".join(map(str, ids)).encode()).hexdigest()


@torch.no_grad()
def attach_trunk(
    model, rows, *, start: int, batch_size: int = 16, device=None, progress: bool = True, cache_dir=None
) -> dict:
    """Compute the hidden states entering decoder layer ``start`` for every row (once per unique
    token sequence) and store them in ``row.trunk``. With ``cache_dir``, states are also kept on
    disk (one file per unique row, under a fingerprint of the frozen trunk) and reused by later runs
    on the same backbone and prompts (other seeds, methods, splits). Returns statistics."""
    from pathlib import Path

    device = torch.device(device) if device is not None else next(model.parameters()).device
    was = model.training
    model.eval()
    uniq: dict[tuple, list] = {}
    for r in rows:
        uniq.setdefault(tuple(r.input_ids), []).append(r)
    root = None
    reused = 0
    if cache_dir is not None:
        root = Path(cache_dir) / trunk_fingerprint(model, start)
        root.mkdir(parents=True, exist_ok=True)
        for k in list(uniq):
            f = root / f"{_row_key(k)}.pt"
            if f.exists():
                try:
                    t = torch.load(f, map_location="cpu", weights_only=True)
                except Exception:  # a corrupt file is recomputed
                    continue
                if t.shape[0] == len(k):
                    for r in uniq[k]:
                        r.trunk = t
                    reused += 1
    keys = sorted((k for k in uniq if uniq[k][0].trunk is None), key=len)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(keys), desc=f"trunk cache (layers 0-{start - 1})", unit="row", leave=False)
    t0 = time.perf_counter()
    pad = 0
    for s in range(0, len(keys), batch_size):
        chunk = keys[s : s + batch_size]
        L = max(len(k) for k in chunk)
        ids = torch.full((len(chunk), L), pad, dtype=torch.long)
        att = torch.zeros((len(chunk), L), dtype=torch.long)
        for b, k in enumerate(chunk):
            ids[b, L - len(k):] = torch.tensor(k)
            att[b, L - len(k):] = 1
        ids, att = ids.to(device), att.to(device)
        pos = (att.cumsum(-1) - 1).clamp(min=0)
        h = model.trunk_states(ids, att, pos, start)
        for b, k in enumerate(chunk):
            t = h[b, L - len(k):].detach().to("cpu").clone()
            for r in uniq[k]:
                r.trunk = t
            if root is not None:
                buf = io.BytesIO()
                torch.save(t, buf)
                atomic_write_bytes(root / f"{_row_key(k)}.pt", buf.getvalue())
        if bar:
            bar.update(len(chunk))
    if bar:
        bar.close()
    model.train(was)
    n_values = sum(v[0].trunk.numel() for v in uniq.values())
    elem = rows[0].trunk.element_size() if rows else 4
    return {"start_layer": start, "unique_rows": len(uniq), "computed_rows": len(keys), "reused_rows": reused,
            "seconds": time.perf_counter() - t0, "bytes": int(n_values * elem)}


@torch.no_grad()
def verify_fast_path(model, rows, collator, *, device=None, n: int = 4, tol: float = 1e-3) -> float:
    """Max |logit difference| between the cached-trunk forward and the full forward on ``n`` rows
    (eval mode: no dropout). Raises :class:`PluralignError` above ``tol`` x the logits' scale."""
    from pluralign.training.losses import answer_logits

    device = torch.device(device) if device is not None else next(model.parameters()).device
    sample = rows[:n]
    was = model.training
    model.eval()
    try:
        batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in collator(sample).items()}
        extra = {"profile_embeds": batch["profile_embeds"]} if "profile_embeds" in batch else {}
        fast, _ = answer_logits(model, batch, extra)
        full_batch = {k: v for k, v in batch.items() if k not in ("inputs_embeds", "start_layer")}
        full, _ = answer_logits(model, full_batch, extra)
    finally:
        model.train(was)
    diff = float((fast - full).abs().max())
    scale = float(full.abs().max().clamp(min=1.0))
    if not diff <= tol * scale:
        raise PluralignError(
            f"the cached-trunk fast path does not reproduce this backbone's forward (max logit difference {diff:.3g}); "
            "train with --no-cache-trunk", field="cache_trunk",
        )
    return diff
