"""The hot loop: score a whole population of soft prompts on the VSM items in batched forward passes.

For P candidate prompts ``X[P, T, hidden]`` and S prompts (24 VSM items × optional contexts:
personas or paraphrases given as system messages), every (candidate, prompt) row is scored from
``inputs_embeds`` = ``[virtual tokens][prompt tokens]``, reading only the last position's logits
(``logits_to_keep=1``) at the option labels.

Shared structure is reused: the prompts are tokenised and embedded once; the token prefix that all
prompts share (chat-template header, default system prompt) is run once per candidate together with
its virtual tokens and its key/value cache is repeated across that candidate's rows (``prefix_cache``);
the remaining suffixes are packed into left-padded batches of ``batch_size`` rows sorted by length,
so padding stays small. With ``prefix_cache=False`` each row is run in full (the reference path).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from pluralign.blackbox.vsm import VSMConfig, dimension_scores, l1_loss
from pluralign.data.loaders.hofstede import HofstedeTarget, VSMQuestionnaire, load_vsm_items
from pluralign.errors import PluralignError

log = logging.getLogger(__name__)


@dataclass
class PopulationConfig:
    tokens: int = field(default=10, metadata={"help": "Virtual tokens T prepended to every prompt."})
    batch_size: int = field(default=64, metadata={"help": "(candidate, prompt) rows per forward pass."})
    prefix_cache: bool = field(default=True, metadata={"help": "Run the token prefix shared by all prompts once per candidate and reuse its KV cache."})
    chat_template: bool | None = field(default=None, metadata={"help": "Use the tokenizer's chat template (None = when it has one)."})
    contexts: tuple[str | None, ...] = field(
        default=(None,),
        metadata={"help": "System messages, one set of 24 prompts each (personas / paraphrases); None = the model's default. Item means are averaged over contexts."},
    )
    min_mass: float = field(default=0.05, metadata={"help": "Warn when the mean probability on the option labels is below this."})
    memo: int = field(default=0, metadata={"help": "Remember the label log-probabilities of up to this many candidates (re-asked or shared initial populations are not re-run); 0 = off."})


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


class PopulationEvaluator:
    """Scores populations of soft prompts. Build with :meth:`from_questionnaire` (real prompts) or
    directly from token ids (``seqs``: one list of ids per prompt; ``label_ids``: the option-label
    token ids per prompt; prompts ordered context-major, 24 items each)."""

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
        self.model = model
        self.cfg = cfg or PopulationConfig()
        self.vsm = vsm or VSMConfig()
        self.q = questionnaire
        self.n_contexts = n_contexts
        if len(seqs) != len(label_ids) or len(seqs) != 24 * n_contexts:
            raise PluralignError(f"expected 24 x {n_contexts} prompts with labels, got {len(seqs)} / {len(label_ids)}", field="prompts")
        self.seqs = [list(s) for s in seqs]
        self.label_ids = torch.tensor([list(x) for x in label_ids], dtype=torch.long)
        emb = model.get_input_embeddings()
        self.hidden = int(emb.weight.shape[1])
        self.device = emb.weight.device
        self.dtype = emb.weight.dtype
        # the token prefix shared by every prompt (each keeps at least one suffix token)
        lp = 0
        if self.cfg.prefix_cache:
            shortest = min(len(s) for s in self.seqs)
            while lp < shortest - 1 and all(s[lp] == self.seqs[0][lp] for s in self.seqs):
                lp += 1
        self.prefix_len = lp
        with torch.no_grad():
            self.prefix_emb = emb(torch.tensor(self.seqs[0][:lp], dtype=torch.long, device=self.device)) if lp else None
            self.suffix_emb = [emb(torch.tensor(s[lp:], dtype=torch.long, device=self.device)) for s in self.seqs]
        self.n_forward = 0
        self._warned = False
        self._memo: dict[str, torch.Tensor] = {}
        self.memo_hits = 0

    # ------------------------------------------------------------------ construction from the VSM
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

    @torch.inference_mode()
    def label_logprobs(self, X, progress: Callable[[int], None] | None = None) -> torch.Tensor:
        """``[P, S, K]`` log-probabilities of the option labels for every candidate and prompt."""
        sp = self.as_prompts(X)
        P, T, _ = sp.shape
        S = len(self.seqs)
        lp = self.prefix_len
        # ---- shared prefix: [virtual tokens][common prefix] once per candidate
        cache_kv = None
        if lp or T:
            pre = sp if self.prefix_emb is None else torch.cat([sp, self.prefix_emb[None].expand(P, -1, -1)], dim=1)
        if self.cfg.prefix_cache and (lp + T) > 0:
            pos = torch.arange(T + lp, device=self.device)[None].expand(P, -1)
            out = self.model(inputs_embeds=pre, position_ids=pos, use_cache=True, logits_to_keep=1)
            self.n_forward += 1
            cache_kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        n_pre = T + lp
        # ---- rows (candidate, prompt), longest prompts first, packed in batches
        lens = [e.shape[0] for e in self.suffix_emb]
        order = [(p, s) for s in sorted(range(S), key=lambda s: -lens[s]) for p in range(P)]
        res = torch.empty(P, S, self.label_ids.shape[1], dtype=torch.float32)
        bs = max(1, self.cfg.batch_size)
        for start in range(0, len(order), bs):
            rows = order[start : start + bs]
            width = max(lens[s] for _, s in rows)
            B = len(rows)
            x = torch.zeros(B, width, self.hidden, dtype=self.dtype, device=self.device)
            m = torch.zeros(B, width, dtype=torch.long, device=self.device)
            for r, (_, s) in enumerate(rows):
                L = lens[s]
                x[r, width - L :] = self.suffix_emb[s]
                m[r, width - L :] = 1
            cand = torch.tensor([p for p, _ in rows], device=self.device)
            pos = n_pre + (m.cumsum(-1) - 1).clamp(min=0)
            if cache_kv is not None:
                from transformers import DynamicCache

                cache = DynamicCache(ddp_cache_data=[(k.index_select(0, cand), v.index_select(0, cand)) for k, v in cache_kv])
                mask = torch.cat([torch.ones(B, n_pre, dtype=torch.long, device=self.device), m], dim=1)
                out = self.model(inputs_embeds=x, attention_mask=mask, position_ids=pos, past_key_values=cache,
                                 use_cache=True, logits_to_keep=1)
            else:
                head = pre.index_select(0, cand) if n_pre else x[:, :0]
                xx = torch.cat([head, x], dim=1)
                mask = torch.cat([torch.ones(B, n_pre, dtype=torch.long, device=self.device), m], dim=1)
                pos = torch.cat([torch.arange(n_pre, device=self.device)[None].expand(B, -1), pos], dim=1)
                out = self.model(inputs_embeds=xx, attention_mask=mask, position_ids=pos, use_cache=False, logits_to_keep=1)
            self.n_forward += 1
            logp = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)
            ids = self.label_ids[[s for _, s in rows]].to(self.device)
            lab = logp.gather(1, ids).cpu()
            for r, (p, s) in enumerate(rows):
                res[p, s] = lab[r]
            if progress:
                progress(B)
        return res

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


def in_context_system(country: str) -> str:
    """The in-context baseline's system message (the paper's "you are from ..." prompt)."""
    from pluralign.data.countries import country_name
    from pluralign.data.profile import _with_article

    return f"You are a person from {_with_article(country_name(country))}. Answer every question as a typical person from there would."


__all__ = ["PopulationConfig", "PopulationEvaluator", "PopulationResult", "in_context_system", "vsm_prompts"]
