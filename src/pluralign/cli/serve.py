"""``pluralign serve``: an OpenAI-compatible HTTP server for a model, optionally with an adapter or a soft prompt."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pluralign.cli._common import ChatTemplate, Device, Dtype, Model, Threads, quiet_libraries
from pluralign.errors import PluralignError

HELP = """Serve a model (with a trained adapter or a soft prompt) over HTTP, OpenAI-compatible.

Routes: POST /v1/chat/completions (OpenAI's schema plus an optional "profile" object, validated like the profiles of training data: it is embedded once, kept in an LRU cache of --profile-cache-size profiles, routes the adapter's experts and becomes the persona system prompt unless "profile_prompt": false; max_tokens, temperature, top_p, seed, stop and stream are supported), POST /v1/survey (option distributions of survey items for a profile, from the scorer of pluralign eval), GET /v1/models, GET /health.

Requests that arrive within --batch-window-ms of each other are prefilled together, whatever their profiles, and decode together; between decode steps finished requests leave the batch and queued ones join it (up to --max-batch rows). Prefill runs at most --prefill-chunk prompt positions per step between decode steps, so a long prompt does not freeze the other streams. Greedy outputs do not depend on the rest of the batch.

Every request is checked before it reaches the model: JSON with Content-Type application/json (415 otherwise), valid Unicode, messages of at most --max-message-chars characters, profile values of at most --max-profile-chars characters on one line, no control characters; errors are 4xx in OpenAI's error shape and stay with their request. Control tokens of the chat template inside a message or a profile value are kept as plain text.

The server binds to 127.0.0.1 unless --host says otherwise; bound to loopback it answers only requests whose Host header names loopback (DNS-rebinding defence). With --api-key (or PLURALIGN_API_KEY) every route except /health needs "Authorization: Bearer KEY"; without one, cross-origin browser requests are refused. A connection must send its request head within --header-timeout seconds and its body within --body-timeout; on SIGTERM, requests still running after --shutdown-timeout seconds are cancelled.

Examples:

  pluralign serve --model smollm2-135m
  pluralign serve --model smollm2-135m --adapter runs/cuma/adapter --port 8000 --api-key secret
  pluralign serve --model smollm2-135m --soft-prompt runs/sp-USA-de --max-batch 32

  curl -s localhost:8000/v1/chat/completions -H 'Content-Type: application/json' -d '{"model": "smollm2-135m", "messages": [{"role": "user", "content": "Is family important?"}], "profile": {"country": "Japan", "age": 34}, "max_tokens": 32}'

