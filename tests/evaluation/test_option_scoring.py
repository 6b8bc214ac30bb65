"""The batched option scorer equals a slow per-item reference (one unpadded forward each)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pluralign.errors import PluralignError
from pluralign.evaluation.scoring import OptionScorer, letter_labels, option_labels
from pluralign.models.chat import build_chat_prompt

QUESTION = "How important is family in your life?"
OPTIONS = ["Very important", "Rather important", "Not very important", "Not at all important"]


def _prompts(tok) -> list[str]:
    """Prompts of very different token lengths (a few tokens to ~200), chat and plain format."""
    out = []
    for reps in (0, 1, 3, 7, 14):
        q = (QUESTION + " ") * reps + "Options: 1. 2. 3. 4. Answer with the number of one option only."
        out.append(build_chat_prompt(tok, [{"role": "user", "content": q}]))
    out.append(build_chat_prompt(tok, [{"role": "system", "content": "You are taking part in a survey. A 55-year-old woman living in rural Thailand."},
                                       {"role": "user", "content": QUESTION}]))
    out.append("Options: 1. 2.\nAnswer:")  # plain, short, no trailing white space
    out.append(build_chat_prompt(tok, [{"role": "user", "content": "agree"}], use_chat_template=False))
    return out


def _ids(tok, prompt: str) -> list[int]:
    return tok(prompt, add_special_tokens=not prompt.startswith(tok.bos_token))["input_ids"]


def _ref_label_id(tok, prompt: str, label: str) -> int:
    sep = "" if prompt[-1].isspace() else " "
    base, full = _ids(tok, prompt), _ids(tok, prompt + sep + label)
    if full[: len(base)] == base and len(full) == len(base) + 1:
        return full[-1]
    # the prompt's trailing space merges with the label (" A"): the model writes the bare label next
    assert prompt[-1].isspace()
    (own,) = tok(label, add_special_tokens=False)["input_ids"]
    return own


@torch.no_grad()
def _reference_next_token(model, tok, prompt: str, labels: list[str]):
    """Slow reference: one unpadded forward, full logits, softmax over the vocabulary."""
    ids = torch.tensor([_ids(tok, prompt)])
    logp = torch.log_softmax(model(input_ids=ids).logits[0, -1].double(), -1)
    lab = [_ref_label_id(tok, prompt, l) for l in labels]
    lp = logp[lab].numpy()
    return np.exp(lp) / np.exp(lp).sum(), float(np.exp(lp).sum()), lp


@torch.no_grad()
def _reference_loglik(model, tok, prompt: str, option: str) -> float:
    sep = "" if prompt[-1].isspace() else " "
    p, full = _ids(tok, prompt), _ids(tok, prompt + sep + option)
    assert full[: len(p)] == p
    logp = torch.log_softmax(model(input_ids=torch.tensor([full])).logits[0].double(), -1)
    return float(sum(logp[t - 1, full[t]] for t in range(len(p), len(full))))


@pytest.fixture(params=["llama", "qwen2"])
def model(request, tiny_llama, tiny_qwen2):
    return {"llama": tiny_llama, "qwen2": tiny_qwen2}[request.param]


def test_prompts_span_lengths(tiny_tokenizer):
    lens = [len(_ids(tiny_tokenizer, p)) for p in _prompts(tiny_tokenizer)]
    assert min(lens) < 15 and max(lens) > 140


@pytest.mark.parametrize("batch_size", [3, 16])
def test_next_token_equals_reference(model, tiny_tokenizer, batch_size):
    prompts = _prompts(tiny_tokenizer)
    labels = [["1", "2", "3", "4"]] * len(prompts)
    labels[-2] = ["1", "2"]
    labels[-1] = ["A", "B", "C"]
    scores = OptionScorer(model, tiny_tokenizer, batch_size=batch_size).next_token(prompts, labels)
    for p, labs, s in zip(prompts, labels, scores):
        probs, mass, lp = _reference_next_token(model, tiny_tokenizer, p, labs)
        assert s.probs.shape == (len(labs),)
        assert abs(s.probs.sum() - 1.0) < 1e-9
        np.testing.assert_allclose(s.probs, probs, atol=1e-5)
        np.testing.assert_allclose(s.logprobs, lp, atol=1e-5)
        assert s.mass == pytest.approx(mass, abs=1e-5)
        assert 0 < s.mass < 1


def test_padding_actually_happens(tiny_llama, tiny_tokenizer, monkeypatch):
    """Guard: one batch mixes lengths, so the equality above covers left padding + positions."""
    sc = OptionScorer(tiny_llama, tiny_tokenizer, batch_size=16)
    seqs = [sc._encode_prompt(p) for p in _prompts(tiny_tokenizer)]
    (idx, ids, att), = list(sc._batches(seqs))
    assert att.sum(1).min() < att.shape[1] // 10 and (att[:, 0] == 0).any() and (att[:, -1] == 1).all()


def test_continuation_equals_reference(model, tiny_tokenizer):
    prompts = _prompts(tiny_tokenizer)[:4] + ["Options: 1. 2.\nAnswer:"]
    options = [OPTIONS] * 4 + [["agree", "strongly disagree", "neither"]]
    scores = OptionScorer(model, tiny_tokenizer, batch_size=5).continuation(prompts, options)
    for p, opts, s in zip(prompts, options, scores):
        ref = np.array([_reference_loglik(model, tiny_tokenizer, p, o) for o in opts])
        np.testing.assert_allclose(s.logprobs, ref, atol=1e-4)
        np.testing.assert_allclose(s.probs, np.exp(ref - ref.max()) / np.exp(ref - ref.max()).sum(), atol=1e-5)
        assert abs(s.probs.sum() - 1) < 1e-9
        assert s.mass == pytest.approx(np.exp(ref).sum(), rel=1e-4)


def test_continuation_of_single_tokens_equals_next_token(tiny_qwen2, tiny_tokenizer):
    prompts = _prompts(tiny_tokenizer)[:5]
    labs = [["1", "2", "3", "4"]] * len(prompts)
    sc = OptionScorer(tiny_qwen2, tiny_tokenizer, batch_size=4)
    for a, b in zip(sc.next_token(prompts, labs), sc.continuation(prompts, labs)):
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)


class _NoKeep(torch.nn.Module):
    """A model whose forward does not take ``logits_to_keep`` (older / custom models)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False):
        self.calls += 1
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=use_cache)


