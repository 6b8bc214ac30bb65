"""Serve an aligned model over HTTP: an OpenAI-compatible chat completions endpoint whose requests
may carry a demographic ``profile`` (routed by a CuMA adapter, and/or rendered as the persona system
prompt), plus ``/v1/survey`` (option distributions from the scorer of ``pluralign eval``).

    from pluralign.serve import ServeConfig, create_app, load_engine
    engine = load_engine("smollm2-135m", adapter="runs/cuma/adapter", max_batch=16, batch_window_ms=10)
    app = create_app(engine, ServeConfig(api_key="secret"))   # run with uvicorn; `pluralign serve` does this

:mod:`pluralign.serve.engine` batches requests (continuous batching with chunked prefill, one worker
thread owns the model, an LRU of profile embeddings), :mod:`pluralign.serve.app` is the FastAPI app
(Host, Origin and Content-Type checks), :mod:`pluralign.serve.protocol` checks request bodies (every
string: Unicode, length, control characters), :mod:`pluralign.serve.server` gives uvicorn its
timeouts (``uvicorn.run(app, **uvicorn_options(cfg))``).
"""

from __future__ import annotations

from pluralign.serve.engine import Engine, EngineInfo, load_engine
from pluralign.serve.protocol import APIError, ServeConfig


def create_app(engine, cfg=None):
    """The FastAPI app over ``engine`` (imports FastAPI only when called)."""
    from pluralign.serve.app import create_app as _create

    return _create(engine, cfg)


__all__ = ["APIError", "Engine", "EngineInfo", "ServeConfig", "create_app", "load_engine"]