With the openai client: OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="secret"), and the profile in extra_body={"profile": {...}}.
"""

def register(app: typer.Typer) -> None:
    app.command("serve", help=HELP)(serve_cmd)


def serve_cmd(
    model: str = Model(),
    adapter: Optional[Path] = typer.Option(None, help="A trained adapter folder (pluralign train: RUN/adapter) to apply; a profile-routed one (CuMA) routes on each request's profile."),
    soft_prompt: Optional[Path] = typer.Option(None, help="A soft prompt folder (pluralign softprompt --out) prepended to every prompt."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default; anything else exposes the server to the network)."),
    port: int = typer.Option(8000, help="TCP port (1-65535)."),
    api_key: Optional[str] = typer.Option(None, envvar="PLURALIGN_API_KEY", show_envvar=True, help="Require 'Authorization: Bearer KEY' on every route except /health."),
    served_model_name: Optional[str] = typer.Option(None, help="The model id clients send and /v1/models lists (default: --model)."),
    batch_window_ms: float = typer.Option(10.0, help="How long the first request of an idle server waits for others to share its forward pass (ms; 0 = no wait)."),
    max_batch: int = typer.Option(16, help="Most requests decoding together (1 = no batching)."),
    max_concurrent: int = typer.Option(64, help="Most requests in flight (queued or running); more get 429."),
    max_body_bytes: int = typer.Option(1 << 20, help="Largest request body in bytes; larger get 413."),
    max_input_tokens: int = typer.Option(4096, help="Longest prompt in tokens (survey: item text and options); longer get 400."),
    max_tokens_limit: int = typer.Option(512, help="Largest max_tokens a request may ask for; also the default when it gives none."),
    max_survey_items: int = typer.Option(256, help="Most items per /v1/survey request."),
    max_message_chars: int = typer.Option(32768, help="Longest message content (and survey item: text and options) in characters; longer get 400."),
    max_profile_chars: int = typer.Option(256, help="Longest profile value in characters; longer get 400."),
    prefill_chunk: int = typer.Option(512, help="Prompt positions (rows x columns) prefilled per engine step between decode steps."),
    profile_cache_size: int = typer.Option(1024, help="Profile embeddings kept in memory (least recently used dropped first; 0 = none)."),
    header_timeout: float = typer.Option(10.0, help="Seconds a connection has to send a request's headers before it is closed."),
    body_timeout: float = typer.Option(30.0, help="Seconds a request has to send its body once its headers are in (408 otherwise)."),
    shutdown_timeout: int = typer.Option(10, help="Seconds running requests get to finish on SIGTERM before they are cancelled."),
    survey_batch_size: int = typer.Option(16, help="Survey prompts per forward pass."),
    chat_template: Optional[bool] = ChatTemplate(None, help="Use the model's chat template (default: as the adapter's run was trained, else when the tokenizer has one)."),
    profile_prompt: Optional[bool] = typer.Option(None, "--profile-prompt/--no-profile-prompt", help="Default of the requests' profile_prompt: the profile as the persona system prompt (default: as the adapter's run, else on)."),
    labels: Optional[str] = typer.Option(None, help="Default option labels of /v1/survey: auto, digits, letters (default: as the adapter's run, else auto)."),
    dtype: str = Dtype(),
    device: str = Device(),
    threads: int = Threads(),
    log_level: str = typer.Option("warning", help="uvicorn log level: critical, error, warning, info, debug."),
) -> None:
    from pluralign.cli.main import run_guarded

    run_guarded(_run, **{k: v for k, v in locals().items() if k != "run_guarded"})


def _rules():
    from pluralign.cli._validate import DEVICE, DTYPE, Choice, Float, Int, Text

    return {
        "port": Int(1, 65535), "batch_window_ms": Float(0, 10_000), "max_batch": Int(1, 4096), "max_concurrent": Int(1),
        "max_body_bytes": Int(1), "max_input_tokens": Int(1), "max_tokens_limit": Int(1), "max_survey_items": Int(1),
        "survey_batch_size": Int(1), "max_message_chars": Int(1), "max_profile_chars": Int(1), "prefill_chunk": Int(1),
        "profile_cache_size": Int(0), "header_timeout": Float(0, 3600, open_lo=True), "body_timeout": Float(0, 3600, open_lo=True),
        "shutdown_timeout": Int(0, 3600), "labels": Choice(("auto", "digits", "letters"), optional=True), "dtype": DTYPE,
        "device": DEVICE, "threads": Int(0), "log_level": Choice(("critical", "error", "warning", "info", "debug")),
        "host": Text(), "served_model_name": Text(optional=True),
    }


def check_args(a: dict) -> dict:
    """Every flag checked before a model loads (one :class:`PluralignError` naming the flag); returns
    the adapter run's prompt format record (or None)."""
    from pluralign.cli._validate import flag

    for name, rule in _rules().items():
        v = a.get(name)
        if v is None and getattr(rule, "optional", False):
            continue
        msg = rule.check(v)
        if msg:
            raise PluralignError(msg.replace("unknown value", f"unknown {name.replace('_', ' ')}"), field=flag(name))
    if not a["host"].strip():
        raise PluralignError("must name an address, e.g. 127.0.0.1", field="--host")
    if a.get("api_key") is not None and not a["api_key"].strip():
        raise PluralignError("must not be empty (omit it to serve without a key)", field="--api-key")
    if a.get("served_model_name") is not None and not a["served_model_name"].strip():
        raise PluralignError("must not be empty", field="--served-model-name")
    rec = None
    if a.get("adapter") is not None:
        from pluralign.adapters import read_adapter_config

        meta = read_adapter_config(a["adapter"], check_weights=True)  # a damaged adapter fails before the model loads
        if meta.get("method") == "ptuning-v2":
            raise PluralignError("prefix-tuning (ptuning-v2) adapters keep their own KV prefix and cannot be served batched",
                                 file=a["adapter"], field="--adapter")
        from pluralign.evaluation.run import adapter_run_record

        rec = adapter_run_record(a["adapter"])
    if a.get("soft_prompt") is not None:
        from pluralign.adapters.softprompt import load_soft_prompt

        load_soft_prompt(a["soft_prompt"])
    return rec or {}


