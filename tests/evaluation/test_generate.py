"""Open-ended evaluation: win rate in both orders with ties, judges (local log-probs, an
OpenAI-compatible endpoint: off-format, down, HTTP error), diversity metrics, BLEnD match and the
judge / human-answer agreement, end to end on tiny models."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import pytest
import torch

from conftest import make_tiny_model

from pluralign.data.loaders import load_preferences
from pluralign.data.preferences import PromptRecord
from pluralign.data.profile import Profile
from pluralign.errors import PluralignError
from pluralign.evaluation.generate import (
    GenEvalConfig, HTTPJudge, Judge, LocalJudge, answer_entropy, distinct_n, diversity, evaluate_generation, parse_verdict, win_rate,
)

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "data"
pytestmark = pytest.mark.usefixtures("one_thread")


def _rec(i, unit="u", country="Spain", prompt="What do people eat?"):
    return PromptRecord(id=f"r{i}", unit=unit, profile=Profile(country=country), messages=(("user", prompt),))


class FixedJudge(Judge):
    """P(A better) from a rule on the texts: prefers the text containing 'good'; 0.5 if neither; None for 'weird'."""

    name = "fixed"

    def __init__(self, bias_a: float = 0.0):
        self.bias_a = bias_a

    def prefer(self, items):
        out = []
        for _, a, b, _ in items:
            if "weird" in a or "weird" in b:
                out.append(None)
            elif ("good" in a) == ("good" in b):
                out.append(0.5 + self.bias_a)
            else:
                out.append(0.9 if "good" in a else 0.1)
        return out


def test_win_rate_counts_both_orders_ties_identical_and_off_format():
    recs = [_rec(i) for i in range(5)]
    adapter = ["good one", "plain", "same", "weird", "bad"]
    base = ["bad one", "plain too", "same", "fine", "good"]
    rep, verdicts = win_rate(recs, adapter, base, FixedJudge())
    assert verdicts[2] == "identical"
    # r0: 2 wins; r1: judge 0.5 both orders -> 2 ties; r2 identical -> 2 ties; r3: off-format x2; r4: 2 losses
    assert (rep["wins"], rep["ties"], rep["losses"], rep["off_format"], rep["identical"]) == (2, 4, 2, 2, 1)
    assert rep["win_rate"] == pytest.approx((2 + 0.5 * 4) / 8)
    assert rep["order_consistency"] == 1.0
    # a judge that always leans to A: the adapter wins as A and loses as B -> inconsistent, position bias 1
    rep2, _ = win_rate(recs[1:2], ["plain"], ["plain too"], FixedJudge(bias_a=0.2))
    assert (rep2["wins"], rep2["losses"], rep2["position_bias_A"], rep2["order_consistency"]) == (1, 1, 1.0, 0.0)
    # tie margin
    rep3, _ = win_rate(recs[1:2], ["plain"], ["plain too"], FixedJudge(bias_a=0.2), tie_margin=0.25)
    assert rep3["ties"] == 2
    # every verdict off-format: one clear error
    with pytest.raises(PluralignError, match="off-format"):
        win_rate(recs[:1], ["weird"], ["x"], FixedJudge())


def test_parse_verdict():
    assert parse_verdict("A") == 1.0 and parse_verdict(" b.") == 0.0 and parse_verdict('"Response A"') == 1.0
    assert parse_verdict("**B**") == 0.0
    for bad in ("Both", "Neither", "", "I think A", "Absolutely"):
        assert parse_verdict(bad) is None, bad


def _chat_answer(text):
    return {"choices": [{"message": {"role": "assistant", "content": text}}]}


def test_http_judge_parses_counts_off_format_and_reports_errors():
    seen = []

    def handler(req: httpx.Request):
        if req.url.path.endswith("/models"):
            return httpx.Response(200, json={"data": [{"id": "judge-m"}]})
        body = json.loads(req.content)
        seen.append(body)
        user = body["messages"][-1]["content"]
        text = "A" if "Response A:\ngood" in user else "B" if "Response B:\ngood" in user else "Both are fine"
        return httpx.Response(200, json=_chat_answer(text))

    j = HTTPJudge("http://judge.test/v1", transport=httpx.MockTransport(handler))
    assert j.url == "http://judge.test/v1/chat/completions"
    items = [("q?", "good", "bad", Profile(country="Iran")), ("q?", "bad", "good", None), ("q?", "x", "y", None)]
    assert j.prefer(items) == [1.0, 0.0, None]
    assert seen[0]["model"] == "judge-m" and seen[0]["temperature"] == 0 and "Iran" in seen[0]["messages"][-1]["content"]
    assert j.raw_off_format == ["Both are fine"]
    rep, _ = win_rate([_rec(0), _rec(1)], ["good", "x"], ["bad", "y"], j)
    assert rep["wins"] == 2 and rep["off_format"] == 2

    err = HTTPJudge("http://judge.test", api_model="m", transport=httpx.MockTransport(lambda r: httpx.Response(500, text="boom")))
    with pytest.raises(PluralignError, match="HTTP 500") as e:
        err.prefer(items[:1])
    assert "--judge-url" in str(e.value) and "\n" not in str(e.value)

    with socket.socket() as s:  # a port nobody listens on: the endpoint is down
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = HTTPJudge(f"http://127.0.0.1:{port}/v1", api_model="m", timeout=2.0)
    with pytest.raises(PluralignError, match="not reachable") as e:
        down.prefer(items[:1])
    assert "--judge-url" in str(e.value)
    with pytest.raises(PluralignError, match="http"):
        HTTPJudge("judge.test:80")


def test_local_judge_reads_A_B_log_probs(tiny_tokenizer):
    j = LocalJudge(make_tiny_model("llama"), tiny_tokenizer, batch_size=2)
    items = [("q?", "porridge", "tea", Profile(country="United Kingdom")), ("q?", "tea", "porridge", None)]
    p = j.prefer(items)
    assert all(v is not None and 0 < v < 1 for v in p)
    both = j.both_orders(items[:1])
    assert len(both) == 1 and all(0 < v < 1 for v in both[0])
    assert len(j.masses) == 4 and all(0 < m < 1 for m in j.masses)
    strict = LocalJudge(j.model, tiny_tokenizer, min_mass=0.99)  # a random tiny LM puts little mass on A/B: off-format
    assert strict.prefer(items) == [None, None]


def test_diversity_metrics():
    assert distinct_n(["a b c", "a b d"], 2) == pytest.approx(3 / 4)
    assert distinct_n(["a", "b"], 2) is None
    assert answer_entropy(["Tea.", "tea", "coffee", "Coffee"]) == pytest.approx(1.0)
    recs = [_rec(0, "q1", "Spain"), _rec(1, "q1", "Iran"), _rec(2, "q2", "Spain"), _rec(3, "q1", "Spain")]
    d = diversity(recs, ["tea now", "coffee now", "x", "ignored: same profile and prompt"])
    assert d["prompts"] == 1 and d["entropy_bits"] == pytest.approx(1.0) and d["entropy_max_bits"] == pytest.approx(1.0)
    # user-profile data (PRISM / Community Alignment): the same prompt TEXT across profiles
    d2 = diversity([_rec(0, "c1", "Spain", "Hi?"), _rec(1, "c2", "Iran", "hi?")], ["a b", "a c"], role="user")
    assert d2["prompts"] == 1 and d2["distinct2"] == 1.0


def test_evaluate_generation_end_to_end(tiny_tokenizer):
    ds = load_preferences(FIX / "blend")
    records = ds.records[:6]
    base = make_tiny_model("llama", seed=0)
    adapted = make_tiny_model("llama", seed=1)

    class MatchJudge(Judge):  # prefers the answer that mentions an answer of the UK / Mexico / China annotators
        name = "match"

        def prefer(self, items):
            return [0.8 if any(w in a for w in ("porridge", "football", "tea", "chilaquiles", "congee")) else 0.3 for _, a, b, _ in items]

    import pluralign.evaluation.generate as G

    real = G._generate
    outputs = {"adapter": [r.answers[0][0] for r in records], "base": ["no idea"] * len(records)}

    def fake_generate(model, tok, recs, cfg, *, role, profile_kwargs=None):
        return outputs["adapter" if model is adapted else "base"][: len(recs)]

    G._generate = fake_generate
    try:
        rep = evaluate_generation(adapted, base, tiny_tokenizer, records, role="self", judge=MatchJudge(), cfg=GenEvalConfig())
    finally:
        G._generate = real
    assert rep["blend_match"]["adapter_accuracy"] == 1.0 and rep["blend_match"]["base_accuracy"] == 0.0
    assert rep["blend_match"]["adapter_weighted"] == 1.0
    h = rep["judge_human_agreement"]
    assert h["decisive"] == 6 and h["agreement"] is not None
    assert rep["diversity"]["adapter"]["prompts"] >= 1 and len(rep["outputs"]) == 6
    # and for real: generation with tiny models, greedy, no judge
    rep = evaluate_generation(adapted, base, tiny_tokenizer, records[:3], role="self", cfg=GenEvalConfig(max_new_tokens=3))
    assert len(rep["outputs"]) == 3 and "win_rate" not in rep and "blend_match" in rep


def test_http_judge_against_pluralign_serve(tiny_model_dir):
    """`pluralign serve` is an OpenAI-compatible judge endpoint (a random tiny LM answers off-format
    mostly: what matters is that the request is accepted and the verdict parsed or counted)."""
    pytest.importorskip("uvicorn")
    from pluralign.serve import ServeConfig, create_app, load_engine
    from tests.serve.conftest import Server

    eng = load_engine(str(tiny_model_dir), model_id="tiny", dtype="fp32", device="cpu")
    with Server(create_app(eng, ServeConfig(max_tokens_limit=8))) as s:
        j = HTTPJudge(s.url + "/v1", timeout=60)
        out = j.prefer([("q?", "tea", "coffee", Profile(country="Iran")), ("q?", "coffee", "tea", None)])
    assert j.api_model == "tiny" and len(out) == 2 and all(v in (None, 0.0, 1.0) for v in out)
    assert len(j.raw_off_format) == sum(v is None for v in out)


def test_other_groups_answer_is_the_pooled_answer_of_the_other_regions():
    from pluralign.evaluation.generate import add_references, other_groups_answer

    def rec(i, country, unit, answers, counts):
        return PromptRecord(id=f"r{i}", unit=unit, profile=Profile(country=country), messages=(("user", "q"),),
                            answers=tuple((a,) for a in answers), answer_counts=counts)

    pool = [rec(0, "Spain", "q1", ["paella", "tortilla"], (3, 2)), rec(1, "Mexico", "q1", ["tacos", "Tortilla"], (2, 2)),
            rec(2, "China", "q1", ["rice"], (4,)), rec(3, "China", "q2", ["tea"], (5,))]
    assert other_groups_answer(pool[0], pool) == "rice"  # Mexico tortilla 2 + ... : rice 4 > tortilla 2, tacos 2
    assert other_groups_answer(pool[2], pool) == "tortilla"  # Spain 2 + Mexico 2 pooled (case folded) = 4 > paella 3
    assert other_groups_answer(pool[3], pool) is None  # nobody else asked q2
    rep = {"outputs": [{"id": r.id} for r in pool]}
    add_references(rep, pool, pool)
    assert [rep["outputs"][i]["ref_other_groups"] for i in range(4)] == [0.0, 0.0, 0.0, 0.0]
    assert rep["outputs"][1]["ref_other_groups_answer"] == "rice" and rep["references"]["other_groups_top"]["without_other_groups"] == 1
    pool = [rec(0, "Spain", "q1", ["tortilla"], (3,)), rec(1, "Mexico", "q1", ["tacos", "tortilla"], (2, 2)),
            rec(2, "China", "q1", ["rice", "tortilla"], (3, 1))]  # for Mexico the others say tortilla 3 + 1 > rice 3
    rep = add_references({"outputs": [{"id": r.id} for r in pool]}, pool, pool)
    assert rep["outputs"][1]["ref_other_groups_answer"] == "tortilla"
    assert rep["outputs"][1]["ref_other_groups"] == 1.0 and rep["outputs"][1]["ref_other_groups_weighted"] == 1.0  # 2 of top 2
    assert rep["references"]["other_groups_top"]["accuracy"] == pytest.approx(2 / 3)  # China: others' tortilla is its 2nd answer
