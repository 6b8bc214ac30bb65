"""The hot loop: score a whole population of soft prompts on the VSM items in batched forward passes.

For P candidate prompts ``X[P, T, hidden]`` and S prompts (24 VSM items × optional contexts:
personas or paraphrases given as system messages), every (candidate, prompt) row is scored from
``inputs_embeds`` = ``[virtual tokens][prompt tokens]``, reading only the last position's logits
(``logits_to_keep=1``) at the option labels.

Shared structure is reused, exactly (the attention of every row sees the same keys and values as
in the full row): the prompts are tokenised and embedded once; the token prefix that all prompts
share (chat-template header, default system prompt) is run once per candidate together with its
virtual tokens and its key/value cache is repeated across that candidate's rows (``prefix_cache``);
prompts that share a longer stem (VSM items 1-10 all begin "Imagine your ideal job ...", items 11-14
and 15-18 share theirs) form groups whose stem is run once per (candidate, group) on top of that
cache (``group_cache``: a two-level prefix tree chosen to save the most tokens, about 18 % of the
VSM tokens under SmolLM2's template); the remaining suffixes are packed into left-padded batches of
``batch_size`` rows sorted by length, so padding stays small. With ``prefix_cache=False`` each row
is run in full (the reference path).

:class:`PromptPopulation` is that engine for any prompts with the same number of option labels
(:class:`~pluralign.blackbox.knowledge.KnowledgeEvaluator` uses it for BLEnD questions);
:class:`PopulationEvaluator` adds the VSM scoring.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from pluralign.blackbox.config import PopulationConfig
from pluralign.blackbox.vsm import VSMConfig, dimension_scores, l1_loss
from pluralign.data.loaders.hofstede import DIMENSIONS, HofstedeTarget, VSMQuestionnaire, load_vsm_items
from pluralign.errors import PluralignError

log = logging.getLogger(__name__)


def cpu_bf16_native(cpuinfo: str | None = None) -> bool | None:
    """Whether this CPU has bfloat16 matrix instructions (AVX512-BF16 or AMX-BF16), from the flags
    in ``/proc/cpuinfo`` (or the text given); None where they cannot be read (not Linux)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return None
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
    if not flags:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16"})


_BF16_CPU_CHECKED = False  # the CPU's flags are read once per process, not on every evaluation


def _warn_slow_bf16(device: torch.device) -> None:
    global _BF16_CPU_CHECKED
    if device.type == "cpu" and not _BF16_CPU_CHECKED:
        _BF16_CPU_CHECKED = True
        if cpu_bf16_native() is False:
            log.warning("autocast=bf16 on a CPU without AVX512-BF16 or AMX: bfloat16 products are emulated, about 5x slower "
                        "than fp32 here (BENCHMARKS.md, soft-prompt throughput); use autocast=off")


@dataclass
class PopulationResult:
    probs: np.ndarray  # [P, n_ctx, 24, 5] renormalised over the options
    mass: np.ndarray  # [P, n_ctx, 24] probability on the option labels before renormalising
    means: np.ndarray  # [P, 24] expected answers (1..5), averaged over contexts
    scores: np.ndarray  # [P, 6] dimension scores
    loss: np.ndarray | None = None  # [P] L1 to the target

    @property
    def mean_mass(self) -> np.ndarray:
        return self.mass.mean(axis=(1, 2))


def prefix_groups(suffixes: Sequence[Sequence[int]], min_len: int = 2) -> list[tuple[list[int], int]]:
    """Groups of prompts that share a stem: ``[(members, stem_len), ...]`` chosen to maximise the
    tokens saved, ``sum (len(members) - 1) * stem_len`` (a two-level prefix tree: a group's stem is
    run once, each member's rest on top of it). Every member keeps at least one token after the stem."""

    def lcp(idx: list[int]) -> int:
        first, L = suffixes[idx[0]], 0
        limit = min(len(suffixes[i]) for i in idx) - 1
        while L < limit and all(suffixes[i][L] == first[L] for i in idx):
            L += 1
        return L

    def best(idx: list[int]) -> tuple[int, list[tuple[list[int], int]]]:
        if len(idx) < 2:
            return 0, []
        L = lcp(idx)
        whole = ((len(idx) - 1) * L, [(idx, L)]) if L >= min_len else (0, [])
        children: dict[int, list[int]] = {}
        for i in idx:
            children.setdefault(suffixes[i][L], []).append(i)
        if len(children) < 2:
            return whole
        parts = [best(c) for c in children.values()]
        split = sum(p[0] for p in parts)
        return (split, [g for p in parts for g in p[1]]) if split > whole[0] else whole

    return [(sorted(m), L) for m, L in best(list(range(len(suffixes))))[1] if L >= min_len]