def test_logits_to_keep_and_fallback_agree(tiny_llama, tiny_tokenizer):
    prompts = _prompts(tiny_tokenizer)
    labels = [["1", "2"]] * len(prompts)
    fast = OptionScorer(tiny_llama, tiny_tokenizer, batch_size=4)
    a = fast.next_token(prompts, labels)
    assert fast._supports_keep
    wrapped = _NoKeep(tiny_llama)
    slow = OptionScorer(wrapped, tiny_tokenizer, batch_size=4)
    b = slow.next_token(prompts, labels)
    assert not slow._supports_keep and wrapped.calls == 2  # the refused call never enters forward
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.logprobs, y.logprobs, atol=1e-6)
    c = slow.continuation(prompts[:3], [OPTIONS[:2]] * 3)
    d = fast.continuation(prompts[:3], [OPTIONS[:2]] * 3)
    for x, y in zip(c, d):
        np.testing.assert_allclose(x.logprobs, y.logprobs, atol=1e-5)


class _Biased(torch.nn.Module):
    """Adds a per-row bias to one vocabulary entry: checks ``batch_extra`` reaches the right rows."""

    def __init__(self, inner, token_id):
        super().__init__()
        self.inner, self.token_id = inner, token_id

    def forward(self, input_ids, bias=None, **kw):
        out = self.inner(input_ids=input_ids, **kw)
        if bias is not None:
            out.logits[:, :, self.token_id] += bias[:, None]
        return out


def test_batch_extra_routes_per_row(tiny_llama, tiny_tokenizer):
    prompts = _prompts(tiny_tokenizer)[:6]  # chat prompts: label "1" is the same token in every row
    labels = [["1", "2"]] * len(prompts)
    sc0 = OptionScorer(tiny_llama, tiny_tokenizer, batch_size=3)
    tid = sc0.label_token_ids(prompts[0], ["1", "2"])[0]
    boost = {i: (5.0 if i % 2 else -5.0) for i in range(len(prompts))}
    seen: list[int] = []

    def extra(idx):
        seen.extend(idx)
        return {"bias": torch.tensor([boost[i] for i in idx])}

    base = sc0.next_token(prompts, labels)
    got = OptionScorer(_Biased(tiny_llama, tid), tiny_tokenizer, batch_size=3).next_token(prompts, labels, batch_extra=extra)
    assert sorted(seen) == list(range(len(prompts)))
    for i, (b, g) in enumerate(zip(base, got)):
        assert g.logprobs[1] - g.logprobs[0] == pytest.approx(b.logprobs[1] - b.logprobs[0] - boost[i], abs=1e-4)


