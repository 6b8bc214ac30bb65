"""Batching (issue 11): greedy outputs do not depend on what else is in the batch: requests prefilled
together, requests joining a running batch between decode steps and leaving it early all give
exactly what each gives alone; the output follows the request's profile, not its batch row."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch

from pluralign.data.profile import Profile
from pluralign.serve import ServeConfig, create_app
from pluralign.serve.engine import GenJob
from pluralign.serve.protocol import Sampling
from tests.serve.conftest import MODEL_ID

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["How important is family in your life?", "Options: 1. agree 2. disagree", "A 55-year-old woman living in rural Thailand.",
           "Hi", "Answer with the number of one option only. Very important Rather important Not very important"]
COUNTRIES = ["USA", "Japan", "Nigeria", "Germany", "Brazil"]


@pytest.fixture(scope="module")
def engine(make_engine, cuma_adapter):
    return make_engine(adapter=cuma_adapter, max_batch=8, batch_window_ms=0)


class Collector:
    def __init__(self):
        self.text, self.done = "", None

    def __call__(self, kind, payload=None):
        if kind == "delta":
            self.text += payload
        elif kind == "done":
            self.done = payload
        else:
            raise AssertionError(payload)


def _job(engine, prompt, country, max_tokens, profile_prompt=False):
    p = Profile(country=country)
    ids = engine.encode(engine.chat_prompt([{"role": "user", "content": prompt}], p, profile_prompt))
    c = Collector()
    return GenJob(ids, p, Sampling(max_tokens=max_tokens, temperature=0.0), c), c


def _drive(engine, schedule: dict[int, list], limit=200) -> None:
    """Step the engine by hand; ``schedule[k]``: jobs queued before step k."""
    for k in range(limit):
        for j in schedule.get(k, []):
            engine.submit(j)
        if k > max(schedule) and engine._batch is None and not engine._pending and engine._q.empty():
            return
        engine.step(block=False)
    raise AssertionError("did not finish")


def _alone(engine, prompt, country, n, profile_prompt=False) -> str:
    j, c = _job(engine, prompt, country, n, profile_prompt)
    _drive(engine, {0: [j]})
    return c.text


def test_prefill_together_join_and_leave_give_the_outputs_of_each_request_alone(engine):
    specs = [(PROMPTS[i], COUNTRIES[i], n) for i, n in enumerate([10, 4, 12, 7, 9])]
    ref = [_alone(engine, *s) for s in specs]
    jobs = [_job(engine, *s) for s in specs]
    before = dict(engine.stats)
    # two arrive together; two join while they decode (one of the first has left by then); one more later
    _drive(engine, {0: [jobs[0][0], jobs[1][0]], 5: [jobs[2][0], jobs[3][0]], 8: [jobs[4][0]]})
    got = [c.text for _, c in jobs]
    assert got == ref
    assert all(c.done is not None and c.done["completion_tokens"] <= n for (_, c), (_, _, n) in zip(jobs, specs))
    assert engine.stats["max_prefill_rows"] >= 2 and engine.stats["joined_running"] - before["joined_running"] >= 2
    assert engine.stats["max_decode_rows"] >= 3
    assert engine._batch is None


def test_decode_loop_matches_hf_generate(engine):
    """The hand-written KV-cache loop against transformers' generate on the adapted model."""
    p = Profile(country="Japan")
    ids = engine.encode(engine.chat_prompt([{"role": "user", "content": PROMPTS[0]}], p, True))
    emb = engine.profile_kwargs([p])["profile_embeds"]
    with torch.no_grad():
        out = engine.model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                    profile_embeds=emb, max_new_tokens=10, do_sample=False, pad_token_id=engine.tok.pad_token_id)
    want = engine.tok.decode(out[0, len(ids):], skip_special_tokens=True)
    assert _alone(engine, PROMPTS[0], "Japan", 10, profile_prompt=True) == want


def test_swapping_profiles_swaps_outputs(engine):
    prompt = PROMPTS[0]
    a = _alone(engine, prompt, "USA", 10)
    b = _alone(engine, prompt, "Japan", 10)
    assert a != b, "the two profiles give the same output: the test could not fail"
    for first, second, want in ((("USA", "Japan"), None, (a, b)), (("Japan", "USA"), None, (b, a))):
        j1, c1 = _job(engine, prompt, first[0], 10)
        j2, c2 = _job(engine, prompt, first[1], 10)
        _drive(engine, {0: [j1, j2]})
        assert (c1.text, c2.text) == want


def test_concurrent_http_requests_equal_sequential_ones(make_engine, cuma_adapter, serve):
    """N concurrent requests with different profiles over HTTP, against the same requests one by one."""
    eng = make_engine(adapter=cuma_adapter, max_batch=8, batch_window_ms=200)
    s = serve(create_app(eng, ServeConfig()))
    bodies = [{"model": MODEL_ID, "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
               "profile": {"country": COUNTRIES[i % len(COUNTRIES)], "age": 20 + 7 * i}, "max_tokens": 6 + i, "temperature": 0}
              for i in range(6)]
    with httpx.Client(base_url=s.url, timeout=60) as c:
        seq = [c.post("/v1/chat/completions", json=b).json()["choices"][0]["message"]["content"] for b in bodies]
        assert eng.stats["max_prefill_rows"] == 1
        with ThreadPoolExecutor(len(bodies)) as ex:
            conc = list(ex.map(lambda b: c.post("/v1/chat/completions", json=b).json()["choices"][0]["message"]["content"], bodies))
    assert conc == seq
    assert eng.stats["max_prefill_rows"] >= 2  # they did share forward passes


def test_soft_prompt_generation_matches_a_full_recompute(make_engine, tmp_path, tiny_tokenizer):
    """--soft-prompt: virtual tokens in front at prefill, positions shifted, cached decode equals
    re-running SoftPromptModel on the whole sequence each step; batching does not change it."""
    from pluralign.adapters.softprompt import save_soft_prompt

    save_soft_prompt(tmp_path / "sp", torch.randn(3, 64, generator=torch.Generator().manual_seed(0)), {"model": "tiny"})
    eng = make_engine(soft_prompt=tmp_path / "sp", max_batch=4, batch_window_ms=0)
    assert eng.n_virtual == 3
    ids = eng.encode(eng.chat_prompt([{"role": "user", "content": PROMPTS[1]}], None, True))
    seq = list(ids)
    with torch.no_grad():
        for _ in range(8):
            logits = eng.score_model(input_ids=torch.tensor([seq])).logits[0, -1]
            t = int(logits.argmax())
            if t in eng.eos_ids:
                break
            seq.append(t)
    want = eng.tok.decode(seq[len(ids):], skip_special_tokens=True)
    j1, c1 = _job(eng, PROMPTS[1], None, 8)
    j2, c2 = _job(eng, PROMPTS[0], None, 5)
    _drive(eng, {0: [j1, j2]})
    assert c1.text == want and eng.stats["max_prefill_rows"] == 2
