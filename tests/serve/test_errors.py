"""Every bad request is an OpenAI-style 4xx error object and the server answers normally afterwards;
an API key guards every route but /health; a client that disconnects mid-stream frees its slot."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from pluralign.serve import ServeConfig, create_app
from tests.serve.conftest import MODEL_ID

pytestmark = pytest.mark.usefixtures("one_thread")

KEY = "s3cret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
OK = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0}


@pytest.fixture(scope="module")
def server(make_engine, cuma_adapter, serve):
    cfg = ServeConfig(api_key=KEY, max_concurrent=1, max_body_bytes=4000, max_input_tokens=60, max_tokens_limit=16, max_survey_items=3)
    return serve(create_app(make_engine(adapter=cuma_adapter, max_batch=4, batch_window_ms=0), cfg))


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as c:
        yield c


def _is_error(r, status):
    assert r.status_code == status, (r.status_code, r.text)
    e = r.json()["error"]
    assert set(e) == {"message", "type", "param", "code"} and e["message"]
    return e


def _alive(http):
    assert http.get("/health").json()["status"] == "ok"
    r = http.post("/v1/chat/completions", json=OK)
    assert r.status_code == 200, r.text


def _with(**kw):
    return {**OK, **kw}


CHAT_CASES = [
    # (name, body or raw bytes, status, param)
    ("malformed json", b'{"model": "tiny", "messages": [', 400, None),
    ("not an object", b"[1, 2]", 400, None),
    ("NaN", b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}', 400, None),
    ("not utf-8", b'{"model": "\xff"}', 400, None),
    ("unknown profile field", _with(profile={"country": "USA", "shoe_size": 44}), 400, "profile.shoe_size"),
    ("profile not an object", _with(profile="USA"), 400, "profile"),
    ("age a string", _with(profile={"age": "old"}), 400, "profile.age"),
    ("age a bool", _with(profile={"age": True}), 400, "profile.age"),
    ("country a number", _with(profile={"country": 5}), 400, "profile.country"),
    ("sex invalid", _with(profile={"sex": "x"}), 400, "profile.sex"),
    ("income out of range", _with(profile={"income": 11}), 400, "profile.income"),
    ("max_tokens over the limit", _with(max_tokens=17), 400, "max_tokens"),
    ("max_tokens zero", _with(max_tokens=0), 400, "max_tokens"),
    ("max_tokens a string", _with(max_tokens="5"), 400, "max_tokens"),
    ("prompt too long", _with(messages=[{"role": "user", "content": "family " * 80}]), 400, "messages"),
    ("body too large", _with(messages=[{"role": "user", "content": "x" * 5000}]), 413, None),
    ("empty messages", _with(messages=[]), 400, "messages"),
    ("messages missing", {"model": MODEL_ID}, 400, "messages"),
    ("unsupported role", _with(messages=[{"role": "tool", "content": "x"}]), 400, "messages[0].role"),
    ("image content", _with(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]), 400,
     "messages[0].content[0]"),
    ("content a number", _with(messages=[{"role": "user", "content": 5}]), 400, "messages[0].content"),
    ("n > 1", _with(n=2), 400, "n"),
    ("unknown argument", _with(foo=1), 400, "foo"),
    ("temperature out of range", _with(temperature=3), 400, "temperature"),
    ("top_p zero", _with(top_p=0), 400, "top_p"),
    ("seed a float", _with(seed=1.5), 400, "seed"),
    ("stop a list of numbers", _with(stop=[1]), 400, "stop"),
    ("stream a string", _with(stream="yes"), 400, "stream"),
    ("tools", _with(tools=[{"type": "function", "function": {"name": "f"}}]), 400, "tools"),
    ("unknown model", _with(model="gpt-4"), 404, "model"),
]


@pytest.mark.parametrize("name, body, status, param", CHAT_CASES, ids=[c[0] for c in CHAT_CASES])
def test_bad_chat_requests_get_their_4xx_and_the_server_keeps_answering(http, name, body, status, param):
    if isinstance(body, bytes):
        r = http.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    else:
        r = http.post("/v1/chat/completions", json=body)
    e = _is_error(r, status)
    if param is not None:
        assert e["param"] == param, e
    _alive(http)


SURVEY = {"items": [{"text": "How important is family?", "options": ["Very", "Not"]}], "profile": {"country": "USA"}}
SURVEY_CASES = [
    ("no items", {"profile": {"country": "USA"}}, 400, "items"),
    ("one option", {"items": [{"text": "q", "options": ["a"]}]}, 400, "items[0].options"),
    ("too many items", {"items": [{"text": "q", "options": ["a", "b"]}] * 4}, 400, "items"),
    ("duplicate ids", {"items": [{"id": "a", "text": "q", "options": ["a", "b"]}] * 2}, 400, "items[1].id"),
    ("bad profile", {**SURVEY, "profile": {"country": "USA", "planet": "Mars"}}, 400, "profile.planet"),
    ("bad labels", {**SURVEY, "labels": "roman"}, 400, "labels"),
    ("item too long", {"items": [{"text": "family " * 80, "options": ["a", "b"]}]}, 400, "items[0]"),
]


@pytest.mark.parametrize("name, body, status, param", SURVEY_CASES, ids=[c[0] for c in SURVEY_CASES])
def test_bad_survey_requests(http, name, body, status, param):
    e = _is_error(http.post("/v1/survey", json=body), status)
    assert e["param"] == param, e
    _alive(http)


def test_unknown_route_and_method(http):
    assert _is_error(http.get("/v1/nothing"), 404)["code"] == "not_found"
    assert _is_error(http.get("/v1/chat/completions"), 405)
    _alive(http)


def test_api_key(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert c.get("/health").status_code == 200  # open
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}, {"Authorization": f"Basic {KEY}"}):
            assert _is_error(c.get("/v1/models", headers=headers), 401)["code"] == "invalid_api_key"
            assert _is_error(c.post("/v1/chat/completions", json=OK, headers=headers), 401)
            assert _is_error(c.post("/v1/survey", json=SURVEY, headers=headers), 401)
        assert c.get("/v1/models", headers=AUTH).status_code == 200
        assert c.post("/v1/survey", json=SURVEY, headers=AUTH).status_code == 200


def _wait(pred, timeout=10.0):
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("timed out")
        time.sleep(0.02)


def test_too_many_concurrent_requests_and_a_disconnect_frees_the_slot(server, http):
    eng = server.engine
    gate = threading.Event()
    orig = eng._decode
    eng._decode = lambda: (gate.wait(20), orig())  # hold the running request in its first decode step
    try:
        body = _with(stream=True, max_tokens=16, messages=[{"role": "user", "content": "How important is family in your life?"}])
        with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=30) as r:
            lines = r.iter_lines()  # kept: dropping the iterator closes the connection
            assert next(lines).startswith("data: ")
            _wait(lambda: http.get("/health").json()["running"] == 1)  # prefilled, held in decode
            assert http.get("/health").json()["in_flight"] == 1
            e = _is_error(http.post("/v1/chat/completions", json=OK), 429)  # max_concurrent = 1
            assert e["type"] == "rate_limit_error"
            _is_error(http.post("/v1/survey", json=SURVEY), 429)
        # the client went away mid-stream: its slot is free, and its row leaves the batch
        _wait(lambda: http.get("/health").json()["in_flight"] == 0)
        # a plain request whose client gives up while the engine is still held frees its slot too
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(server.url + "/v1/chat/completions", json=OK, headers=AUTH, timeout=1.0)
        _wait(lambda: http.get("/health").json()["in_flight"] == 0)
    finally:
        gate.set()
        eng._decode = orig
    _wait(lambda: http.get("/health").json()["running"] == 0)
    _alive(http)
