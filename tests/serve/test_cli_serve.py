"""``pluralign serve``: bad flags are one ``error:`` line and exit 2 before a model loads; good
flags reach the app and the engine (uvicorn.run is replaced, nothing binds)."""

from __future__ import annotations

import httpx
import pytest

from reliability._helpers import assert_one_error, invoke

pytestmark = pytest.mark.usefixtures("one_thread")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("args, contains", [
    (["--max-batch", "0"], "--max-batch"),
    (["--port", "0"], "--port"),
    (["--port", "70000"], "--port"),
    (["--batch-window-ms", "-1"], "--batch-window-ms"),
    (["--batch-window-ms", "nan"], "--batch-window-ms"),
    (["--max-concurrent", "0"], "--max-concurrent"),
    (["--max-body-bytes", "0"], "--max-body-bytes"),
    (["--max-input-tokens", "-5"], "--max-input-tokens"),
    (["--max-tokens-limit", "0"], "--max-tokens-limit"),
    (["--labels", "roman"], "--labels"),
    (["--dtype", "fp8"], "--dtype"),
    (["--device", "nosuch"], "--device"),
    (["--log-level", "loud"], "--log-level"),
    (["--api-key", ""], "--api-key"),
    (["--host", " "], "--host"),
    (["--adapter", "/nonexistent/adapter"], "/nonexistent/adapter"),
    (["--soft-prompt", "/nonexistent/sp"], "soft prompt not found"),
])
def test_bad_flags_are_one_error_line(args, contains):
    assert_one_error(invoke(["serve", *args]), contains=contains)


def test_flags_reach_the_server(monkeypatch, tiny_model_dir, cuma_adapter):
    import uvicorn

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    monkeypatch.setenv("PLURALIGN_API_KEY", "from-env")
    port = _free_port()
    res = invoke(["serve", "--model", tiny_model_dir, "--adapter", cuma_adapter, "--served-model-name", "cuma-tiny",
                  "--port", str(port), "--max-batch", "3", "--batch-window-ms", "0", "--max-tokens-limit", "8", "--dtype", "fp32",
                  "--device", "cpu", "--no-chat-template", "--no-profile-prompt", "--labels", "letters", "--prefill-chunk", "64",
                  "--profile-cache-size", "5", "--max-message-chars", "100", "--max-profile-chars", "20", "--header-timeout", "3",
                  "--body-timeout", "4", "--shutdown-timeout", "6"])
    assert res.exit_code == 0, res.output
    assert seen["host"] == "127.0.0.1" and seen["port"] == port
    # uvicorn gets the header timeout (its own protocol class), keep-alive, shutdown and header-size limits
    assert seen["timeout_graceful_shutdown"] == 6 and seen["timeout_keep_alive"] == 5
    assert seen["h11_max_incomplete_event_size"] == 16384 and isinstance(seen["http"], type)
    app = seen["app"]
    eng, cfg = app.state.engine, app.state.config
    assert eng.max_batch == 3 and eng.window == 0 and eng.info.model_id == "cuma-tiny" and eng.info.profile_routed
    assert eng.prefill_chunk == 64 and eng.profile_cache.size == 5
    assert cfg.api_key == "from-env" and cfg.max_tokens_limit == 8 and cfg.max_message_chars == 100 and cfg.max_profile_chars == 20
    assert cfg.header_timeout_s == 3 and cfg.body_timeout_s == 4 and cfg.host == "127.0.0.1"
    assert eng.chat_template is False and eng.profile_prompt_default is False and eng.labels_default == "letters"
    transport = httpx.ASGITransport(app=app)

    async def go():
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
                assert (await c.get("/v1/models")).status_code == 401
                r = await c.get("/v1/models", headers={"Authorization": "Bearer from-env"})
                return r.json()

    import asyncio

    models = asyncio.run(go())
    assert models["data"][0]["id"] == "cuma-tiny" and models["data"][0]["pluralign"]["adapter_method"] == "cuma"


def test_a_taken_port_is_refused_before_the_model_loads(monkeypatch):
    import socket

    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: pytest.fail("uvicorn.run reached"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        # a model that does not exist: the port check must come first to give this error
        assert_one_error(invoke(["serve", "--model", "/nonexistent/model", "--port", str(port)]), contains="--port")


def test_non_loopback_host_without_key_warns(monkeypatch, tiny_model_dir):
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    monkeypatch.delenv("PLURALIGN_API_KEY", raising=False)
    res = invoke(["serve", "--model", tiny_model_dir, "--host", "0.0.0.0", "--port", str(_free_port()), "--dtype", "fp32",
                  "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "warning: serving on 0.0.0.0 without --api-key" in res.output
