"""The official openai client against `pluralign serve`'s app (uvicorn in a thread): chat
completions, streaming (server-sent events ending with [DONE]), the profile through extra_body."""

from __future__ import annotations

import json

import httpx
import pytest

from pluralign.serve import ServeConfig, create_app
from tests.serve.conftest import MODEL_ID

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.usefixtures("one_thread")

MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How important is family in your life?"}]


@pytest.fixture(scope="module")
def server(make_engine, cuma_adapter, serve):
    return serve(create_app(make_engine(adapter=cuma_adapter, max_batch=4, batch_window_ms=5), ServeConfig(max_tokens_limit=32)))


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_models_and_chat_completion(client):
    assert [m.id for m in client.models.list().data] == [MODEL_ID]
    r = client.chat.completions.create(model=MODEL_ID, messages=MSGS, max_tokens=8, temperature=0,
                                       extra_body={"profile": {"country": "Japan", "age": 34, "sex": "female"}})
    assert r.object == "chat.completion" and r.model == MODEL_ID and len(r.choices) == 1
    ch = r.choices[0]
    assert ch.message.role == "assistant" and isinstance(ch.message.content, str)
    assert ch.finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 8 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    # the persona system prompt is in the prompt: more prompt tokens than without it
    r2 = client.chat.completions.create(model=MODEL_ID, messages=MSGS, max_tokens=8, temperature=0,
                                        extra_body={"profile": {"country": "Japan", "age": 34, "sex": "female"}, "profile_prompt": False})
    assert r2.usage.prompt_tokens < r.usage.prompt_tokens


def test_profile_through_extra_body_changes_the_routed_output(client):
    def ask(country):
        return client.chat.completions.create(
            model=MODEL_ID, messages=MSGS, max_tokens=10, temperature=0,
            extra_body={"profile": {"country": country}, "profile_prompt": False},
        ).choices[0].message.content

    assert ask("USA") != ask("Japan")  # only the router sees the profile here
    assert ask("USA") == ask("USA")


def test_streaming_equals_the_plain_answer(client, server):
    kw = dict(model=MODEL_ID, messages=MSGS, max_tokens=12, temperature=0, extra_body={"profile": {"country": "Nigeria"}})
    plain = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [plain.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens and not chunks[-1].choices
    # on the wire: OpenAI's chunk objects as SSE data lines, the last one [DONE]
    with httpx.stream("POST", server.url + "/v1/chat/completions", json={**{k: v for k, v in kw.items() if k != "extra_body"},
                                                                          "stream": True, "profile": {"country": "Nigeria"}}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [l for l in r.iter_lines() if l]
    assert lines[-1] == "data: [DONE]"
    assert all(l.startswith("data: ") for l in lines)
    assert all(json.loads(l[6:])["object"] == "chat.completion.chunk" for l in lines[:-1])


def test_sampling_is_seeded_and_stop_strings_cut(client):
    kw = dict(model=MODEL_ID, messages=MSGS, max_tokens=16, temperature=1.0, top_p=0.9)
    a = client.chat.completions.create(seed=7, **kw).choices[0].message.content
    b = client.chat.completions.create(seed=7, **kw).choices[0].message.content
    assert a == b
    greedy = client.chat.completions.create(model=MODEL_ID, messages=MSGS, max_tokens=16, temperature=0).choices[0].message.content
    cut = next((greedy[i:i + 2] for i in range(2, len(greedy) - 2) if greedy[i:i + 2].strip() and "\ufffd" not in greedy[i:i + 2]), None)
    if cut is None:
        pytest.skip("greedy output too short to pick a stop string")
    r = client.chat.completions.create(model=MODEL_ID, messages=MSGS, max_tokens=16, temperature=0, stop=[cut])
    assert r.choices[0].message.content == greedy[: greedy.index(cut)] and r.choices[0].finish_reason == "stop"
    s = client.chat.completions.create(model=MODEL_ID, messages=MSGS, max_tokens=16, temperature=0, stop=[cut], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in s if c.choices) == greedy[: greedy.index(cut)]
