"""Fixtures of the server tests: a tiny CuMA adapter routed on culture-map features (no encoder
download), engines over the tiny Llama of tests/conftest.py, uvicorn in a background thread."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
import torch

from tests.adapters.adapter_helpers import randomize_experts
from tests.conftest import make_tiny_model

MODEL_ID = "tiny"


@pytest.fixture(scope="session")
def cuma_adapter(tmp_path_factory):
    """A CuMA adapter (4 experts, top-1, hidden+profile routing on culture-map features) with
    large random expert weights, so that the profile changes the greedy continuation."""
    from pluralign.adapters import adapter_config, build_adapted_model, save_adapter
    from pluralign.data.culture import feature_dim

    cfg = adapter_config("cuma", n_experts=4, top_k=1, r=4, dropout=0.0, profile_dim=feature_dim(), profile_encoder="culture-map",
                         router_hidden=32)
    m = build_adapted_model(make_tiny_model("llama").float(), "cuma", cfg)
    randomize_experts(m, std=1.5, seed=3)
    with torch.no_grad():  # routers away from their init too: the profile part moves the gates
        g = torch.Generator().manual_seed(5)
        for n, p in m.named_parameters():
            if "router" in n and p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.5)
    return save_adapter(m, tmp_path_factory.mktemp("cuma") / "adapter", base_model="tiny")


@pytest.fixture(scope="session")
def make_engine(tiny_model_dir):
    from pluralign.serve import load_engine

    def make(**kw):
        kw.setdefault("model_id", MODEL_ID)
        kw.setdefault("dtype", "fp32")
        kw.setdefault("device", "cpu")
        return load_engine(str(tiny_model_dir), **kw)

    return make


class Server:
    """uvicorn serving ``app`` on 127.0.0.1 (an ephemeral port) in a daemon thread, with the
    options ``pluralign serve`` gives it (:func:`pluralign.serve.server.uvicorn_options`)."""

    def __init__(self, app):
        import uvicorn

        from pluralign.serve.server import uvicorn_options

        self.app = app
        opts = uvicorn_options(app.state.config)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", lifespan="on", **opts))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            if time.monotonic() - t0 > 30 or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(15)

    @property
    def engine(self):
        return self.app.state.engine


@pytest.fixture(scope="module")
def serve():
    """``with serve(app) as s:`` runs ``app`` for the block; ``s.url``, ``s.engine``."""
    stack = contextlib.ExitStack()

    def start(app):
        return stack.enter_context(Server(app))

    yield start
    stack.close()
