"""The HTTP side: a FastAPI app over an :class:`~pluralign.serve.engine.Engine`.

Routes: ``POST /v1/chat/completions`` (OpenAI's schema plus ``profile`` / ``profile_prompt``; with
``stream: true`` server-sent events in OpenAI's chunk format ending with ``data: [DONE]``),
``POST /v1/survey``, ``GET /v1/models``, ``GET /health``. Every error is OpenAI's error object with a
4xx status (5xx only for a failure inside the model); nothing a client sends stops the server.

Before a request reaches a route: on a server bound to a loopback address the ``Host`` header must
name a loopback host (421 otherwise: a DNS-rebinding page cannot reach it), and without an API key a
browser's ``Origin`` must be the server itself (403). POST bodies must be ``application/json`` (415),
arrive within ``body_timeout_s`` (408) and fit ``max_body_bytes`` (413). Parsing, prompt rendering and
tokenizing run in a worker thread, never on the event loop, after the byte and character limits.
Responses name what is served, never a local path.
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
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from pluralign.errors import PluralignError
from pluralign.serve.engine import Engine, GenJob, SurveyJob
from pluralign.serve.protocol import APIError, ServeConfig, bad, parse_chat, parse_json, parse_survey
from pluralign.serve.server import host_name, is_loopback


#: answered (to nobody) when the client disconnected before its answer was ready
_GONE = APIError(499, "the client closed the request", code="client_closed")


class _ErrorJSON(JSONResponse):
    """JSON with every non-ASCII character escaped: an error body always encodes."""

    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _error(err: APIError) -> JSONResponse:
    return _ErrorJSON(err.body(), status_code=err.status)


class _Guard:
    """ASGI middleware: the Host check of a loopback-bound server and the Origin check of a keyless one."""

    def __init__(self, app, *, loopback: bool, keyless: bool):
        self.app, self.loopback, self.keyless = app, loopback, keyless

    def problem(self, headers: dict) -> APIError | None:
        host = headers.get("host")
        if self.loopback and host is not None and not is_loopback(host_name(host)):
            return APIError(421, f"this server answers only to loopback host names (localhost, 127.0.0.1, [::1]), "
                                 f"not {host[:100]!r}", code="invalid_host")
        origin = headers.get("origin")
        if self.keyless and origin is not None:
            _, sep, rest = origin.partition("://")
            same = sep and host is not None and rest.rstrip("/").lower() == host.strip().lower()
            local = sep and self.loopback and is_loopback(host_name(rest.rstrip("/")))
            if not (same or local):
                return APIError(403, f"cross-origin requests are refused by a server without an API key (Origin "
                                     f"{origin[:100]!r})", code="forbidden_origin")
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = {}
            for k, v in scope.get("headers") or []:
                headers.setdefault(k.decode("latin-1").lower(), v.decode("latin-1"))
            err = self.problem(headers)
            if err is not None:
                await _error(err)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _check_json_type(request: Request) -> None:
    ct = request.headers.get("content-type")
    if ct is None or ct.split(";", 1)[0].strip().lower() != "application/json":
        raise APIError(415, f"the request body must be JSON sent with 'Content-Type: application/json' (got "
                            f"{(ct or 'none')[:100]!r})", code="unsupported_media_type")


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


async def _read_body(request: Request, limit: int, timeout: float | None = None) -> bytes:
    cl = request.headers.get("content-length")
    if cl is not None and cl.strip().isdigit() and int(cl) > limit:
        raise APIError(413, f"request body of {int(cl)} bytes is larger than this server accepts ({limit}, --max-body-bytes)",
                       code="body_too_large")
    chunks, n = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for c in request.stream():
                n += len(c)
                if n > limit:
                    raise APIError(413, f"request body is larger than this server accepts ({limit} bytes, --max-body-bytes)",
                                   code="body_too_large")
                chunks.append(c)
    except TimeoutError:
        raise APIError(408, f"the request body did not arrive within {timeout:g} s (--body-timeout)", code="request_timeout") from None
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
    """The FastAPI app; the engine's worker thread starts and stops with the app's lifespan.
    ``cfg.host`` is the address the app will be bound to (its Host check follows it)."""
    cfg = cfg or ServeConfig()
    slots = _Slots(cfg.max_concurrent)
    model_id = engine.info.model_id
    created = int(time.time())

    def redact(err: APIError) -> APIError:
        msg = engine.redact(err.message)
        if msg == err.message:
            return err
        return APIError(err.status, msg, type=err.type, param=err.param, code=err.code)

    @asynccontextmanager
    async def lifespan(app):
        engine.start()
        try:
            yield
        finally:
            engine.stop()

    app = FastAPI(title="pluralign serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine, app.state.config, app.state.slots = engine, cfg, slots
    app.add_middleware(_Guard, loopback=is_loopback(cfg.host), keyless=not cfg.api_key)

    def auth(request: Request) -> None:
        if not cfg.api_key:
            return
        h = request.headers.get("authorization", "")
        scheme, _, key = h.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), cfg.api_key.encode()):
            raise APIError(401, "missing or wrong API key (send Authorization: Bearer <key>)", code="invalid_api_key")

    @app.exception_handler(APIError)
    async def _api_error(request, exc: APIError):
        return _error(redact(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):
        return _error(APIError(exc.status_code, str(exc.detail), code={404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc):
        first = (exc.errors() or [{}])[0]
        loc = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or None
        return _error(bad(f"invalid request: {first.get('msg', 'validation failed')}", param=loc))

    @app.exception_handler(Exception)
    async def _internal(request, exc):
        return _error(APIError(500, f"internal error: {type(exc).__name__}", type="server_error", code="internal_error"))

    async def _json(request: Request) -> dict:
        """The body of a POST: JSON content type, within the time and size limits, parsed off the loop."""
        _check_json_type(request)
        raw = await _read_body(request, cfg.max_body_bytes, cfg.body_timeout_s)
        return await run_in_threadpool(parse_json, raw)

    def _plain_profile(profile):
        try:
            return engine.plain_profile(profile)
        except PluralignError as e:
            raise APIError(400, f"a profile value {e.message}", param="profile", code="invalid_profile") from None

    # ------------------------------------------------------------------ routes
    @app.get("/health")
    async def health():
        b = dict(engine.stats)
        if engine.profile_cache is not None:
            b["profile_cache"] = engine.profile_cache.stats()
        return {"status": "ok", "model": model_id, **engine.load(), "in_flight": slots.used, "batching": b}

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
        body = await _json(request)

        def parse():
            req = parse_chat(body, model_id=model_id, cfg=cfg, default_profile_prompt=engine.profile_prompt_default)
            req.profile = _plain_profile(req.profile)
            return req

        req = await run_in_threadpool(parse)
        slot = slots.take()
        try:
            ids = await run_in_threadpool(_chat_ids, req)
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
        """The request's prompt token ids (in a worker thread: the template and the tokenizer run here)."""
        try:
            prompt = engine.chat_prompt(req.messages, req.profile, req.profile_prompt)
        except PluralignError as e:
            raise bad(e.message, param="messages") from None
        except Exception as e:  # e.g. a chat template that raises on this sequence of roles
            raise bad(f"the model's chat template refused these messages ({type(e).__name__}: {e})", param="messages") from None
        try:
            ids = engine.encode(prompt)
        except Exception as e:
            raise bad(f"the prompt could not be tokenized ({type(e).__name__})", param="messages") from None
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
                yield f"data: {json.dumps(redact(payload).body())}\n\n"
                break
            else:
                yield chunk({}, finish=payload["finish_reason"])
                if include_usage:
                    yield chunk(None, usage=_usage(payload), choices=False)
                break
        yield "data: [DONE]\n\n"

    @app.post("/v1/survey", dependencies=[Depends(auth)])
    async def survey(request: Request):
        body = await _json(request)

        def parse():
            req = parse_survey(body, model_id=model_id, cfg=cfg)
            req.profile = _plain_profile(req.profile)
            for it in req.items:
                it["text"], it["options"] = engine.plain(it["text"]), [engine.plain(o) for o in it["options"]]
            return req

        req = await run_in_threadpool(parse)
        slot = slots.take()

        def count():
            for i, it in enumerate(req.items):
                n = engine.count_tokens(it["text"] + "\n" + "\n".join(it["options"]))
                if n > cfg.max_input_tokens:
                    raise bad(f"item {it['id']!r} is {n} tokens, more than this server accepts ({cfg.max_input_tokens}, "
                              f"--max-input-tokens)", param=f"items[{i}]", code="context_length_exceeded")

        try:
            await run_in_threadpool(count)
        except BaseException:
            slot.release()
            raise
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
