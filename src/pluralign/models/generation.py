"""Generation kernels: the prompt of a record, its tokens, batched generation and decoding.

They sit on the models floor so that every floor above uses the same code (see
docs/architecture.md, "Import floors"):

* :func:`record_messages`, :func:`prompt_text`: the chat prompt of a
  :class:`~pluralign.data.preferences.PromptRecord` (a system turn describing the profile when
  ``profile_prompt``), rendered with the model's chat template or the plain fallback of
  :func:`~pluralign.models.chat.build_chat_prompt`; what text SFT / DPO and GRPO
  (:mod:`pluralign.training.text`, :mod:`pluralign.training.grpo`) train on is what
  ``pluralign generate-eval`` (:mod:`pluralign.evaluation.generate`) generates from;
* :class:`PromptEncoder`, :func:`encode_prompt`: a prompt's tokens (BOS only when the text lacks
  one) cut to ``max_length`` in the middle: the head with the system turn (the profile) and the
  tail (the question's end, the generation prompt) are kept. The option scorer
  (:class:`pluralign.evaluation.scoring.OptionScorer`) is a :class:`PromptEncoder`, so a prompt
  is tokenised and cut alike for scoring, training and generation (the rule in full: the
  docstring of :mod:`pluralign.evaluation.scoring`);
* :func:`generate_ids`, :func:`decode`: left-padded batched ``generate`` with one
  ``profile_embeds`` row per prompt (a profile-routed adapter routes every decode step), cut after
  the first EOS; the completion's text without EOS and special tokens.

``pluralign serve`` (:mod:`pluralign.serve.engine`: continuous batching with a KV cache per
request) and the word-association generation (:func:`pluralign.wordassoc.generate.generate_texts`:
several samples per cue) have decode loops of their own.
"""

from __future__ import annotations

from typing import Sequence

import torch

from pluralign.data.preferences import PromptRecord, profile_system
from pluralign.models.chat import build_chat_prompt


# --------------------------------------------------------------------------- prompts of records
def record_messages(record: PromptRecord, *, role: str = "self", profile_prompt: bool = True) -> list[dict]:
    msgs = [{"role": "system", "content": profile_system(record.profile, role)}] if profile_prompt else []
    return msgs + record.chat()


def prompt_text(tok, record: PromptRecord, *, role: str = "self", profile_prompt: bool = True, chat_template: bool = True) -> str:
    """The exact prompt string training and ``generate-eval`` use for ``record``."""
    return build_chat_prompt(tok, record_messages(record, role=role, profile_prompt=profile_prompt),
                             use_chat_template=None if chat_template else False)