def _cache_kwarg(model) -> str:
    """``cache`` in recent transformers (``past_key_values`` is deprecated there), else ``past_key_values``."""
    import inspect

    try:
        params = inspect.signature(type(model).forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def _layers_kv(out) -> list[tuple[torch.Tensor, torch.Tensor]]:
    cache = getattr(out, "cache", None)
    if cache is None:
        cache = out.past_key_values
    return [(layer.keys, layer.values) for layer in cache.layers]


class PromptPopulation:
    """Label log-probabilities of S prompts for a population of soft prompts (the batched engine).
    ``seqs``: one list of token ids per prompt; ``label_ids``: the option-label token ids per prompt
    (the same number for every prompt)."""

    def __init__(self, model, seqs: Sequence[Sequence[int]], label_ids: Sequence[Sequence[int]], *,
                 cfg: PopulationConfig | None = None) -> None:
        self.model = model
        self.cfg = cfg or PopulationConfig()
        if not seqs or len(seqs) != len(label_ids):
            raise PluralignError(f"expected one label set per prompt, got {len(seqs)} prompts / {len(label_ids)} label sets", field="prompts")
        if len({len(x) for x in label_ids}) != 1:
            raise PluralignError("every prompt needs the same number of option labels", field="labels")
        self.seqs = [list(s) for s in seqs]
        self.label_ids = torch.tensor([list(x) for x in label_ids], dtype=torch.long)
        emb = model.get_input_embeddings()
        self.hidden = int(emb.weight.shape[1])
        self.device = emb.weight.device
        self.dtype = emb.weight.dtype
        self._cache_kw = _cache_kwarg(model)
        # the token prefix shared by every prompt (each keeps at least one suffix token)
        lp = 0
        if self.cfg.prefix_cache:
            shortest = min(len(s) for s in self.seqs)
            while lp < shortest - 1 and all(s[lp] == self.seqs[0][lp] for s in self.seqs):
                lp += 1
        self.prefix_len = lp
        S = len(self.seqs)
        # groups of prompts sharing a stem after that prefix (second level of the prefix tree)
        groups = prefix_groups([s[lp:] for s in self.seqs]) if (self.cfg.prefix_cache and self.cfg.group_cache) else []
        self.groups = groups
        self.group_of = [-1] * S
        self.group_len = [0] * S
        for g, (members, L) in enumerate(groups):
            for i in members:
                self.group_of[i], self.group_len[i] = g, L
        with torch.no_grad():
            self.prefix_emb = emb(torch.tensor(self.seqs[0][:lp], dtype=torch.long, device=self.device)) if lp else None
            self.stem_emb = [emb(torch.tensor(self.seqs[m[0]][lp : lp + L], dtype=torch.long, device=self.device)) for m, L in groups]
            self.suffix_emb = [emb(torch.tensor(s[lp + self.group_len[i] :], dtype=torch.long, device=self.device))
                               for i, s in enumerate(self.seqs)]
        self.n_forward = 0
        self.tokens_run = 0  # token positions run through the model (all batches, padding included)
        self._memo: dict[str, torch.Tensor] = {}
        self.memo_hits = 0

    @property
    def n_prompts(self) -> int:
        return len(self.seqs)

    # ------------------------------------------------------------------ scoring
    def as_prompts(self, X) -> torch.Tensor:
        """Candidates ``[P, T*hidden]`` or ``[P, T, hidden]`` (numpy or torch) → ``[P, T, hidden]`` on the model."""
        x = torch.as_tensor(np.asarray(X, dtype=np.float32) if not torch.is_tensor(X) else X)
        if x.ndim == 2:
            if x.shape[1] % self.hidden:
                raise PluralignError(f"candidate length {x.shape[1]} is not a multiple of the hidden size {self.hidden}", field="population")
            x = x.reshape(x.shape[0], -1, self.hidden)
        if x.ndim != 3 or x.shape[2] != self.hidden:
            raise PluralignError(f"population must be [P, T, {self.hidden}], got {list(x.shape)}", field="population")
        return x.to(self.device, self.dtype)

    def _forward(self, x, mask, pos, cache_kv=None, use_cache: bool = True):
        """One forward pass reading the last position's logits; ``cache_kv``: per-layer (keys, values) of the rows' past."""
        kw = {}
        if cache_kv is not None:
            from transformers import DynamicCache

            kw[self._cache_kw] = DynamicCache(ddp_cache_data=cache_kv)
        out = self.model(inputs_embeds=x, attention_mask=mask, position_ids=pos, use_cache=use_cache, logits_to_keep=1, **kw)
        self.n_forward += 1
        self.tokens_run += int(x.shape[0] * x.shape[1])
        return out

    def _left_pad(self, parts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings ``[L_i, H]`` → left-padded ``[B, max L, H]`` and its mask."""
        width = max(e.shape[0] for e in parts)
        x = torch.zeros(len(parts), width, self.hidden, dtype=self.dtype, device=self.device)
        m = torch.zeros(len(parts), width, dtype=torch.long, device=self.device)
        for r, e in enumerate(parts):
            L = e.shape[0]
            if L:
                x[r, width - L :] = e
                m[r, width - L :] = 1
        return x, m

    @torch.inference_mode()
    def label_logprobs(self, X, progress: Callable[[int], None] | None = None) -> torch.Tensor:
        """``[P, S, K]`` log-probabilities of the option labels for every candidate and prompt."""
        if self.cfg.autocast not in ("off", "bf16", None):
            raise PluralignError(f"autocast must be off or bf16, got {self.cfg.autocast!r}", field="autocast")
        if self.cfg.autocast == "bf16" and self.dtype == torch.float32:
            _warn_slow_bf16(self.device)
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
                return self._label_logprobs(X, progress)
        return self._label_logprobs(X, progress)

    def _label_logprobs(self, X, progress: Callable[[int], None] | None = None) -> torch.Tensor:
        sp = self.as_prompts(X)
        P, T, _ = sp.shape
        S = len(self.seqs)
        lp = self.prefix_len
        dev = self.device
        bs = max(1, self.cfg.batch_size)
        # ---- level 1, the shared prefix: [virtual tokens][common prefix] once per candidate
        cache_kv = None
        if lp or T:
            pre = sp if self.prefix_emb is None else torch.cat([sp, self.prefix_emb[None].expand(P, -1, -1)], dim=1)
        n_pre = T + lp
        if self.cfg.prefix_cache and n_pre > 0:
            pos = torch.arange(n_pre, device=dev)[None].expand(P, -1)
            cache_kv = _layers_kv(self._forward(pre, None, pos, None))
        # ---- level 2, group stems: once per (candidate, group) on top of the candidate's prefix cache
        G = len(self.groups) if cache_kv is not None else 0
        stem_kv = None
        gmax = max((L for _, L in self.groups), default=0) if G else 0
        if G:
            pairs = [(p, g) for g in range(G) for p in range(P)]  # row p*... ordered g-major
            chunks: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
            for start in range(0, len(pairs), bs):
                rows = pairs[start : start + bs]
                x, m = self._left_pad([self.stem_emb[g] for _, g in rows])
                x, m = self._left_pad_to(x, m, gmax)
                cand = torch.tensor([p for p, _ in rows], device=dev)
                past = [(k.index_select(0, cand), v.index_select(0, cand)) for k, v in cache_kv]
                mask = torch.cat([torch.ones(len(rows), n_pre, dtype=torch.long, device=dev), m], dim=1)
                pos = n_pre + (m.cumsum(-1) - 1).clamp(min=0)
                kv = _layers_kv(self._forward(x, mask, pos, past))
                chunks.append([(k[:, :, n_pre:], v[:, :, n_pre:]) for k, v in kv])
            # per layer: [G*P + 1, heads, gmax, dim]; the last row (zeros, masked) serves ungrouped prompts
            stem_kv = []
            for li in range(len(cache_kv)):
                k = torch.cat([c[li][0] for c in chunks], dim=0)
                v = torch.cat([c[li][1] for c in chunks], dim=0)
                stem_kv.append((torch.cat([k, k.new_zeros(1, *k.shape[1:])]), torch.cat([v, v.new_zeros(1, *v.shape[1:])])))
            null_row = G * P
        # ---- level 3, the rows (candidate, prompt), longest rest first, packed in batches
        lens = [e.shape[0] for e in self.suffix_emb]
        order = [(p, s) for s in sorted(range(S), key=lambda s: -lens[s]) for p in range(P)]
        res = torch.empty(P, S, self.label_ids.shape[1], dtype=torch.float32)
        for start in range(0, len(order), bs):
            rows = order[start : start + bs]
            B = len(rows)
            x, m = self._left_pad([self.suffix_emb[s] for _, s in rows])
            cand = torch.tensor([p for p, _ in rows], device=dev)
            ones = torch.ones(B, n_pre, dtype=torch.long, device=dev)
            if cache_kv is not None:
                past = [(k.index_select(0, cand), v.index_select(0, cand)) for k, v in cache_kv]
                glen = torch.tensor([self.group_len[s] for _, s in rows], device=dev)
                if stem_kv is not None:
                    sel = torch.tensor([self.group_of[s] * P + p if self.group_of[s] >= 0 else null_row for p, s in rows], device=dev)
                    past = [(torch.cat([k, sk.index_select(0, sel)], dim=2), torch.cat([v, sv.index_select(0, sel)], dim=2))
                            for (k, v), (sk, sv) in zip(past, stem_kv)]
                    gm = (torch.arange(gmax, device=dev)[None] >= (gmax - glen)[:, None]).long()
                    ones = torch.cat([ones, gm], dim=1)
                mask = torch.cat([ones, m], dim=1)
                pos = n_pre + glen[:, None] + (m.cumsum(-1) - 1).clamp(min=0)
                out = self._forward(x, mask, pos, past)
            else:
                pos = n_pre + (m.cumsum(-1) - 1).clamp(min=0)
                head = pre.index_select(0, cand) if n_pre else x[:, :0]
                xx = torch.cat([head, x], dim=1)
                mask = torch.cat([ones, m], dim=1)
                pos = torch.cat([torch.arange(n_pre, device=dev)[None].expand(B, -1), pos], dim=1)
                out = self._forward(xx, mask, pos, None, use_cache=False)
            logp = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)
            ids = self.label_ids[[s for _, s in rows]].to(dev)
            lab = logp.gather(1, ids).cpu()
            for r, (p, s) in enumerate(rows):
                res[p, s] = lab[r]
            if progress:
                progress(B)
        return res

    def _left_pad_to(self, x: torch.Tensor, m: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        extra = width - x.shape[1]
        if extra <= 0:
            return x, m
        return (torch.cat([x.new_zeros(x.shape[0], extra, x.shape[2]), x], dim=1),
                torch.cat([m.new_zeros(m.shape[0], extra), m], dim=1))

    def _memo_logprobs(self, X, progress=None) -> torch.Tensor:
        if not self.cfg.memo:
            return self.label_logprobs(X, progress=progress)
        import hashlib

        sp = self.as_prompts(X)
        keys = [hashlib.sha1(sp[i].float().cpu().numpy().tobytes()).hexdigest() for i in range(sp.shape[0])]
        todo = [i for i, k in enumerate(keys) if k not in self._memo]
        got = {k: self._memo[k] for k in keys if k in self._memo}
        if todo:
            fresh = self.label_logprobs(sp[todo], progress=progress)
            for j, i in enumerate(todo):
                got[keys[i]] = fresh[j]
                while len(self._memo) >= self.cfg.memo:
                    self._memo.pop(next(iter(self._memo)))
                self._memo[keys[i]] = fresh[j]
        self.memo_hits += sp.shape[0] - len(todo)
        return torch.stack([got[k] for k in keys])


class PopulationEvaluator(PromptPopulation):
    """Scores populations of soft prompts on the VSM. Build with :meth:`from_questionnaire` (real
    prompts) or directly from token ids (``seqs``: one list of ids per prompt; ``label_ids``: the
    option-label token ids per prompt; prompts ordered context-major, 24 items each)."""

    def __init__(
        self,
        model,
        seqs: Sequence[Sequence[int]],
        label_ids: Sequence[Sequence[int]],
        *,
        n_contexts: int = 1,
        cfg: PopulationConfig | None = None,
        vsm: VSMConfig | None = None,
        questionnaire: VSMQuestionnaire | None = None,
    ) -> None:
        if len(seqs) != len(label_ids) or len(seqs) != 24 * n_contexts:
            raise PluralignError(f"expected 24 x {n_contexts} prompts with labels, got {len(seqs)} / {len(label_ids)}", field="prompts")
        super().__init__(model, seqs, label_ids, cfg=cfg)
        self.vsm = vsm or VSMConfig()
        self.q = questionnaire
        self.n_contexts = n_contexts
        self._warned = False

    @classmethod
    def from_questionnaire(
        cls,
        model,
        tok,
        *,
        cfg: PopulationConfig | None = None,
        vsm: VSMConfig | None = None,
        questionnaire: VSMQuestionnaire | None = None,
    ) -> "PopulationEvaluator":
        prompts, labels = vsm_prompts(tok, questionnaire, contexts=(cfg or PopulationConfig()).contexts,
                                      chat_template=(cfg or PopulationConfig()).chat_template)
        from pluralign.evaluation.scoring import OptionScorer

        scorer = OptionScorer(model, tok)
        seqs = [scorer._encode_prompt(p) for p in prompts]
        label_ids = [scorer.label_token_ids(p, labels) for p in prompts]
        cfg = cfg or PopulationConfig()
        return cls(model, seqs, label_ids, n_contexts=len(cfg.contexts), cfg=cfg, vsm=vsm, questionnaire=questionnaire)

    def evaluate(self, X, target: HofstedeTarget | None = None, progress: Callable[[int], None] | None = None) -> PopulationResult:
        """Option distributions, mass, item means, dimension scores (and L1 loss to ``target``) per candidate."""
        lp = self._memo_logprobs(X, progress=progress).double().numpy()
        P = lp.shape[0]
        K = lp.shape[-1]
        lp = lp.reshape(P, self.n_contexts, 24, K)
        mass = np.exp(lp).sum(-1)
        w = np.exp(lp - lp.max(-1, keepdims=True))
        probs = w / w.sum(-1, keepdims=True)
        means = (probs @ np.arange(1, K + 1)).mean(1)
        scores = dimension_scores(means, self.vsm, self.q)
        loss = l1_loss(scores, target, self.vsm) if target is not None else None
        mm = float(mass.mean())
        if mm < self.cfg.min_mass and not self._warned:
            self._warned = True
            log.warning("the model puts only %.3f of its probability on the option labels (scores are renormalised)", mm)
        return PopulationResult(probs=probs, mass=mass, means=means, scores=scores, loss=loss)


def vsm_prompts(
    tok,
    questionnaire: VSMQuestionnaire | None = None,
    *,
    contexts: Sequence[str | None] = (None,),
    chat_template: bool | None = None,
) -> tuple[list[str], list[str]]:
    """The 24 VSM item prompts per context (context-major) and the option labels ``1``..``5``."""
    from pluralign.evaluation.methods import render_question
    from pluralign.evaluation.scoring import digit_labels
    from pluralign.models.chat import build_chat_prompt

    q = questionnaire or load_vsm_items()
    labels = digit_labels(5)
    prompts = []
    for ctx in contexts:
        for item in q.items:
            msgs = ([{"role": "system", "content": ctx}] if ctx else []) + [{"role": "user", "content": render_question(item, labels)}]
            prompts.append(build_chat_prompt(tok, msgs, use_chat_template=chat_template))
    return prompts, labels


def reworded_check(model, tok, prompt, target: HofstedeTarget, *, cfg: PopulationConfig | None = None,
                   vsm: VSMConfig | None = None, questionnaire: VSMQuestionnaire | str = "reworded",
                   searched: dict | None = None) -> dict:
    """Does a searched soft prompt still give its scores when the VSM items are phrased differently?

    ``prompt``: the searched embeddings, ``(tokens, hidden)``. Scores the model without a prompt
    (naive) and with ``prompt`` on ``questionnaire`` (default: the shipped second rewording,
    :data:`pluralign.data.loaders.hofstede.VSM_REWORDED_FILE`) against ``target``. ``searched``: the
    search's own ``{"naive": L1, "prompt": L1}`` on the items it was searched on, to report how much of
    the reduction from naive is kept (``kept`` = reworded reduction / searched reduction; ``None``
    when the search did not improve on naive)."""
    q = load_vsm_items(questionnaire) if isinstance(questionnaire, str) else questionnaire
    cfg = cfg or PopulationConfig()
    x = _one_prompt(prompt)
    out = {"items": getattr(q, "path", ""), "target": target.code,
           "naive": _score_one(model, tok, x[:0], target, cfg, vsm, q), "prompt": _score_one(model, tok, x, target, cfg, vsm, q)}
    out["reduction"] = 1.0 - out["prompt"]["loss"] / out["naive"]["loss"] if out["naive"]["loss"] > 0 else None
    if searched:
        gain = searched["naive"] - searched["prompt"]
        out["searched"] = dict(searched, reduction=gain / searched["naive"] if searched["naive"] > 0 else None)
        out["kept"] = (out["naive"]["loss"] - out["prompt"]["loss"]) / gain if gain > 0 else None
    return out


def rescore_exact(model, tok, prompt, target: HofstedeTarget, *, cfg: PopulationConfig | None = None,
                  vsm: VSMConfig | None = None) -> dict:
    """The VSM loss, scores and option mass of one soft prompt ``(tokens, hidden)`` without autocast.

    A search run with ``autocast="bf16"`` optimises an approximate objective; its best prompt is scored
    again here, exactly (fp32 matrix products, no memo), so the loss that is reported is the model's."""
    cfg = dataclasses.replace(cfg or PopulationConfig(), autocast="off", memo=0)
    return _score_one(model, tok, _one_prompt(prompt), target, cfg, vsm)


def _one_prompt(prompt) -> torch.Tensor:
    x = torch.as_tensor(prompt, dtype=torch.float32)
    if x.dim() != 2:
        raise PluralignError(f"the prompt must be (tokens, hidden), got shape {tuple(x.shape)}", field="prompt")
    return x


def _score_one(model, tok, x: torch.Tensor, target: HofstedeTarget, cfg: PopulationConfig, vsm: VSMConfig | None,
               questionnaire: VSMQuestionnaire | None = None) -> dict:
    """Loss, dimension scores and option mass of one prompt ``x`` ``(tokens, hidden)`` (0 tokens = no prompt)."""
    ev = PopulationEvaluator.from_questionnaire(model, tok, cfg=dataclasses.replace(cfg, tokens=x.shape[0]), vsm=vsm,
                                                questionnaire=questionnaire)
    r = ev.evaluate(x[None], target)
    return {"loss": float(r.loss[0]), "scores": dict(zip(DIMENSIONS, r.scores[0].tolist())), "mass": float(r.mean_mass[0])}


def in_context_system(country: str) -> str:
    """The in-context baseline's system message (the paper's "you are from ..." prompt)."""
    from pluralign.data.countries import country_name
    from pluralign.data.profile import _with_article

    return f"You are a person from {_with_article(country_name(country))}. Answer every question as a typical person from there would."


__all__ = ["PopulationConfig", "PopulationEvaluator", "PopulationResult", "PromptPopulation", "in_context_system", "prefix_groups",
           "reworded_check", "rescore_exact", "vsm_prompts"]