def test_max_length_keeps_the_tail(tiny_llama, tiny_tokenizer):
    p = _prompts(tiny_tokenizer)[4]
    ids = _ids(tiny_tokenizer, p)
    (s,) = OptionScorer(tiny_llama, tiny_tokenizer, max_length=32).next_token([p], [["1", "2", "3"]])
    with torch.no_grad():
        # no system turn in this prompt: the head is keep_head (0.5) of the budget, the middle is cut
        logp = torch.log_softmax(tiny_llama(input_ids=torch.tensor([ids[:16] + ids[-16:]])).logits[0, -1].double(), -1)
    lab = [_ref_label_id(tiny_tokenizer, p, l) for l in "123"]
    np.testing.assert_allclose(s.logprobs, logp[lab].numpy(), atol=1e-5)


def test_progress_counts_every_prompt(tiny_llama, tiny_tokenizer):
    n = []
    OptionScorer(tiny_llama, tiny_tokenizer, batch_size=3).next_token(_prompts(tiny_tokenizer), [["1", "2"]] * 8, progress=n.append)
    assert sum(n) == 8 and len(n) == 3


# ------------------------------------------------------------------------------ bad labels
def test_duplicate_labels_rejected(tiny_llama, tiny_tokenizer):
    p = _prompts(tiny_tokenizer)[0]
    with pytest.raises(PluralignError, match="distinct single tokens") as ei:
        OptionScorer(tiny_llama, tiny_tokenizer).next_token([p], [["1", "1", "2"]])
    assert "field 'labels'" in str(ei.value)


def test_multi_token_labels_rejected(tiny_llama, tiny_tokenizer):
    p = _prompts(tiny_tokenizer)[0]
    lab = "Not very important"
    assert len(tiny_tokenizer(lab, add_special_tokens=False)["input_ids"]) > 1
    with pytest.raises(PluralignError, match="not one; use continuation scoring") as ei:
        OptionScorer(tiny_llama, tiny_tokenizer).next_token([p], [["1", lab]])
    assert "\n" not in str(ei.value)


def test_labels_sharing_first_token_rejected(tiny_llama, tiny_tokenizer):
    # "10" and "11" both start with the token "1" in this vocabulary (not distinct single tokens)
    p = _prompts(tiny_tokenizer)[0]
    with pytest.raises(PluralignError, match="labels"):
        OptionScorer(tiny_llama, tiny_tokenizer).next_token([p], [[str(i) for i in range(1, 12)]])


def test_empty_option_rejected(tiny_llama, tiny_tokenizer):
    with pytest.raises(PluralignError, match="adds no token"):
        OptionScorer(tiny_llama, tiny_tokenizer).continuation(["Answer: "], [["agree", ""]])


def test_option_labels_style():
    assert option_labels(4) == ["1", "2", "3", "4"]
    assert option_labels(10) == letter_labels(10)
    with pytest.raises(PluralignError, match="single-digit"):
        option_labels(11, "digits")
    with pytest.raises(PluralignError, match="too many"):
        option_labels(27)


def test_progress_counts_prompts_for_both_scorings(tiny_qwen2, tiny_tokenizer):
    """The bar's total is the number of prompts: loglik scoring (one row per option) must not overshoot it."""
    prompts = _prompts(tiny_tokenizer)[:5]
    opts = [["1", "2", "3", "4"]] * 4 + [["1", "2"]]
    sc = OptionScorer(tiny_qwen2, tiny_tokenizer, batch_size=3)
    for score in (sc.next_token, sc.continuation):
        ticks = []
        score(prompts, opts, progress=ticks.append)
        assert len(ticks) > 1 and sum(ticks) == pytest.approx(len(prompts))
