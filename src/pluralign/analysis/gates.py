"""Record the router gates of a mixture-of-LoRA-experts model from outside.

:class:`GateRecorder` is a context manager: inside it, every :class:`~pluralign.adapters.moe_lora.MoERouter`
of the model keeps the router logits of each forward call (its ``logits`` method is wrapped on the
instance and restored on exit; the adapter code is not changed and nothing is recorded outside the
block). :func:`record_prompts` runs prompts through the adapted model (left-padded batches, the
eval scorer's tokenisation) and returns per prompt and router layer:

* ``last`` — the router probabilities (softmax over all experts) at the answer position (the last
  prompt token, where the option label is read);
* ``mean`` — their mean over all the prompt's tokens;
* ``last_topk`` — the ``k`` experts selected at the answer position (the router's own top-k);
* ``tail_topk`` — the experts selected at each of the prompt's last ``tail`` tokens (for the
  tokens groups share: the question after the persona), when asked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from pluralign.errors import PluralignError


def _inner(model):
    from pluralign.adapters.model import AdaptedModel

    return model.model if isinstance(model, AdaptedModel) else model


def _layer_order(key: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


class GateRecorder:
    """Inside ``with GateRecorder(model) as rec:``, ``rec.take()`` returns the router logits of
    the forward calls since the last ``take`` (router key -> ``Tensor[B, T, E]``, the last call)."""

    def __init__(self, model):
        from pluralign.adapters.moe_lora import routers_of

        self.routers = dict(sorted(routers_of(_inner(model)).items(), key=lambda kv: _layer_order(kv[0])))
        if not self.routers:
            method = getattr(model, "method", None)
            raise PluralignError(f"the model has no mixture-of-experts routers{f' ({method} is a dense method)' if method else ''}: "
                                 "nothing to record", field="method")
        self._calls: dict[str, list[torch.Tensor]] = {}
        self._active = False

    @property
    def layers(self) -> list[str]:
        return list(self.routers)

    def __enter__(self) -> "GateRecorder":
        for key, router in self.routers.items():
            orig = router.logits

            def wrapped(h, part, _orig=orig, _key=key):
                z = _orig(h, part)
                self._calls.setdefault(_key, []).append(z.detach().float().cpu())
                return z

            router.logits = wrapped  # an instance attribute: shadows the method until __exit__
        self._active = True
        return self

    def __exit__(self, *exc) -> None:
        for router in self.routers.values():
            if "logits" in router.__dict__:
                del router.logits
        self._active = False
        self._calls = {}

    def take(self) -> dict[str, torch.Tensor]:
        out = {k: v[-1] for k, v in self._calls.items() if v}
        self._calls = {}
        return out


@dataclass
class RoutingRecord:
    layers: list[str]
    last: np.ndarray  # [N, L, E] router probabilities at the answer position
    mean: np.ndarray  # [N, L, E] mean over the prompt's tokens
    last_topk: np.ndarray  # [N, L, k] experts selected at the answer position
    tail_topk: list[np.ndarray] | None  # per prompt [L, S_i, k]
    k: int
    n_experts: int


def router_top_k(model) -> tuple[int, int]:
    """``(k, E)``: the routers' top-k (2 for soft routing, where every expert is used) and experts."""
    from pluralign.adapters.moe_lora import routers_of

    r = next(iter(routers_of(_inner(model)).values()))
    k = r.top_k if r.top_k < r.n_experts else min(2, r.n_experts)
    return int(k), int(r.n_experts)


def token_ids(tok, prompts: Sequence[str], model=None) -> list[list[int]]:
    """The prompts' tokens as the eval scorer makes them (a chat-templated prompt keeps its own BOS)."""
    from pluralign.evaluation.scoring import OptionScorer

    sc = OptionScorer(model if model is not None else torch.nn.Linear(1, 1), tok)
    return [sc._encode_prompt(p) for p in prompts]


