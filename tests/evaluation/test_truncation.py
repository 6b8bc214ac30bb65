"""Truncation with ``max_length``: prompt + option are cut jointly, and the profile is never cut.

Before issue 8 the prompt and prompt+option were left-truncated separately, so their token
prefixes no longer lined up (wrong continuation counts, a size-mismatch crash), and left
truncation dropped the system prompt with the profile first (also in training rows).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pluralign.data import IndividualExample, Profile, SurveyDataset, SurveyItem
from pluralign.evaluation.methods import persona_system, render_question
from pluralign.evaluation.scoring import OptionScorer, option_labels
from pluralign.models.chat import build_chat_prompt
from pluralign.training.data import encode_dataset

QUESTION = "How important is family in your life?"
OPTIONS = ["Very important", "Rather important", "Not very important", "Not at all important"]
PROFILE = Profile(country="Thailand", sex="female", age=55, settlement="rural")


def _long_question(reps: int) -> str:
    return (QUESTION + " ") * reps + "Options: 1. 2. 3. 4. Answer with the number of one option only."


def _persona_prompt(tok, reps: int = 12, chat: bool = True) -> str:
    msgs = [{"role": "system", "content": persona_system(PROFILE)}, {"role": "user", "content": _long_question(reps)}]
    return build_chat_prompt(tok, msgs, use_chat_template=None if chat else False)


def _ids(tok, prompt: str) -> list[int]:
    return tok(prompt, add_special_tokens=not prompt.startswith(tok.bos_token))["input_ids"]


@torch.no_grad()
def _loglik(model, prefix: list[int], cont: list[int]) -> float:
    full = prefix + cont
    logp = torch.log_softmax(model(input_ids=torch.tensor([full])).logits[0].double(), -1)
    return float(sum(logp[t - 1, full[t]] for t in range(len(prefix), len(full))))


@pytest.mark.parametrize("max_length", [20, 48, 120])
def test_continuation_with_small_max_length_equals_truncated_prompt(tiny_llama, tiny_tokenizer, max_length):
    tok = tiny_tokenizer
    prompts = [
        _persona_prompt(tok, 6),
        build_chat_prompt(tok, [{"role": "user", "content": _long_question(4)}]),
        _persona_prompt(tok, 3, chat=False).rstrip(),  # plain format, "...Assistant:"
        "Options: 1. 2.\nAnswer:",  # short: not truncated at all for the larger limits
    ]
    options = [OPTIONS, OPTIONS, OPTIONS, ["agree", "strongly disagree", "neither"]]
    sc = OptionScorer(tiny_llama, tok, batch_size=3, max_length=max_length)
    scores = sc.continuation(prompts, options)  # used to crash with a size mismatch
    ref_sc = OptionScorer(tiny_llama, tok)  # the reference truncates through its own budget argument
    for p, opts, s in zip(prompts, options, scores):
        sep = "" if p[-1].isspace() else " "
        pids = _ids(tok, p)
        want = []
        for o in opts:
            full = _ids(tok, p + sep + o)
            assert full[: len(pids)] == pids
            cont = full[len(pids) :]
            budget = max_length - len(cont) if len(full) > max_length else None
            prefix = ref_sc._encode_prompt(p, limit=budget) if budget else pids
            assert len(prefix) + len(cont) <= max_length or budget is None
            want.append(_loglik(tiny_llama, prefix, cont))
        np.testing.assert_allclose(s.logprobs, want, atol=1e-4)
        assert np.isfinite(s.logprobs).all() and abs(s.probs.sum() - 1) < 1e-9


def test_continuation_counts_every_option_token(tiny_llama, tiny_tokenizer, monkeypatch):
    """Each row is exactly max_length long and the scored part is the option's tokens."""
    tok = tiny_tokenizer
    p = _persona_prompt(tok, 8)
    sc = OptionScorer(tiny_llama, tok, batch_size=8, max_length=30)
    seen = []
    real = sc._batches

    def spy(rows):
        seen.extend(rows)
        return real(rows)

    monkeypatch.setattr(sc, "_batches", spy)
    sc.continuation([p], [OPTIONS])
    pids = _ids(tok, p)
    for row, o in zip(seen, OPTIONS):
        cont = _ids(tok, p + o)[len(pids) :]
        assert len(row) == 30 and row[-len(cont) :] == cont


