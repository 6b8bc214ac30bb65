"""The HTTP side: a FastAPI app over an :class:`~pluralign.serve.engine.Engine`.

Routes: ``POST /v1/chat/completions`` (OpenAI's schema plus ``profile`` / ``profile_prompt``; with
``stream: true`` server-sent events in OpenAI's chunk format ending with ``data: [DONE]``),
``POST /v1/survey``, ``GET /v1/models``, ``GET /health``. Every error is OpenAI's error object with a
4xx status (5xx only for a failure inside the model); nothing a client sends stops the server.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pluralign.errors import PluralignError
from pluralign.serve.engine import Engine, GenJob, SurveyJob
from pluralign.serve.protocol import APIError, ServeConfig, bad, parse_chat, parse_json, parse_survey


#: answered (to nobody) when the client disconnected before its answer was ready
_GONE = APIError(499, "the client closed the request", code="client_closed")


def _error(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


class _Slots:
    """Requests in flight (queued or running); a request past ``limit`` is answered 429."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0

    def take(self) -> "_Slot":
        if self.used >= self.limit:
            raise APIError(429, f"too many concurrent requests (at most {self.limit}, --max-concurrent); retry later",
                           type="rate_limit_error", code="too_many_requests")
        self.used += 1
        return _Slot(self)


class _Slot:
    def __init__(self, slots: _Slots):
        self._slots, self._held = slots, True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._slots.used -= 1


class _Events:
    """An asyncio queue fed from the engine thread."""

    def __init__(self):
        self.loop = asyncio.get_running_loop()
        self.q: asyncio.Queue = asyncio.Queue()

    def emit(self, kind, payload=None) -> None:
        try:
            self.loop.call_soon_threadsafe(self.q.put_nowait, (kind, payload))
        except RuntimeError:  # the loop is closed (shutdown)
            pass

    async def get(self):
        return await self.q.get()


class _SSE(StreamingResponse):
    """A streaming response that runs ``on_close`` however it ends (done, error, client gone)."""

    def __init__(self, content, on_close):
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._on_close = on_close

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


async def _read_body(request: Request, limit: int) -> bytes:
    cl = request.headers.get("content-length")
    if cl is not None and cl.strip().isdigit() and int(cl) > limit:
        raise APIError(413, f"request body of {int(cl)} bytes is larger than this server accepts ({limit}, --max-body-bytes)",
                       code="body_too_large")
    chunks, n = [], 0
    async for c in request.stream():
        n += len(c)
        if n > limit:
            raise APIError(413, f"request body is larger than this server accepts ({limit} bytes, --max-body-bytes)",
                           code="body_too_large")
        chunks.append(c)
    return b"".join(chunks)


async def _watch_disconnect(request: Request, job, ev: "_Events") -> None:
    """When the client goes away before its answer is complete: cancel ``job`` (the engine drops it
    at its next step) and wake the handler, which frees the request's slot at once."""
    try:
        while True:
            msg = await request.receive()
            if msg.get("type") == "http.disconnect":
                job.cancel()
                ev.q.put_nowait(("gone", None))
                return
    except Exception:
        return