def _check_port(host: str, port: int) -> None:
    """Refuse a port that cannot be bound (taken, or a host that is not this machine's) before the model loads."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise PluralignError(f"cannot resolve {host!r} ({e.strerror or e})", field="--host") from None
    fam, _, _, _, addr = infos[0]
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            raise PluralignError(f"cannot listen on {host}:{port} ({e.strerror or e}; is another server running there?)",
                                 field="--port") from None


def _run(**a) -> None:
    from pluralign.serve.server import is_loopback

    rec = check_args(a)
    quiet_libraries()
    if not is_loopback(a["host"]) and not a.get("api_key"):
        typer.echo(f"warning: serving on {a['host']} without --api-key: anyone who can reach it can use it", err=True)
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ModuleNotFoundError as e:
        raise PluralignError(f"pluralign serve needs {e.name} (pip install 'pluralign[serve]')") from None
    import torch

    from pluralign.serve import ServeConfig, create_app, load_engine
    from pluralign.serve.server import uvicorn_options

    _check_port(a["host"], a["port"])
    if a["threads"]:
        torch.set_num_threads(a["threads"])
    pp = a["profile_prompt"]
    if pp is None:
        pp = rec.get("eval_method") != "vanilla"
    ct = a["chat_template"]
    if ct is None and rec.get("chat_template") is not None:
        ct = bool(rec["chat_template"])
    typer.echo(f"loading {a['model']} ...", err=True)
    engine = load_engine(
        a["model"], adapter=a["adapter"], soft_prompt=a["soft_prompt"], dtype=a["dtype"], device=a["device"],
        model_id=a["served_model_name"], max_batch=a["max_batch"], batch_window_ms=a["batch_window_ms"],
        chat_template=None if ct in (None, True) else False, profile_prompt_default=pp,
        labels_default=a["labels"] or rec.get("labels") or "auto", survey_batch_size=a["survey_batch_size"],
        prefill_chunk=a["prefill_chunk"], profile_cache_size=a["profile_cache_size"],
    )
    if a["chat_template"] and not getattr(engine.tok, "chat_template", None):
        raise PluralignError(f"{a['model']} has no chat template (drop the flag for the plain System/User/Assistant format)",
                             field="--chat-template")
    cfg = ServeConfig(api_key=a["api_key"], max_concurrent=a["max_concurrent"], max_body_bytes=a["max_body_bytes"],
                      max_input_tokens=a["max_input_tokens"], max_tokens_limit=a["max_tokens_limit"],
                      max_survey_items=a["max_survey_items"], max_message_chars=a["max_message_chars"],
                      max_profile_chars=a["max_profile_chars"], host=a["host"], header_timeout_s=a["header_timeout"],
                      body_timeout_s=a["body_timeout"], shutdown_timeout_s=a["shutdown_timeout"])
    app = create_app(engine, cfg)
    what = engine.info.model_id + (f" + adapter {a['adapter']}" if a["adapter"] else "") + (
        f" + soft prompt {a['soft_prompt']}" if a["soft_prompt"] else "")
    typer.echo(f"serving {what} on http://{a['host']}:{a['port']} (max batch {a['max_batch']}, window {a['batch_window_ms']:g} ms"
               f"{', API key required' if a['api_key'] else ''})", err=True)
    uvicorn.run(app, host=a["host"], port=a["port"], log_level=a["log_level"], access_log=a["log_level"] in ("info", "debug"),
                **uvicorn_options(cfg))
