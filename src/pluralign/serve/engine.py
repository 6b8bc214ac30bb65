"""The model side of the server: one worker thread that owns the model and runs every forward pass.

Continuous batching. Requests wait in a queue; the worker takes them between decode steps:

* when nothing is running, the first arrival opens a collection window (``batch_window_ms``) and
  the requests that arrive within it (up to ``max_batch``) are prefilled **together**, whatever
  their profiles: prompts are padded on the left, with the attention mask and per-row position ids
  (the count of real tokens before each one), and each row carries its own profile embedding
  (``profile_embeds`` ``[B, D]`` of :class:`~pluralign.adapters.AdaptedModel`);
* prefill is chunked: one engine step runs at most ``prefill_chunk`` prompt positions (rows x
  columns, padding included) of one prefilling group, then one decode step of the running rows. A
  long prompt therefore holds the other streams back by about one chunk per token, not by its whole
  prefill. Groups whose prefill is under way take turns, one chunk per step; a group is formed of
  queued requests in arrival order, skipping those whose length would make more than half of the
  group's positions padding (they form the next group);
* the running rows decode together, one token per row per forward pass, each forward getting the
  rows' profile embeddings again (the routers read them on every step);
* between two decode steps, rows that finished (EOS, a stop string, ``max_tokens``) or whose client
  went away leave the batch (a prefilling row whose client went away leaves its group), and a group
  whose prefill is complete joins it (up to ``max_batch`` rows, prefilling ones counted): its KV
  cache is left-padded to the running batch's length (or the other way round) and concatenated along
  the batch dimension. Cache columns that no row attends any more are dropped.

Each request is prepared alone: its prompt is rendered and tokenized by the HTTP side, and its
profile embedding is computed (or taken from the LRU :class:`ProfileCache`) before its prefill
starts; when the embeddings of a new group, computed together, fail, they are computed again one by
one, so only a request whose own embedding fails gets an error and nothing else is touched. A group
whose prefill pass fails is split the same way: its requests are prefilled again one by one, and
only the one that fails alone gets an error.

Padding is masked and positions are per row, so a row computes what it would alone: greedy outputs
do not depend on what else is in the batch, nor on the chunk size (up to float rounding of
differently shaped kernels; ``tests/serve`` checks equality on a tiny model).

Survey requests (``/v1/survey``) go through the same worker: the ones taken at a step boundary are
scored together with :func:`pluralign.evaluation.runner.predict`, the scorer of ``pluralign eval``,
before the next decode step (the running rows pause meanwhile); when a group fails, each request is
scored again alone.

A soft prompt (``pluralign softprompt``) is prepended as input embeddings at prefill, laid out as
:func:`pluralign.adapters.softprompt.extend_inputs` does: ``[virtual tokens][padding][prompt]``.

Client text never becomes a control token: :meth:`Engine.plain` breaks every occurrence of the
tokenizer's special tokens (``<|im_end|>``, ``<|im_start|>``, ...) in a message or a profile value
with an invisible word joiner (U+2060), so it is tokenized as the plain text it is.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import queue
import re
import secrets
import threading
import time
from collections import OrderedDict, deque
from pathlib import Path
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from pluralign.data.profile import Profile
from pluralign.errors import PluralignError
from pluralign.serve.protocol import APIError, Sampling, SurveyRequest

log = logging.getLogger("pluralign.serve")

Emit = Callable[..., None]  # emit(kind, payload): "delta" str | "done" dict | "error" APIError


# ----------------------------------------------------------------------------------------- jobs
class GenJob:
    """One chat completion: prompt token ids, profile, sampling; events go to ``emit``."""

    def __init__(self, prompt_ids: list[int], profile: Profile | None, sampling: Sampling, emit: Emit):
        self.prompt_ids = list(prompt_ids)
        self.profile = profile or Profile()
        self.sampling = sampling
        self.emit = emit
        self.cancelled = False
        self.done = False
        self.out_ids: list[int] = []
        self.n_generated = 0
        self.sent = ""
        self.solo = False  # prefilled alone (set when the group it was prefilled with failed)
        self.prof: torch.Tensor | None = None  # its profile embedding [D], set before prefill
        self.gen = None
        if not sampling.greedy:
            seed = sampling.seed if sampling.seed is not None else secrets.randbits(63)
            self.gen = torch.Generator().manual_seed(seed & 0xFFFF_FFFF_FFFF_FFFF)

    def cancel(self) -> None:
        self.cancelled = True

    def finish(self, reason: str) -> None:
        if not self.done:
            self.done = True
            self.emit("done", {"finish_reason": reason, "prompt_tokens": len(self.prompt_ids), "completion_tokens": self.n_generated})

    def fail(self, err: APIError) -> None:
        if not self.done:
            self.done = True
            self.emit("error", err)


@dataclass
class SurveyJob:
    req: SurveyRequest
    emit: Emit
    cancelled: bool = False
    done: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class _Batch:
    """The running rows: KV cache, attention mask ``[B, L]``, next position ``[B]``, last token ``[B]``."""

    jobs: list[GenJob]
    cache: object
    mask: torch.Tensor
    pos: torch.Tensor
    last: torch.Tensor
    prof: torch.Tensor | None

    def __len__(self) -> int:
        return len(self.jobs)


@dataclass
class _Prefill:
    """A group whose prefill is under way: inputs ``[B, W]`` token ids (or ``[B, W, H]`` embeddings
    with a soft prompt), attention mask and position ids ``[B, W]``; ``done`` columns are in the cache."""

    jobs: list[GenJob]
    inputs: torch.Tensor
    embeds: bool
    att: torch.Tensor
    pos: torch.Tensor
    prof: torch.Tensor | None
    cache: object
    done: int = 0
    logits: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.jobs)


class ProfileCache:
    """Profile embeddings in front of an adapter's ``profile_kwargs``: an LRU of at most ``size``
    entries (0: nothing kept), one ``[D]`` tensor per profile (keyed by a hash of
    :meth:`Profile.key`), on the model's device. ``encoder``: the profile encoder behind
    ``profile_kwargs``; its own per-profile cache is emptied after each call, so an embedding is
    stored once, here. Called like ``profile_kwargs``: ``cache(profiles) -> {"profile_embeds": [B, D]}``."""

    def __init__(self, profile_kwargs: Callable[[list[Profile]], dict], size: int, encoder=None):
        self.fn, self.size, self.encoder = profile_kwargs, max(0, int(size)), encoder
        self._d: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self.hits = self.misses = 0

    @staticmethod
    def _key(p: Profile) -> bytes:
        return hashlib.blake2b(p.key().encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def __len__(self) -> int:
        return len(self._d)

    def __bool__(self) -> bool:  # a callable, even while empty
        return True

    def __call__(self, profiles) -> dict:
        return {"profile_embeds": self.embed(list(profiles))}

    def embed(self, profiles: list[Profile]) -> torch.Tensor:
        keys = [self._key(p) for p in profiles]
        todo: dict[bytes, Profile] = {}
        for p, k in zip(profiles, keys):
            if k not in self._d and k not in todo:
                todo[k] = p
        fresh: dict[bytes, torch.Tensor] = {}
        if todo:
            try:
                emb = self.fn(list(todo.values()))["profile_embeds"]
            finally:
                self._empty_encoder()
            fresh = {k: e.clone() for k, e in zip(todo, emb)}  # own storage: an entry keeps only its row
            self.misses += len(todo)
        rows = []
        for k in keys:
            if k in fresh:
                rows.append(fresh[k])
            else:
                rows.append(self._d[k])
                self._d.move_to_end(k)
                self.hits += 1
        if self.size:
            for k, e in fresh.items():
                self._d[k] = e
                if len(self._d) > self.size:
                    self._d.popitem(last=False)
        return torch.stack(rows)

    def _empty_encoder(self) -> None:
        stack = [self.encoder]
        while stack:
            e = stack.pop()
            if e is None:
                continue
            c = getattr(e, "_cache", None)
            if isinstance(c, dict):
                c.clear()
            stack.extend(getattr(e, "parts", ()))

    def stats(self) -> dict:
        return {"entries": len(self._d), "max_entries": self.size, "hits": self.hits, "misses": self.misses}


_JOINER = "\u2060"  # WORD JOINER: invisible, and in no tokenizer's special tokens


def _special_patterns(tok) -> tuple[re.Pattern | None, re.Pattern | None]:
    """Regexes of the tokenizer's special tokens (its named ones and every added token marked
    special) of two characters or more: exact, and in any letter case."""
    names = set(getattr(tok, "all_special_tokens", None) or [])
    for t in (getattr(tok, "added_tokens_decoder", None) or {}).values():
        if getattr(t, "special", False):
            names.add(str(getattr(t, "content", t)))
    names = [n for n in names if len(n) >= 2 and _JOINER not in n]
    if not names:
        return None, None
    alt = _trie_pattern(names)
    return re.compile(alt), re.compile(alt, re.IGNORECASE)


def _trie_pattern(words: list[str]) -> str:
    """One regex of ``words`` as a character trie: matching costs the length of the longest word per
    position, however many words there are (some tokenizers have thousands of special tokens)."""
    trie: dict = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict) -> str:
        alts = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch]
        if not alts:
            return ""
        if len(alts) == 1 and "" not in node:
            return alts[0]
        return "(?:" + "|".join(alts) + ")" + ("?" if "" in node else "")

    return build(trie)


def _break(text: str, pattern: re.Pattern | None) -> str:
    """A word joiner after the first character of every match of ``pattern`` (overlapping ones
    included), in one pass: no match survives, and none can form, since no special token holds it."""
    if pattern is None:
        return text
    m = pattern.search(text)
    if m is None:
        return text
    out, i = [], 0
    while m is not None:
        out += [text[i:m.start() + 1], _JOINER]
        i = m.start() + 1
        m = pattern.search(text, i)
    out.append(text[i:])
    return "".join(out)


def _select_prefill(p: _Prefill, idx: list[int]) -> _Prefill:
    if len(idx) == len(p):
        return p
    t = torch.tensor(idx, device=p.att.device)
    cache = _cache([(k[t], v[t]) for k, v in _kv(p.cache)]) if p.done else _cache(None)
    return _Prefill(jobs=[p.jobs[i] for i in idx], inputs=p.inputs[t], embeds=p.embeds, att=p.att[t], pos=p.pos[t],
                    prof=None if p.prof is None else p.prof[t], cache=cache, done=p.done)


def _kv(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def _cache(kv):
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=kv)


def _cache_argument(model) -> str:
    """The name under which the Hugging Face model's forward takes a KV cache: ``cache`` in recent
    transformers (``past_key_values`` is deprecated there), ``past_key_values`` before."""
    import inspect

    from transformers import PreTrainedModel

    for m in model.modules():  # pre-order: the outermost Hugging Face model comes first
        if isinstance(m, PreTrainedModel):
            return "cache" if "cache" in inspect.signature(type(m).forward).parameters else "past_key_values"
    return "past_key_values"


def _select(b: _Batch, idx: list[int]) -> _Batch:
    if len(idx) == len(b):
        return b
    t = torch.tensor(idx, device=b.mask.device)
    return _Batch(
        jobs=[b.jobs[i] for i in idx], cache=_cache([(k[t], v[t]) for k, v in _kv(b.cache)]), mask=b.mask[t], pos=b.pos[t],
        last=b.last[t], prof=None if b.prof is None else b.prof[t],
    )


def _trim(b: _Batch) -> _Batch:
    """Drop leading cache columns that no row attends (left padding of rows that left)."""
    used = b.mask.any(0).nonzero()
    first = int(used[0]) if len(used) else 0
    if first == 0:
        return b
    b.cache = _cache([(k[:, :, first:], v[:, :, first:]) for k, v in _kv(b.cache)])
    b.mask = b.mask[:, first:]
    return b


def _merge(a: _Batch, n: _Batch) -> _Batch:
    """Rows of ``a`` then rows of ``n``; the shorter cache is padded on the left (masked)."""
    la, ln = a.mask.shape[1], n.mask.shape[1]
    L = max(la, ln)

    def pad(t, by):  # [B, H, T, D] or [B, T]: ``by`` zero columns on the left of the T axis
        if by == 0:
            return t
        return F.pad(t, (by, 0)) if t.dim() == 2 else F.pad(t, (0, 0, by, 0))

    kv = [(torch.cat([pad(ka, L - la), pad(kn, L - ln)]), torch.cat([pad(va, L - la), pad(vn, L - ln)]))
          for (ka, va), (kn, vn) in zip(_kv(a.cache), _kv(n.cache))]
    prof = None if a.prof is None else torch.cat([a.prof, n.prof])
    return _Batch(jobs=a.jobs + n.jobs, cache=_cache(kv), mask=torch.cat([pad(a.mask, L - la), pad(n.mask, L - ln)]),
                  pos=torch.cat([a.pos, n.pos]), last=torch.cat([a.last, n.last]), prof=prof)


# ----------------------------------------------------------------------------------------- engine
@dataclass
class EngineInfo:
    """What is served (for ``GET /v1/models``): names, never local paths (:func:`display_name`)."""

    model_id: str
    model: str
    adapter: str | None = None
    adapter_method: str | None = None
    profile_routed: bool = False
    profile_encoder: str | None = None
    soft_prompt: str | None = None
    extra: dict = field(default_factory=dict)


class Engine:
    """Owns the model; :meth:`submit` queues jobs for the worker thread (:meth:`start`).

    ``prefill_chunk``: prompt positions (rows x columns) per prefill forward pass;
    ``profile_cache_size``: profile embeddings kept (LRU, :class:`ProfileCache`); ``profile_encoder``:
    the encoder behind ``profile_kwargs`` (its own cache is emptied after each call); ``paths``:
    local paths of what is served mapped to their display names (for :meth:`redact`)."""

    def __init__(
        self,
        model,
        tokenizer,
        *,
        info: EngineInfo,
        profile_kwargs: Callable[[list[Profile]], dict] | None = None,
        soft_prompt: torch.Tensor | None = None,
        max_batch: int = 16,
        batch_window_ms: float = 10.0,
        chat_template: bool | None = None,
        profile_prompt_default: bool = True,
        labels_default: str = "auto",
        survey_batch_size: int = 16,
        prefill_chunk: int = 512,
        profile_cache_size: int = 1024,
        profile_encoder=None,
        paths: dict[str, str] | None = None,
    ):
        self.model = model
        self.tok = tokenizer  # the worker thread's (decoding, survey scoring, backbone profile encoder)
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        self.req_tok = copy.deepcopy(tokenizer)  # the request threads' (templates, tokenizing), under tok_lock
        self.info = info
        self.profile_cache = None if profile_kwargs is None else ProfileCache(profile_kwargs, profile_cache_size, profile_encoder)
        self.profile_kwargs = self.profile_cache
        self.max_batch = int(max_batch)
        self.window = float(batch_window_ms) / 1000.0
        self.prefill_chunk = max(1, int(prefill_chunk))
        self.chat_template = chat_template
        self.profile_prompt_default = profile_prompt_default
        self.labels_default = labels_default
        self.survey_batch_size = survey_batch_size
        self.device = next(model.parameters()).device
        self.soft = None
        self.score_model = model
        if soft_prompt is not None:
            from pluralign.adapters.softprompt import SoftPromptModel

            self.score_model = SoftPromptModel(model, soft_prompt).eval()  # checks the hidden size
            self.soft = self.score_model.soft_prompt.detach()
        self.n_virtual = 0 if self.soft is None else int(self.soft.shape[0])
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.max_positions = int(getattr(cfg, "max_position_embeddings", 0) or 0) or None
        self.eos_ids = self._eos_ids()
        self._cache_arg = _cache_argument(model)
        self._special, self._special_any_case = _special_patterns(tokenizer)
        self.paths = dict(paths or {})
        self.tok_lock = threading.Lock()
        self._q: queue.Queue = queue.Queue()
        self._pending: deque[GenJob] = deque()
        self._prefilling: list[_Prefill] = []
        self._surveys: list[SurveyJob] = []
        self._batch: _Batch | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.stats = {"prefill_batches": 0, "prefill_rows": 0, "max_prefill_rows": 0, "prefill_chunks": 0,
                      "max_prefill_chunk_tokens": 0, "decode_steps": 0, "decode_rows": 0, "max_decode_rows": 0,
                      "joined_running": 0, "survey_batches": 0, "request_errors": 0, "errors": 0}

    # ------------------------------------------------------------------ set-up
    def _eos_ids(self) -> set[int]:
        ids = set()
        if self.tok.eos_token_id is not None:
            ids.add(int(self.tok.eos_token_id))
        gc = getattr(self.model, "generation_config", None)
        e = getattr(gc, "eos_token_id", None) if gc is not None else None
        for x in (e if isinstance(e, (list, tuple)) else [e]):
            if x is not None:
                ids.add(int(x))
        return ids

    def start(self) -> "Engine":
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="pluralign-serve-engine", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        err = APIError(503, "the server is shutting down", type="server_error", code="shutting_down")
        for j in self._all_jobs():
            j.fail(err) if isinstance(j, GenJob) else self._survey_fail(j, err)
        self._batch = None
        self._pending.clear()
        self._prefilling.clear()
        self._surveys.clear()

    def _all_jobs(self):
        jobs = list(self._batch.jobs) if self._batch is not None else []
        jobs += [j for p in self._prefilling for j in p.jobs]
        jobs += list(self._pending) + list(self._surveys)
        while True:
            try:
                jobs.append(self._q.get_nowait())
            except queue.Empty:
                return jobs

    # ------------------------------------------------------------------ requests (any thread)
    def plain(self, text: str) -> str:
        """``text`` with every occurrence of a special token of the tokenizer broken by a word joiner
        (U+2060) after its first character, so that it is tokenized as text, never as a control token."""
        return _break(text, self._special)

    def plain_profile(self, profile: Profile | None) -> Profile | None:
        """``profile`` with its string values made :meth:`plain`, matching special tokens in any letter
        case (descriptions lower-case some values). Raises :class:`PluralignError` if a value still
        spells a special token in lower case (after Unicode case folding)."""
        if profile is None or self._special_any_case is None:
            return profile
        d = profile.to_dict()
        changed = False

        def fix(v):
            nonlocal changed
            if not isinstance(v, str):
                return v
            w = _break(v, self._special_any_case)
            if self._special.search(w.lower()) or self._special.search(w.casefold()):
                raise PluralignError("spells a control token of the model's tokenizer", field=None)
            changed = changed or w != v
            return w

        for k, v in list(d.items()):
            if k == "extra":
                d[k] = {fix(a): fix(b) for a, b in v.items()}
            else:
                d[k] = fix(v)
        return Profile.from_dict(d) if changed else profile

    def chat_prompt(self, messages: list[dict], profile: Profile | None, profile_prompt: bool) -> str:
        """The prompt text: ``messages`` through the chat template, the profile's persona
        (:func:`pluralign.evaluation.methods.persona_system`) as the system prompt unless
        ``profile_prompt`` is false; a system message of the client's own follows it. Every message
        and the persona are :meth:`plain` text."""
        from pluralign.evaluation.methods import persona_system
        from pluralign.models.chat import build_chat_prompt

        msgs = [{"role": m["role"], "content": self.plain(m["content"])} for m in messages]
        if profile is not None and not profile.is_empty() and profile_prompt:
            persona = self.plain(persona_system(profile))
            if msgs[0]["role"] == "system":
                msgs[0] = {"role": "system", "content": persona + "\n\n" + msgs[0]["content"]}
            else:
                msgs.insert(0, {"role": "system", "content": persona})
        with self.tok_lock:
            return build_chat_prompt(self.req_tok, msgs, use_chat_template=self.chat_template)

    def encode(self, text: str) -> list[int]:
        """Token ids of a prompt (a templated prompt carries its own BOS, as in the eval scorer)."""
        add = not (self.req_tok.bos_token and text.startswith(self.req_tok.bos_token))
        with self.tok_lock:
            return list(self.req_tok(text, add_special_tokens=add)["input_ids"])

    def count_tokens(self, text: str) -> int:
        with self.tok_lock:
            return len(self.req_tok(text, add_special_tokens=False)["input_ids"])

    def redact(self, text: str) -> str:
        """``text`` with the local paths of what is served replaced by their display names."""
        for path, name in sorted(self.paths.items(), key=lambda kv: -len(kv[0])):
            if path and path in text:
                text = text.replace(path, name)
        return text

    def submit(self, job: GenJob | SurveyJob) -> None:
        if self._stop.is_set():
            raise APIError(503, "the model worker is not running", type="server_error", code="not_running")
        self._q.put(job)

    def load(self) -> dict:
        return {"running": len(self._batch) if self._batch is not None else 0,
                "prefilling": sum(len(p) for p in self._prefilling),
                "queued": self._q.qsize() + len(self._pending) + len(self._surveys)}

    # ------------------------------------------------------------------ worker loop
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception as e:  # the worker never dies: every affected request gets a 500
                log.exception("engine step failed")
                self.stats["errors"] += 1
                err = APIError(500, f"generation failed: {type(e).__name__}: {e}", type="server_error", code="internal_error")
                if self._batch is not None:
                    for j in self._batch.jobs:
                        j.fail(err)
                self._batch = None

    def _take(self, block: bool) -> None:
        """Move queued jobs to the pending lists; ``block``: wait for the first one, then keep the
        collection window open."""
        def put(j):
            (self._surveys if isinstance(j, SurveyJob) else self._pending).append(j)

        if block:
            while not self._stop.is_set():
                try:
                    put(self._q.get(timeout=0.1))
                    break
                except queue.Empty:
                    continue
            else:
                return
            if self._pending and self.window > 0:
                deadline = time.monotonic() + self.window
                while len(self._pending) < self.max_batch:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        put(self._q.get(timeout=left))
                    except queue.Empty:
                        break
        while True:
            try:
                put(self._q.get_nowait())
            except queue.Empty:
                break

    def step(self, block: bool = True) -> None:
        """One scheduling step (the worker thread's loop body; tests call it directly): take queued
        jobs (waiting for one when idle and ``block``), score surveys, form a prefill group of queued
        requests if rows are free, run one prefill chunk, then one decode step of the running rows."""
        idle = self._batch is None and not self._pending and not self._surveys and not self._prefilling
        self._take(block and idle)
        if self._surveys:
            jobs, self._surveys = [j for j in self._surveys if not self._gone(j)], []
            if jobs:
                self._run_surveys(jobs)
        self._pending = deque(j for j in self._pending if not self._gone(j))
        if self._batch is not None:  # rows whose client went away leave now
            keep = [i for i, j in enumerate(self._batch.jobs) if not self._gone(j)]
            self._batch = _trim(_select(self._batch, keep)) if keep else None
        groups = []
        for p in self._prefilling:
            keep = [i for i, j in enumerate(p.jobs) if not self._gone(j)]
            if keep:
                groups.append(_select_prefill(p, keep))
        self._prefilling = groups
        running = len(self._batch) if self._batch is not None else 0
        free = self.max_batch - running - sum(len(p) for p in self._prefilling)
        if free > 0 and self._pending:
            jobs = self._prepare(self._group(free))
            if jobs:
                try:
                    self._prefilling.append(self._start_prefill(jobs))
                except Exception as e:
                    self._prefill_failed(jobs, e)
        if self._prefilling:
            p = self._prefilling.pop(0)  # groups take turns, one chunk each
            try:
                finished = self._prefill_chunk(p)
                new = self._first_tokens(p) if finished else None
            except Exception as e:
                self._prefill_failed(p.jobs, e)
            else:
                if not finished:
                    self._prefilling.append(p)
                else:
                    if self._batch is not None:
                        self.stats["joined_running"] += len(p)
                    if new is not None:
                        self._batch = new if self._batch is None else _merge(self._batch, new)
        if self._batch is not None:
            self._decode()

    def _group(self, free: int) -> list[GenJob]:
        """Up to ``free`` pending requests in arrival order, skipping those that would make more than
        half of the group's positions padding (and a ``solo`` request goes alone)."""
        take, skipped, width, real = [], [], 0, 0
        while self._pending and len(take) < free:
            j = self._pending.popleft()
            n = len(j.prompt_ids)
            if take and (take[0].solo or j.solo or (len(take) + 1) * max(width, n) > 2 * (real + n)):
                skipped.append(j)
                if take[0].solo:
                    break
                continue
            take.append(j)
            width, real = max(width, n), real + n
        self._pending.extendleft(reversed(skipped))
        return take

    def _prepare(self, jobs: list[GenJob]) -> list[GenJob]:
        """Each job's profile embedding (``job.prof``); a job whose embedding fails gets its error
        alone. Returns the jobs that are ready."""
        if self.profile_kwargs is None or not jobs:
            return jobs
        try:
            emb = self.profile_kwargs([j.profile for j in jobs])["profile_embeds"]
            for j, e in zip(jobs, emb):
                j.prof = e
            return jobs
        except Exception as e:
            if len(jobs) == 1:
                jobs[0].fail(self._request_error(e, "the profile could not be embedded", param="profile"))
                return []
        ready = []  # the group failed: each job alone, so that only the one at fault gets the error
        for j in jobs:
            try:
                j.prof = self.profile_kwargs([j.profile])["profile_embeds"][0]
                ready.append(j)
            except Exception as e:
                j.fail(self._request_error(e, "the profile could not be embedded", param="profile"))
        return ready

    def _request_error(self, e: Exception, what: str, param: str | None = None) -> APIError:
        """The error of one request whose preparation or prefill failed: 400 for a
        :class:`PluralignError` or a text the tokenizer or encoder cannot take, else 500."""
        self.stats["request_errors"] += 1
        if isinstance(e, PluralignError):
            return APIError(400, f"{what}: {e.message}", param=param)
        if isinstance(e, UnicodeError):
            return APIError(400, f"{what}: {type(e).__name__}: {e}", param=param)
        log.error("%s (%s: %s)", what, type(e).__name__, e)
        self.stats["errors"] += 1
        return APIError(500, f"{what}: {type(e).__name__}: {e}", type="server_error", code="internal_error")

    def _prefill_failed(self, jobs: list[GenJob], e: Exception) -> None:
        """A prefill pass failed: a group's requests go back to the front of the queue to be prefilled
        one by one; a request that fails alone gets the error."""
        if len(jobs) > 1:
            log.warning("prefill of %d requests failed (%s: %s); prefilling them one by one", len(jobs), type(e).__name__, e)
            for j in jobs:
                j.solo = True
            self._pending.extendleft(reversed(jobs))
            return
        log.exception("prefill failed", exc_info=e)
        jobs[0].fail(self._request_error(e, "generation failed"))

    @staticmethod
    def _gone(job) -> bool:
        """True (and the job's waiter told) when its client went away."""
        if job.cancelled and not job.done:
            job.done = True
            job.emit("error", APIError(499, "the client closed the request", code="client_closed"))
        return job.cancelled

    # ------------------------------------------------------------------ forward passes
    def _forward(self, prof, cache, **kw):
        extra = {} if prof is None else {"profile_embeds": prof}
        extra[self._cache_arg] = cache  # the cache is updated in place
        return self.model(use_cache=True, logits_to_keep=1, **kw, **extra)

    @torch.inference_mode()
    def _start_prefill(self, jobs: list[GenJob]) -> _Prefill:
        n, width = len(jobs), max(len(j.prompt_ids) for j in jobs)
        ids = torch.full((n, width), int(self.tok.pad_token_id), dtype=torch.long)
        att = torch.zeros((n, width), dtype=torch.long)
        for r, j in enumerate(jobs):
            L = len(j.prompt_ids)
            ids[r, width - L:] = torch.tensor(j.prompt_ids, dtype=torch.long)
            att[r, width - L:] = 1
        ids, att = ids.to(self.device), att.to(self.device)
        pos = (att.cumsum(-1) - 1).clamp(min=0)
        prof = None if self.profile_kwargs is None else torch.stack([j.prof for j in jobs])
        self.stats["prefill_batches"] += 1
        self.stats["prefill_rows"] += n
        self.stats["max_prefill_rows"] = max(self.stats["max_prefill_rows"], n)
        if self.soft is not None:
            from pluralign.adapters.softprompt import extend_inputs

            emb = self.model.get_input_embeddings()(ids)
            x, att, pos = extend_inputs(self.soft[None], emb, att, pos)
            return _Prefill(jobs=list(jobs), inputs=x, embeds=True, att=att, pos=pos, prof=prof, cache=_cache(None))
        return _Prefill(jobs=list(jobs), inputs=ids, embeds=False, att=att, pos=pos, prof=prof, cache=_cache(None))

    @torch.inference_mode()
    def _prefill_chunk(self, p: _Prefill) -> bool:
        """Run the next ``prefill_chunk`` positions (rows x columns) of ``p``; True when its prompts are
        all in the cache (``p.logits`` then holds each row's last logits)."""
        width = p.att.shape[1]
        cols = max(1, self.prefill_chunk // len(p))
        s, e = p.done, min(width, p.done + cols)
        x = p.inputs[:, s:e]
        out = self._forward(p.prof, p.cache, attention_mask=p.att[:, :e], position_ids=p.pos[:, s:e],
                            **({"inputs_embeds": x} if p.embeds else {"input_ids": x}))
        p.done = e
        self.stats["prefill_chunks"] += 1
        self.stats["max_prefill_chunk_tokens"] = max(self.stats["max_prefill_chunk_tokens"], len(p) * (e - s))
        if e < width:
            return False
        p.logits = out.logits[:, -1, :]
        return True

    def _first_tokens(self, p: _Prefill) -> _Batch | None:
        """Sample each row's first token after its prefill; the rows that go on, as a running batch."""
        toks = self._sample(p.logits, p.jobs)
        b = _Batch(jobs=list(p.jobs), cache=p.cache, mask=p.att, pos=p.att.sum(-1),
                   last=torch.tensor(toks, dtype=torch.long, device=self.device), prof=p.prof)
        keep = [r for r, (j, t) in enumerate(zip(p.jobs, toks)) if not self._accept(j, t)]
        return _select(b, keep) if keep else None

    @torch.inference_mode()
    def _decode(self) -> None:
        b = self._batch
        mask = torch.cat([b.mask, torch.ones((len(b), 1), dtype=b.mask.dtype, device=b.mask.device)], dim=1)
        out = self._forward(b.prof, b.cache, input_ids=b.last[:, None], attention_mask=mask, position_ids=b.pos[:, None])
        b.mask, b.pos = mask, b.pos + 1
        self.stats["decode_steps"] += 1
        self.stats["decode_rows"] += len(b)
        self.stats["max_decode_rows"] = max(self.stats["max_decode_rows"], len(b))
        toks = self._sample(out.logits[:, -1, :], b.jobs)
        b.last = torch.tensor(toks, dtype=torch.long, device=self.device)
        keep = [r for r, (j, t) in enumerate(zip(b.jobs, toks)) if not self._accept(j, t)]
        self._batch = _trim(_select(b, keep)) if keep else None

    # ------------------------------------------------------------------ tokens
    def _sample(self, logits: torch.Tensor, jobs: list[GenJob]) -> list[int]:
        """Greedy rows: argmax; sampling rows: temperature, nucleus (top_p), each row's own seeded generator."""
        out = logits.argmax(-1).tolist()
        rows = [r for r, j in enumerate(jobs) if not j.sampling.greedy]
        if rows:
            lg = logits[rows].float().cpu()
            for k, r in enumerate(rows):
                s = jobs[r].sampling
                lr = lg[k] / s.temperature
                if s.top_p < 1.0:
                    sl, si = lr.sort(descending=True)
                    p = sl.softmax(-1)
                    drop = (p.cumsum(-1) - p) >= s.top_p  # the most likely token is always kept
                    sl = sl.masked_fill(drop, float("-inf"))
                    probs = torch.zeros_like(lr).scatter(0, si, sl.softmax(-1))
                else:
                    probs = lr.softmax(-1)
                out[r] = int(torch.multinomial(probs, 1, generator=jobs[r].gen))
        return out

    def _accept(self, job: GenJob, tok: int) -> bool:
        """Record a generated token, send the text that is safe to send; True when ``job`` is finished."""
        if self._gone(job):
            return True
        job.n_generated += 1
        if tok in self.eos_ids:
            self._flush(job, self._text(job))
            job.finish("stop")
            return True
        job.out_ids.append(tok)
        text = self._text(job)
        stops = job.sampling.stop
        if stops:
            hits = [i for i in (text.find(s) for s in stops) if i >= 0]
            if hits:
                self._flush(job, text[: min(hits)])
                job.finish("stop")
                return True
        if job.n_generated >= job.sampling.max_tokens:
            self._flush(job, text)
            job.finish("length")
            return True
        hold = 0
        for s in stops:  # a suffix that may be the start of a stop string waits
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        safe = text[: len(text) - hold]
        safe = safe.rstrip("\ufffd")  # an incomplete multi-byte character waits for its next token
        if len(safe) > len(job.sent) and safe.startswith(job.sent):
            job.emit("delta", safe[len(job.sent):])
            job.sent = safe
        return False

    def _flush(self, job: GenJob, final: str) -> None:
        if final.startswith(job.sent) and len(final) > len(job.sent):
            job.emit("delta", final[len(job.sent):])
            job.sent = final

    def _text(self, job: GenJob) -> str:
        return self.tok.decode(job.out_ids, skip_special_tokens=True)  # the worker's own tokenizer

    # ------------------------------------------------------------------ survey
    def survey_settings(self, req: SurveyRequest) -> tuple[str, str, bool | None, str]:
        """(method, labels, chat_template, scoring) of a survey request, defaults filled in."""
        pp = self.profile_prompt_default if req.profile_prompt is None else req.profile_prompt
        method = "persona" if pp and not req.profile.is_empty() else "vanilla"
        ct = self.chat_template if req.chat_template is None else (None if req.chat_template else False)
        return method, req.labels or self.labels_default, ct, req.scoring

    def _survey_fail(self, job: SurveyJob, err: APIError) -> None:
        if not job.done:
            job.done = True
            job.emit("error", err)

    def _run_surveys(self, jobs: list[SurveyJob]) -> None:
        groups: dict[tuple, list[SurveyJob]] = {}
        for j in jobs:
            groups.setdefault(self.survey_settings(j.req), []).append(j)
        for settings, group in groups.items():
            self._score_group(settings, group)

    def _score_group(self, settings: tuple, group: list[SurveyJob]) -> None:
        """Score ``group`` together; if that fails, each request alone, so that only the one at fault
        gets the error."""
        method, labels, ct, scoring = settings
        try:
            res = self._score(settings, group)
        except Exception as e:
            if len(group) > 1:
                log.warning("scoring %d survey requests together failed (%s); scoring them one by one", len(group),
                            type(e).__name__)
                for j in group:
                    self._score_group(settings, [j])
                return
            self._survey_fail(group[0], self._request_error(e, "scoring failed", param=getattr(e, "field", None)))
            return
        self.stats["survey_batches"] += 1
        for n, j in enumerate(group):
            if not j.done:
                j.done = True
                j.emit("done", {"results": res[n], "method": method, "labels": labels, "scoring": scoring,
                                "chat_template": ct is None and bool(getattr(self.tok, "chat_template", None))})

    def _score(self, settings: tuple, group: list[SurveyJob]) -> list[list[dict]]:
        from pluralign.data.items import SurveyItem
        from pluralign.data.tasks import GroupExample, SurveyDataset
        from pluralign.evaluation.runner import EvalConfig, predict
        from pluralign.evaluation.scoring import option_labels

        method, labels, ct, scoring = settings
        items, examples, owner = {}, [], []
        for n, j in enumerate(group):
            for it in j.req.items:
                iid = f"{n}\x1f{it['id']}"
                items[iid] = SurveyItem(id=iid, text=it["text"], options=tuple(it["options"]), ordinal=it["ordinal"])
                k = len(it["options"])
                examples.append(GroupExample(group_id=f"request-{n}", profile=j.req.profile, item_id=iid, probs=(1.0 / k,) * k))
                owner.append(n)
        ds = SurveyDataset(name="serve", kind="distributional", items=items, examples=examples)
        cfg = EvalConfig(method=method, labels=labels, chat_template=ct, scoring=scoring, batch_size=self.survey_batch_size,
                         bootstrap=0)
        preds = predict(self.score_model, self.tok, ds, cfg, profile_kwargs=self.profile_kwargs, progress=False)
        res: list[list[dict]] = [[] for _ in group]
        for e, p, m, n in zip(examples, preds.probs, preds.mass, owner):
            it = items[e.item_id]
            res[n].append({"id": e.item_id.split("\x1f", 1)[1], "options": list(it.options),
                           "labels": option_labels(it.n_options, labels), "probs": [float(x) for x in p], "option_mass": float(m)})
        return res


# ----------------------------------------------------------------------------------------- loading
def display_name(path, *, run: bool = False) -> str:
    """What ``GET /v1/models`` shows for a model, adapter or soft prompt: a local path's last part (for
    an adapter folder named ``adapter``, its run folder's name); anything else (a short name, a hub
    id) as given."""
    p = Path(str(path)).expanduser()
    if not p.exists():
        return str(path)
    p = p.resolve()
    if run and p.name == "adapter" and p.parent.name:
        return p.parent.name
    return p.name or str(path)


def _paths(*values) -> dict[str, str]:
    """Local paths (as given, absolute and resolved) -> display names."""
    out = {}
    for v, run in values:
        if v is None or not Path(str(v)).expanduser().exists():
            continue
        name = display_name(v, run=run)
        p = Path(str(v)).expanduser()
        for form in {str(v), str(p), str(p.absolute()), str(p.resolve())}:
            if form not in (".", "", name):
                out[form] = name
    return out


def load_engine(
    model: str = "smollm2-135m",
    *,
    adapter=None,
    soft_prompt=None,
    dtype: str = "auto",
    device: str = "auto",
    model_id: str | None = None,
    **engine_kw,
) -> Engine:
    """Load the backbone (:func:`pluralign.models.load_backbone`), the adapter the way
    ``pluralign eval --adapter`` does (:func:`pluralign.adapters.load_adapter_for_eval`, with the
    profile encoder the adapter records) and the soft prompt; return an :class:`Engine` (not started).
    ``model_id`` defaults to the model's :func:`display_name`."""
    from pluralign.models import load_backbone

    net, tok = load_backbone(model, dtype=dtype, device=device)
    profile_kwargs = encoder = None
    info = EngineInfo(model_id=model_id or display_name(model), model=display_name(model))
    if adapter is not None:
        from pluralign.adapters import load_adapter_for_eval, read_adapter_config

        meta = read_adapter_config(adapter)
        if meta.get("method") == "ptuning-v2":
            raise PluralignError("prefix-tuning (ptuning-v2) adapters keep their own KV prefix; the server cannot batch them "
                                 "(serve a LoRA / MoE-LoRA adapter, or score it with pluralign eval)", file=adapter, field="--adapter")
        spec = (meta.get("profile_encoder") or {}).get("name")
        if spec:  # built here, so that the engine can keep its cache bounded (ProfileCache)
            from pluralign.models.profile_encoder import make_profile_encoder, needs_backbone

            encoder = make_profile_encoder(spec, backbone=(net, tok) if needs_backbone(spec) else None)
        net, profile_kwargs = load_adapter_for_eval(net, adapter, encoder=encoder, tokenizer=tok)
        if encoder is not None and hasattr(encoder, "bind"):
            encoder.bind(net)  # a backbone encoder reads the adapted model (with its adapters switched off)
        info.adapter, info.adapter_method = display_name(adapter, run=True), meta.get("method")
        info.profile_routed = profile_kwargs is not None
        info.profile_encoder = spec if profile_kwargs is not None else None
    sp = None
    if soft_prompt is not None:
        from pluralign.adapters.softprompt import load_soft_prompt_model

        sp = load_soft_prompt_model(net, soft_prompt).soft_prompt.detach()  # checks the hidden size
        info.soft_prompt = display_name(soft_prompt)
    paths = _paths((model, False), (adapter, True), (soft_prompt, False))
    return Engine(net, tok, info=info, profile_kwargs=profile_kwargs, soft_prompt=sp, profile_encoder=encoder, paths=paths,
                  **engine_kw)