def create_app(engine: Engine, cfg: ServeConfig | None = None) -> FastAPI:
    """The FastAPI app; the engine's worker thread starts and stops with the app's lifespan."""
    cfg = cfg or ServeConfig()
    slots = _Slots(cfg.max_concurrent)
    model_id = engine.info.model_id
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app):
        engine.start()
        try:
            yield
        finally:
            engine.stop()

    app = FastAPI(title="pluralign serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine, app.state.config, app.state.slots = engine, cfg, slots

    def auth(request: Request) -> None:
        if not cfg.api_key:
            return
        h = request.headers.get("authorization", "")
        scheme, _, key = h.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), cfg.api_key.encode()):
            raise APIError(401, "missing or wrong API key (send Authorization: Bearer <key>)", code="invalid_api_key")

    @app.exception_handler(APIError)
    async def _api_error(request, exc: APIError):
        return _error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):
        return _error(APIError(exc.status_code, str(exc.detail), code={404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc):
        return _error(bad(f"invalid request: {exc.errors()[:1]}"))

    @app.exception_handler(Exception)
    async def _internal(request, exc):
        return _error(APIError(500, f"internal error: {type(exc).__name__}", type="server_error", code="internal_error"))

    # ------------------------------------------------------------------ routes
    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_id, **engine.load(), "in_flight": slots.used, "batching": dict(engine.stats)}

    @app.get("/v1/models", dependencies=[Depends(auth)])
    async def models():
        i = engine.info
        return {"object": "list", "data": [{
            "id": model_id, "object": "model", "created": created, "owned_by": "pluralign",
            "pluralign": {"model": i.model, "adapter": i.adapter, "adapter_method": i.adapter_method, "profile_routed": i.profile_routed,
                          "profile_encoder": i.profile_encoder, "soft_prompt": i.soft_prompt, "max_batch": engine.max_batch,
                          "max_tokens_limit": cfg.max_tokens_limit, "max_input_tokens": cfg.max_input_tokens},
        }]}

    @app.post("/v1/chat/completions", dependencies=[Depends(auth)])
    async def chat(request: Request):
        body = parse_json(await _read_body(request, cfg.max_body_bytes))
        req = parse_chat(body, model_id=model_id, max_tokens_limit=cfg.max_tokens_limit,
                         default_profile_prompt=engine.profile_prompt_default)
        slot = slots.take()
        try:
            ids = _chat_ids(req)
        except BaseException:
            slot.release()
            raise
        ev = _Events()
        job = GenJob(ids, req.profile, req.sampling, ev.emit)
        cid, now = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        try:
            engine.submit(job)
        except APIError:
            slot.release()
            raise
        if req.stream:
            return _SSE(_stream(ev, job, cid, now, req.include_usage), on_close=lambda: (job.cancel(), slot.release()))
        watcher = asyncio.create_task(_watch_disconnect(request, job, ev))
        try:
            parts, done = [], None
            while True:
                kind, payload = await ev.get()
                if kind == "delta":
                    parts.append(payload)
                elif kind == "error":
                    raise payload
                elif kind == "gone":
                    return _error(_GONE)
                else:
                    done = payload
                    break
        finally:
            job.cancel()
            watcher.cancel()
            slot.release()
        return {
            "id": cid, "object": "chat.completion", "created": now, "model": model_id, "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(parts)}, "logprobs": None,
                         "finish_reason": done["finish_reason"]}],
            "usage": _usage(done),
        }

    def _chat_ids(req) -> list[int]:
        try:
            prompt = engine.chat_prompt(req.messages, req.profile, req.profile_prompt)
        except PluralignError as e:
            raise bad(e.message, param="messages") from None
        except Exception as e:  # e.g. a chat template that raises on this sequence of roles
            raise bad(f"the model's chat template refused these messages ({type(e).__name__}: {e})", param="messages") from None
        ids = engine.encode(prompt)
        if len(ids) > cfg.max_input_tokens:
            raise bad(f"the prompt is {len(ids)} tokens, more than this server accepts ({cfg.max_input_tokens}, --max-input-tokens)",
                      param="messages", code="context_length_exceeded")
        if engine.max_positions and len(ids) + engine.n_virtual + req.sampling.max_tokens > engine.max_positions:
            raise bad(f"the prompt ({len(ids)} tokens) plus max_tokens ({req.sampling.max_tokens}) exceeds the model's context "
                      f"of {engine.max_positions} positions", param="messages", code="context_length_exceeded")
        return ids

    async def _stream(ev: _Events, job: GenJob, cid: str, now: int, include_usage: bool):
        def chunk(delta, finish=None, usage=None, choices=True):
            d = {"id": cid, "object": "chat.completion.chunk", "created": now, "model": model_id, "system_fingerprint": None,
                 "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}] if choices else []}
            if usage is not None:
                d["usage"] = usage
            return f"data: {json.dumps(d, ensure_ascii=False)}\n\n"

        yield chunk({"role": "assistant", "content": ""})
        while True:
            kind, payload = await ev.get()
            if kind == "delta":
                yield chunk({"content": payload})
            elif kind == "error":
                yield f"data: {json.dumps(payload.body())}\n\n"
                break
            else:
                yield chunk({}, finish=payload["finish_reason"])
                if include_usage:
                    yield chunk(None, usage=_usage(payload), choices=False)
                break
        yield "data: [DONE]\n\n"

    @app.post("/v1/survey", dependencies=[Depends(auth)])
    async def survey(request: Request):
        body = parse_json(await _read_body(request, cfg.max_body_bytes))
        req = parse_survey(body, model_id=model_id, max_items=cfg.max_survey_items)
        for i, it in enumerate(req.items):
            n = engine.count_tokens(it["text"] + "\n" + "\n".join(it["options"]))
            if n > cfg.max_input_tokens:
                raise bad(f"item {it['id']!r} is {n} tokens, more than this server accepts ({cfg.max_input_tokens}, --max-input-tokens)",
                          param=f"items[{i}]", code="context_length_exceeded")
        slot = slots.take()
        ev = _Events()
        job = SurveyJob(req, ev.emit)
        try:
            engine.submit(job)
        except APIError:
            slot.release()
            raise
        watcher = asyncio.create_task(_watch_disconnect(request, job, ev))
        try:
            kind, payload = await ev.get()
            if kind == "gone":
                return _error(_GONE)
        finally:
            job.cancel()
            watcher.cancel()
            slot.release()
        if kind == "error":
            raise payload
        return {"object": "survey", "model": model_id, "profile": req.profile.to_dict(), "method": payload["method"],
                "labels": payload["labels"], "scoring": payload["scoring"], "chat_template": payload["chat_template"],
                "results": payload["results"]}

    return app


def _usage(done: dict) -> dict:
    p, c = done["prompt_tokens"], done["completion_tokens"]
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