@torch.no_grad()
def record_prompts(
    model,
    tok,
    prompts: Sequence[str],
    *,
    profiles: Sequence | None = None,
    profile_kwargs: Callable | None = None,
    batch_size: int = 8,
    tails: Sequence[int] | None = None,
    k: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> RoutingRecord:
    """Run ``prompts`` (``profiles[i]`` routes prompt ``i`` for profile-routed adapters) and record
    the gates (see the module docstring)."""
    if profile_kwargs is not None and (profiles is None or len(profiles) != len(prompts)):
        raise PluralignError("a profile-routed adapter needs one profile per prompt", field="profiles")
    kk, n_exp = router_top_k(model)
    k = int(k or kk)
    if not 1 <= k <= n_exp:
        raise PluralignError(f"k must be in [1, {n_exp}] (the routers' experts), got {k}", field="--k")
    ids = token_ids(tok, prompts, model)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    pad = tok.pad_token_id
    device = next(model.parameters()).device
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    rec = GateRecorder(model)
    L = len(rec.layers)
    N = len(prompts)
    last = np.zeros((N, L, n_exp), dtype=np.float32)
    mean = np.zeros((N, L, n_exp), dtype=np.float32)
    last_topk = np.zeros((N, L, k), dtype=np.int16)
    tail_topk: list[np.ndarray | None] | None = [None] * N if tails is not None else None
    with rec:
        for s in range(0, N, batch_size):
            idx = order[s:s + batch_size]
            T = max(len(ids[i]) for i in idx)
            inp = torch.full((len(idx), T), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), T), dtype=torch.long)
            for b, i in enumerate(idx):
                inp[b, T - len(ids[i]):] = torch.tensor(ids[i], dtype=torch.long)
                mask[b, T - len(ids[i]):] = 1
            kw = profile_kwargs([profiles[i] for i in idx]) if profile_kwargs is not None else {}
            model(input_ids=inp.to(device), attention_mask=mask.to(device), logits_to_keep=1, **kw)
            got = rec.take()
            missing = [key for key in rec.layers if key not in got]
            if missing:
                raise PluralignError(f"router {missing[0]} did not run (adapter bypassed?)", field="model")
            for li, key in enumerate(rec.layers):
                z = got[key]  # [B, T or 1, E]
                probs = z.softmax(-1)
                top = z.topk(k, dim=-1).indices
                for b, i in enumerate(idx):
                    n = len(ids[i])
                    if z.shape[1] == 1:  # profile-only routing: one gate vector for every token
                        last[i, li] = mean[i, li] = probs[b, 0].numpy()
                        last_topk[i, li] = top[b, 0].numpy()
                        if tail_topk is not None:
                            t = max(1, int(tails[i]))
                            tail_topk[i] = _put(tail_topk[i], li, L, np.repeat(top[b, 0:1].numpy(), t, axis=0))
                        continue
                    last[i, li] = probs[b, -1].numpy()
                    mean[i, li] = probs[b, T - n:].mean(0).numpy()
                    last_topk[i, li] = top[b, -1].numpy()
                    if tail_topk is not None:
                        t = max(1, min(n, int(tails[i])))
                        tail_topk[i] = _put(tail_topk[i], li, L, top[b, T - t:].numpy())
            if progress is not None:
                progress(len(idx))
    return RoutingRecord(layers=rec.layers, last=last, mean=mean, last_topk=last_topk, tail_topk=tail_topk, k=k, n_experts=n_exp)


def _put(arr, li: int, L: int, v: np.ndarray) -> np.ndarray:
    if arr is None:
        arr = np.zeros((L, *v.shape), dtype=np.int16)
    arr[li] = v
    return arr


def common_suffix(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest common suffix of the token sequences (the shared question tokens)."""
    if not seqs:
        return 0
    n = min(len(s) for s in seqs)
    k = 0
    while k < n and all(s[-1 - k] == seqs[0][-1 - k] for s in seqs):
        k += 1
    return k


__all__ = ["GateRecorder", "RoutingRecord", "record_prompts", "router_top_k", "token_ids", "common_suffix"]
