"""`pluralign serve` as the judge of `generate-eval` / the GRPO judge reward, end to end: the
HTTP judge asks the running server (uvicorn in a thread, the tiny Llama) for one letter in both
orders, and the win-rate report counts what the server answered. The tiny model is made a judge
with a known bias (a forward hook on its output layer that always favours one letter), so the
report's numbers are known exactly: a judge that always says "A" has position bias 1, order
consistency 0 and a win rate of exactly 0.5, whatever the answers are."""

from __future__ import annotations

import pytest
import torch

from pluralign.data.preferences import PromptRecord
from pluralign.data.profile import Profile
from pluralign.errors import PluralignError
from pluralign.evaluation.generate import make_judge, win_rate
from pluralign.serve import ServeConfig, create_app

pytestmark = pytest.mark.usefixtures("one_thread")

RECORDS = [PromptRecord(id=f"r{i}", unit=f"u{i}", profile=Profile(country=c), messages=(("user", q),))
           for i, (c, q) in enumerate([("Japan", "What do people eat for breakfast?"), ("Brazil", "Which sport is most popular?"),
                                       ("Kenya", "What is a common greeting?")])]
ADAPTER = ["Rice and miso soup.", "Football.", "Jambo."]
BASE = ["Toast.", "Basketball.", "Hello."]


def _biased_engine(make_engine, tokenizer, letter: str):
    """An engine over the tiny Llama that answers every prompt with ``letter`` and then stops: its
    output layer favours the letter on a prompt's first forward pass (prefill) and the end of
    sequence on every later one (decode, one new token)."""
    engine = make_engine(max_batch=1, batch_window_ms=5)
    ids = tokenizer.encode(letter, add_special_tokens=False)
    assert len(ids) == 1, "the letter must be one token of the tiny tokenizer"
    head = engine.model.get_output_embeddings()
    first, then = torch.zeros(head.weight.shape[0]), torch.zeros(head.weight.shape[0])
    first[ids[0]] = 1e4
    then[tokenizer.eos_token_id] = 1e4
    state = {"prefill": True}

    def seen(mod, args, kwargs):
        x = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else kwargs.get("inputs_embeds")
        state["prefill"] = x is not None and x.shape[1] > 1

    engine.model.register_forward_pre_hook(seen, with_kwargs=True)
    head.register_forward_hook(lambda mod, inp, out: out + (first if state["prefill"] else then).to(out.dtype))
    return engine


@pytest.mark.parametrize("letter, bias_a", [("A", 1.0), ("B", 0.0)])
def test_serve_as_judge_both_orders(make_engine, tiny_tokenizer, serve, letter, bias_a):
    engine = _biased_engine(make_engine, tiny_tokenizer, letter)
    s = serve(create_app(engine, ServeConfig(max_tokens_limit=8)))  # runs until the module's tests end
    rep, verdicts = win_rate(RECORDS, ADAPTER, BASE, make_judge(url=s.url + "/v1"))
    n = len(RECORDS)
    # every pair was judged in both orders by the server, and every answer was a letter
    assert rep["judged_orders"] == 2 * n and rep["off_format"] == 0
    assert verdicts == [((1.0, 0.0) if letter == "A" else (0.0, 1.0))] * n
    # a judge that always names one position: all of its picks go there, no pair agrees across orders,
    # and swapping the orders cancels it exactly (the reason every pair is judged twice)
    assert rep["position_bias_A"] == bias_a
    assert rep["order_consistency"] == 0.0
    assert rep["wins"] == rep["losses"] == n and rep["win_rate"] == 0.5
    assert rep["judge"].startswith("http://127.0.0.1:")


def test_identical_answers_never_reach_the_judge(make_engine, tiny_tokenizer, serve):
    engine = _biased_engine(make_engine, tiny_tokenizer, "A")
    s = serve(create_app(engine, ServeConfig(max_tokens_limit=8)))
    rep, verdicts = win_rate(RECORDS, BASE, BASE, make_judge(url=s.url + "/v1"))
    assert verdicts == ["identical"] * len(RECORDS)
    assert rep["identical"] == len(RECORDS) and rep["judged_orders"] == 2 * len(RECORDS) and rep["win_rate"] == 0.5


def test_a_server_that_does_not_answer_a_letter_is_reported(make_engine, tiny_tokenizer, serve):
    # the tiny model as it is writes byte-level noise, not "A" or "B": every verdict is off-format,
    # and the report refuses to give a win rate instead of reporting 0 judged orders as a result
    engine = _biased_engine(make_engine, tiny_tokenizer, "Z")
    s = serve(create_app(engine, ServeConfig(max_tokens_limit=8)))
    with pytest.raises(PluralignError, match="off-format") as e:
        win_rate(RECORDS, ADAPTER, BASE, make_judge(url=s.url + "/v1"))
    assert "--judge-url" in str(e.value)