def test_option_longer_than_max_length_is_a_clear_error(tiny_llama, tiny_tokenizer):
    from pluralign.errors import PluralignError

    with pytest.raises(PluralignError, match="max_length=3"):
        OptionScorer(tiny_llama, tiny_tokenizer, max_length=3).continuation([_persona_prompt(tiny_tokenizer)], [["Not at all important"]])


@pytest.mark.parametrize("chat", [True, False])
def test_long_prompt_keeps_the_profile_and_the_tail(tiny_tokenizer, chat):
    tok = tiny_tokenizer
    p = _persona_prompt(tok, 12, chat=chat)
    ids = _ids(tok, p)
    sc = OptionScorer(None, tok, max_length=128)
    cut = sc._encode_prompt(p)
    assert len(ids) > 128 and len(cut) == 128
    text = tok.decode(cut)
    assert persona_system(PROFILE) in text  # the whole system prompt, profile included
    assert text.endswith(tok.decode(ids[-10:]))  # the options and the generation prompt
    assert text.count(QUESTION) < 12  # the question body is what was cut
    # the head is exactly the system turn's tokens
    head = sc.head_tokens(p, 128)
    assert cut[:head] == ids[:head] and persona_system(PROFILE) in tok.decode(ids[:head])


def test_next_token_with_max_length_equals_truncated_prompt(tiny_llama, tiny_tokenizer):
    tok = tiny_tokenizer
    p = _persona_prompt(tok, 10)
    sc = OptionScorer(tiny_llama, tok, max_length=128)
    (s,) = sc.next_token([p], [["1", "2", "3", "4"]])
    cut = sc._encode_prompt(p)
    assert persona_system(PROFILE) in tok.decode(cut)
    with torch.no_grad():
        logp = torch.log_softmax(tiny_llama(input_ids=torch.tensor([cut])).logits[0, -1].double(), -1)
    np.testing.assert_allclose(s.logprobs, logp[sc.label_token_ids(p, list("1234"))].numpy(), atol=1e-5)


def test_training_rows_keep_the_profile(tiny_tokenizer):
    tok = tiny_tokenizer
    item = SurveyItem("q1", " ".join([QUESTION] * 12), tuple(OPTIONS))
    ds = SurveyDataset("t", "individual", {"q1": item}, [IndividualExample("r1", PROFILE, "q1", 2)], source="hand")
    (row,) = encode_dataset(tok, ds, max_length=128)
    assert len(row.input_ids) == 129  # 128 prompt tokens + the answer label
    assert persona_system(PROFILE) in tok.decode(row.input_ids)
    labs = option_labels(4)
    assert row.input_ids[-1] == row.option_ids[2]
    assert render_question(item, labs)[-20:] in tok.decode(row.input_ids)


def test_system_turn_is_found_in_templates_and_plain_text(tiny_tokenizer):
    sc = OptionScorer(None, tiny_tokenizer, max_length=40)
    p = _persona_prompt(tiny_tokenizer, 2)
    end = sc._system_turn_end(p)
    assert p[:end].endswith("</s>\n<s>user\n") and persona_system(PROFILE) in p[:end]
    q = _persona_prompt(tiny_tokenizer, 2, chat=False)
    assert q[: sc._system_turn_end(q)].endswith("\n\nUser: ")
    assert sc._system_turn_end(build_chat_prompt(tiny_tokenizer, [{"role": "user", "content": QUESTION}])) is None
