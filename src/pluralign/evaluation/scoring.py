"""Option scoring: probabilities over answer options from one forward pass per prompt.

Two scorers share one batching loop:

* :meth:`OptionScorer.next_token`: the options are single-token labels (``1``..``K`` or ``A``..);
  the next-token distribution after the prompt is read at the last position only
  (``logits_to_keep=1``) and renormalised over the labels; the mass the model put on the labels
  before renormalising is reported;
* :meth:`OptionScorer.continuation`: full log-likelihood of each option's text after the prompt
  (options that are not single tokens); all options of all prompts are packed into batches.

Batches are sorted by length and padded on the left, so the last position is the prompt's last
token for every row.

Truncation (``max_length``): a prompt longer than ``max_length`` tokens keeps its **head** (the
system turn: BOS, template header, the system prompt with the profile, and the next turn's header)
and its **tail** (the end of the question, the options, the generation prompt), and loses tokens
from the middle (the question body, few-shot demonstrations); the profile is never the part cut.
The head is the token length of the text up to the end of the system turn, located with the
tokenizer's chat template (the text between a system and a user message) or the plain
``System: ...\n\nUser: `` format; when no system turn is found, the head is ``keep_head`` ×
``max_length``. The head never takes more than ``max_length`` − ``max_length // 4`` tokens, so
at least a quarter of the budget stays for the tail. For continuation scoring, prompt + option are
truncated jointly: the option's tokens are all kept and the prompt part is truncated to
``max_length`` − (option tokens) by the same rule, so every row's prompt part is exactly the
prompt as truncated with that budget. Tokens and the cut are
:class:`pluralign.models.generation.PromptEncoder`'s (the base of :class:`OptionScorer`), so training
and ``generate-eval`` tokenise and cut a prompt exactly as scoring does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from pluralign.errors import PluralignError
from pluralign.models.generation import PromptEncoder


@dataclass
class OptionScore:
    probs: np.ndarray  # over options, renormalised, sums to 1
    mass: float  # probability the model put on the options before renormalising
    logprobs: np.ndarray  # raw log-probabilities of the options


def digit_labels(k: int) -> list[str]:
    return [str(i + 1) for i in range(k)]


def letter_labels(k: int) -> list[str]:
    return [chr(ord("A") + i) for i in range(k)]


def option_labels(k: int, style: str = "auto") -> list[str]:
    """``auto``: digits for up to 9 options, letters beyond (``10`` is two tokens in many vocabularies)."""
    if style == "digits" or (style == "auto" and k <= 9):
        if k > 9:
            raise PluralignError(f"{k} options cannot take single-digit labels; use letters", field="labels")
        return digit_labels(k)
    if k > 26:
        raise PluralignError(f"{k} options are too many for letter labels", field="labels")
    return letter_labels(k)


class OptionScorer(PromptEncoder):
    """Scores prompts with a causal LM. ``batch_size`` rows per forward pass (sorted by length).
    Prompt tokens and their truncation come from :class:`~pluralign.models.generation.PromptEncoder`
    (shared with training and generation)."""

    def __init__(self, model, tokenizer, *, batch_size: int = 16, max_length: int | None = None, forward_kwargs=None,
                 keep_head: float = 0.5):
        super().__init__(tokenizer, max_length=max_length, keep_head=keep_head)
        self.model = model
        self.batch_size = batch_size
        self.forward_kwargs = forward_kwargs or {}
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        self._label_cache: dict[tuple[str, tuple[str, ...]], list[int]] = {}
        self._supports_keep = True

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def label_token_ids(self, prompt: str, labels: Sequence[str]) -> list[int]:
        """Token id of each label as the model would write it right after ``prompt``: the first
        token where ``tokenize(prompt + label)`` departs from ``tokenize(prompt)``. A leading space
        is used when the prompt does not end in white space. Cached per prompt tail."""
        sep = "" if (not prompt or prompt[-1].isspace()) else " "
        key = (prompt[-48:], tuple(labels))
        if key in self._label_cache:
            return self._label_cache[key]
        base = self._encode(prompt[-200:])
        ids = []
        for lab in labels:
            full = self._encode(prompt[-200:] + sep + lab)
            k = 0
            while k < min(len(base), len(full)) and base[k] == full[k]:
                k += 1
            if k >= len(full):
                raise PluralignError(f"label {lab!r} adds no token after the prompt", field="labels")
            if k == len(base):
                new = full[k:]
            else:  # the label merged with the prompt's last token: use the label's own tokens
                new = self._encode(sep + lab) or self._encode(lab)
            if len(new) != 1:
                raise PluralignError(
                    f"label {lab!r} is {len(new)} tokens after the prompt, not one; use continuation scoring (--scoring loglik)",
                    field="labels",
                )
            ids.append(new[0])
        if len(set(ids)) != len(ids):
            raise PluralignError(
                f"labels {list(labels)} do not map to distinct single tokens; use continuation scoring (--scoring loglik)",
                field="labels",
            )
        self._label_cache[key] = ids
        return ids

    # ----------------------------------------------------------------- batching
    def _batches(self, seqs: list[list[int]]):
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        for s in range(0, len(order), self.batch_size):
            idx = order[s : s + self.batch_size]
            width = max(len(seqs[i]) for i in idx)
            pad = self.tok.pad_token_id
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            att = torch.zeros((len(idx), width), dtype=torch.long)
            for r, i in enumerate(idx):
                L = len(seqs[i])
                ids[r, width - L :] = torch.tensor(seqs[i])
                att[r, width - L :] = 1
            yield idx, ids.to(self.device), att.to(self.device)

    def _forward(self, ids: torch.Tensor, att: torch.Tensor, keep: int, extra: dict | None = None) -> torch.Tensor:
        kw = dict(self.forward_kwargs)
        if extra:
            kw.update(extra)
        # positions so that left padding does not shift rotary positions
        pos = (att.cumsum(-1) - 1).clamp(min=0)
        if self._supports_keep:
            try:
                out = self.model(input_ids=ids, attention_mask=att, position_ids=pos, logits_to_keep=keep, use_cache=False, **kw)
                return out.logits[:, -keep:, :].float()
            except TypeError as e:
                if "logits_to_keep" not in str(e):
                    raise
                self._supports_keep = False
        out = self.model(input_ids=ids, attention_mask=att, position_ids=pos, use_cache=False, **kw)
        return out.logits[:, -keep:, :].float()

    # ----------------------------------------------------------------- scorers
    @torch.inference_mode()
    def next_token(
        self,
        prompts: Sequence[str],
        labels: Sequence[Sequence[str]],
        *,
        progress: Callable[[int], None] | None = None,
        batch_extra: Callable[[list[int]], dict] | None = None,
    ) -> list[OptionScore]:
        """One forward pass per prompt (batched), reading only the last position's logits.

        ``batch_extra(indices)`` may return extra forward kwargs for a batch (e.g. profile
        embeddings of those rows)."""
        if len(prompts) != len(labels):
            raise ValueError("prompts and labels differ in length")
        seqs = [self._encode_prompt(p) for p in prompts]
        label_ids = [self.label_token_ids(p, labs) for p, labs in zip(prompts, labels)]
        out: list[OptionScore | None] = [None] * len(prompts)
        for idx, ids, att in self._batches(seqs):
            extra = batch_extra(idx) if batch_extra else None
            logp = torch.log_softmax(self._forward(ids, att, 1, extra)[:, -1, :], dim=-1)
            # gather every row's label log-probs on the device, one transfer per batch
            k = max(len(label_ids[i]) for i in idx)
            lab = torch.tensor([label_ids[i] + label_ids[i][:1] * (k - len(label_ids[i])) for i in idx], device=logp.device)
            sel = logp.gather(1, lab).double().cpu().numpy()
            for r, i in enumerate(idx):
                out[i] = _score(sel[r, : len(label_ids[i])])
            if progress:
                progress(len(idx))
        return out  # type: ignore[return-value]

    @torch.inference_mode()
    def continuation(
        self,
        prompts: Sequence[str],
        options: Sequence[Sequence[str]],
        *,
        progress: Callable[[float], None] | None = None,
        batch_extra: Callable[[list[int]], dict] | None = None,
    ) -> list[OptionScore]:
        """Sum of token log-probabilities of each option text after its prompt."""
        rows: list[list[int]] = []
        owners: list[tuple[int, int, int]] = []  # (prompt index, option index, n continuation tokens)
        for i, (p, opts) in enumerate(zip(prompts, options)):
            pids = self._tokenize_prompt(p)  # untruncated: prompt and prompt+option align token for token
            sep = "" if (not p or p[-1].isspace()) else " "
            for j, o in enumerate(opts):
                full = self._tokenize_prompt(p + sep + o)
                k = 0
                while k < min(len(pids), len(full)) and pids[k] == full[k]:
                    k += 1
                n = len(full) - k
                if n <= 0:
                    raise PluralignError(f"option {o!r} adds no token", field="options")
                if self.max_length and len(full) > self.max_length:
                    if n >= self.max_length:
                        raise PluralignError(
                            f"option {o!r} is {n} tokens, no room for the prompt within max_length={self.max_length}",
                            field="max_length",
                        )
                    # joint truncation: all option tokens kept, the prompt part cut in the middle
                    full = self._truncate(full[:k], p, self.max_length - n) + full[k:]
                rows.append(full)
                owners.append((i, j, n))
        lls = np.zeros(len(rows))
        for idx, ids, att in self._batches(rows):
            keep = max(owners[i][2] for i in idx) + 1
            extra = batch_extra([owners[i][0] for i in idx]) if batch_extra else None
            logp = torch.log_softmax(self._forward(ids, att, keep, extra), dim=-1)
            # position t predicts token t+1: the last keep-1 tokens, of which each row's last n count
            tok_lp = logp[:, :-1, :].gather(-1, ids[:, -(keep - 1) :, None]).squeeze(-1)
            n = torch.tensor([owners[i][2] for i in idx], device=tok_lp.device)
            mask = torch.arange(keep - 1, device=tok_lp.device)[None, :] >= (keep - 1 - n)[:, None]
            row_ll = torch.where(mask, tok_lp, torch.zeros_like(tok_lp)).double().sum(-1).cpu().numpy()
            for r, i in enumerate(idx):
                lls[i] = row_ll[r]
            if progress:  # in prompts (as next_token): each row is one of its prompt's options
                progress(sum(1.0 / len(options[owners[i][0]]) for i in idx))
        out: list[OptionScore] = []
        k = 0
        for i, opts in enumerate(options):
            lp = lls[k : k + len(opts)]
            k += len(opts)
            out.append(_score(lp))
        return out


def _score(lp: np.ndarray) -> OptionScore:
    m = lp.max()
    w = np.exp(lp - m)
    mass = float(np.exp(lp).sum())
    return OptionScore(probs=w / w.sum(), mass=mass, logprobs=lp)