# --------------------------------------------------------------------------- prompt tokens
class PromptEncoder:
    """A prompt's tokens and their middle cut to ``max_length`` (``keep_head``: the head's share of
    the budget when no system turn is found). Base of the option scorer."""

    def __init__(self, tokenizer, *, max_length: int | None = None, keep_head: float = 0.5):
        self.tok = tokenizer
        self.max_length = max_length
        self.keep_head = keep_head  # head share of max_length when no system turn is found
        self._sys_sep: str | None | bool = False  # False = not probed yet

    def _encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def _add_special(self, text: str) -> bool:
        # a chat-templated prompt carries its own BOS; a plain one gets the tokenizer's default
        return not (self.tok.bos_token and text.startswith(self.tok.bos_token))

    def _tokenize_prompt(self, text: str) -> list[int]:
        """The prompt's tokens, not truncated."""
        return self.tok(text, add_special_tokens=self._add_special(text))["input_ids"]

    def _encode_prompt(self, text: str, limit: int | None = None) -> list[int]:
        """The prompt's tokens, truncated to ``limit`` (default ``max_length``) by cutting the middle
        (see the module docstring): the head with the system prompt / profile is kept."""
        return self._truncate(self._tokenize_prompt(text), text, self.max_length if limit is None else limit)

    def _truncate(self, ids: list[int], text: str, limit: int | None) -> list[int]:
        """``ids`` (the tokens of ``text``, or of a prefix of it) cut to ``limit`` tokens: the first
        ``head`` tokens and the last ``limit - head``."""
        if not limit or len(ids) <= limit:
            return ids
        head = self.head_tokens(text, limit)
        return ids[:head] + ids[len(ids) - (limit - head) :]

    def head_tokens(self, text: str, limit: int) -> int:
        """How many leading tokens of ``text`` truncation to ``limit`` keeps."""
        cap = limit - max(1, limit // 4)
        end = self._system_turn_end(text)
        if end is None:
            return max(0, min(cap, int(round(self.keep_head * limit))))
        return max(0, min(cap, self._tokens_before(text, end)))

    def _tokens_before(self, text: str, end: int) -> int:
        """Number of tokens of ``text`` that start before character ``end`` (a token straddling it counts)."""
        add = self._add_special(text)
        try:
            offs = self.tok(text, add_special_tokens=add, return_offsets_mapping=True)["offset_mapping"]
        except (NotImplementedError, TypeError, ValueError, KeyError):
            return len(self.tok(text[:end], add_special_tokens=add)["input_ids"])
        n = 0
        for i, (a, b) in enumerate(offs):
            if a >= end and b > a:
                return i
            n = i + 1
        return n

    _PLAIN_SEP = "\n\nUser: "

    def _system_turn_end(self, text: str) -> int | None:
        """Character offset where the system turn and the next turn's header end, or None."""
        bos = self.tok.bos_token or ""
        body = text[len(bos):] if bos and text.startswith(bos) else text
        if body.startswith("System: "):  # the plain fallback format of build_chat_prompt
            i = text.find(self._PLAIN_SEP)
            return i + len(self._PLAIN_SEP) if i >= 0 else None
        sep = self._system_separator()
        if sep:
            i = text.find(sep)
            if i >= 0:
                return i + len(sep)
        return None

    def _system_separator(self) -> str | None:
        """What the chat template writes between a system message's content and a user message's
        content (probed once with two marker messages); None without a usable template."""
        if self._sys_sep is not False:
            return self._sys_sep  # type: ignore[return-value]
        sep = None
        if getattr(self.tok, "chat_template", None):
            s_mark, u_mark = "\u2063pluralign-system\u2063", "\u2063pluralign-user\u2063"
            try:
                r = self.tok.apply_chat_template(
                    [{"role": "system", "content": s_mark}, {"role": "user", "content": u_mark}], tokenize=False,
                    add_generation_prompt=False,
                )
                a, b = r.find(s_mark), r.find(u_mark)
                if 0 <= a < b:
                    cand = r[a + len(s_mark) : b]
                    sep = cand if cand.strip() else None
            except Exception:  # templates that reject a system role
                sep = None
        self._sys_sep = sep
        return sep


def encode_prompt(tok, text: str, max_length: int | None = None) -> list[int]:
    """Prompt tokens by the evaluation scorer's rules (BOS only when the text lacks one; over
    ``max_length``: the middle is cut, the system turn with the profile kept)."""
    if tok.pad_token_id is None:  # as the scorer does (and always did here): pad with EOS
        tok.pad_token = tok.eos_token
    return PromptEncoder(tok, max_length=max_length)._encode_prompt(text)


# --------------------------------------------------------------------------- generation
@torch.no_grad()
def generate_ids(model, tok, prompts: Sequence[Sequence[int]], *, profile_embeds: torch.Tensor | None = None,
                 max_new_tokens: int = 32, do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
                 top_k: int = 0, batch_size: int | None = None) -> list[list[int]]:
    """Completion token ids per prompt (left-padded batches; cut after the first EOS, which is
    kept). ``profile_embeds`` ``[N, D]``: one row per prompt, handed to the adapted model's
    ``generate`` (routing every decode step); None for unrouted models. Sampling is plain
    temperature / top-p / top-k sampling (the checkpoint's generation defaults are not used)."""
    from transformers import GenerationConfig  # lazy: slow to import; prompt-only callers skip it

    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    device = next(model.parameters()).device
    out: list[list[int]] = []
    bs = batch_size or len(prompts) or 1
    for s in range(0, len(prompts), bs):
        chunk = [list(p) for p in prompts[s : s + bs]]
        P = max(len(p) for p in chunk)
        ids = torch.full((len(chunk), P), int(pad), dtype=torch.long)
        att = torch.zeros((len(chunk), P), dtype=torch.long)
        for i, p in enumerate(chunk):
            ids[i, P - len(p) :] = torch.tensor(p, dtype=torch.long)
            att[i, P - len(p) :] = 1
        # a fresh generation config: a checkpoint's own defaults (repetition penalty, top-k, min-p, ...)
        # would make the sampling distribution differ from the policy whose log-probs GRPO trains
        gc = GenerationConfig(max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=eos, use_cache=True, do_sample=do_sample,
                              **(dict(temperature=temperature, top_p=top_p, top_k=top_k) if do_sample else {}))
        kw: dict = dict(input_ids=ids.to(device), attention_mask=att.to(device), generation_config=gc)
        if profile_embeds is not None:
            kw["profile_embeds"] = profile_embeds[s : s + bs].to(device)
        seq = model.generate(**kw)[:, P:].tolist()
        for row in seq:
            if eos is not None and eos in row:
                row = row[: row.index(eos) + 1]
            out.append(row)
    return out


def decode(tok, ids: Sequence[int]) -> str:
    return tok.decode([t for t in ids if t != tok.eos_token_id], skip_special_tokens=True).strip()


__all__ = ["record_messages", "prompt_text", "PromptEncoder", "encode_prompt", "generate_ids", "decode"]
