"""The model side of the server: one worker thread that owns the model and runs every forward pass.

Continuous batching. Requests wait in a queue; the worker takes them between decode steps:

* when nothing is running, the first arrival opens a collection window (``batch_window_ms``) and
  every request that arrives within it (up to ``max_batch``) is prefilled in **one** forward pass,
  whatever its profile: prompts are padded on the left, with the attention mask and per-row
  position ids (the count of real tokens before each one), and each row carries its own profile
  embedding (``profile_embeds`` ``[B, D]`` of :class:`~pluralign.adapters.AdaptedModel`);
* the running rows then decode together, one token per row per forward pass, each forward getting
  the rows' profile embeddings again (the routers read them on every step);
* between two decode steps, rows that finished (EOS, a stop string, ``max_tokens``) or whose client
  went away leave the batch, and queued requests join it (up to ``max_batch`` rows): the newcomers
  are prefilled together, and their KV cache is left-padded to the running batch's length (or the
  other way round) and concatenated along the batch dimension. Cache columns that no row attends
  any more are dropped.

Padding is masked and positions are per row, so a row computes what it would alone: greedy outputs
do not depend on what else is in the batch (up to float rounding of differently shaped kernels;
``tests/serve`` checks equality on a tiny model).

Survey requests (``/v1/survey``) go through the same worker: the ones taken at a step boundary are
scored together with :func:`pluralign.evaluation.runner.predict`, the scorer of ``pluralign eval``,
before the next decode step (the running rows pause meanwhile).

A soft prompt (``pluralign softprompt``) is prepended as input embeddings at prefill, laid out as
:func:`pluralign.blackbox.softprompt.extend_inputs` does: ``[virtual tokens][padding][prompt]``.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections import deque
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
    """What is served (for ``GET /v1/models``)."""

    model_id: str
    model: str
    adapter: str | None = None
    adapter_method: str | None = None
    profile_routed: bool = False
    profile_encoder: str | None = None
    soft_prompt: str | None = None
    extra: dict = field(default_factory=dict)


class Engine:
    """Owns the model; :meth:`submit` queues jobs for the worker thread (:meth:`start`)."""

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
    ):
        self.model = model
        self.tok = tokenizer
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        self.info = info
        self.profile_kwargs = profile_kwargs
        self.max_batch = int(max_batch)
        self.window = float(batch_window_ms) / 1000.0
        self.chat_template = chat_template
        self.profile_prompt_default = profile_prompt_default
        self.labels_default = labels_default
        self.survey_batch_size = survey_batch_size
        self.device = next(model.parameters()).device
        self.soft = None
        self.score_model = model
        if soft_prompt is not None:
            from pluralign.blackbox.softprompt import SoftPromptModel

            self.score_model = SoftPromptModel(model, soft_prompt).eval()  # checks the hidden size
            self.soft = self.score_model.soft_prompt.detach()
        self.n_virtual = 0 if self.soft is None else int(self.soft.shape[0])
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.max_positions = int(getattr(cfg, "max_position_embeddings", 0) or 0) or None
        self.eos_ids = self._eos_ids()
        self._cache_arg = _cache_argument(model)
        self.tok_lock = threading.Lock()
        self._q: queue.Queue = queue.Queue()
        self._pending: deque[GenJob] = deque()
        self._surveys: list[SurveyJob] = []
        self._batch: _Batch | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.stats = {"prefill_batches": 0, "prefill_rows": 0, "max_prefill_rows": 0, "decode_steps": 0, "decode_rows": 0,
                      "max_decode_rows": 0, "joined_running": 0, "survey_batches": 0, "errors": 0}

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
        self._surveys.clear()

    def _all_jobs(self):
        jobs = list(self._batch.jobs) if self._batch is not None else []
        jobs += list(self._pending) + list(self._surveys)
        while True:
            try:
                jobs.append(self._q.get_nowait())
            except queue.Empty:
                return jobs

    # ------------------------------------------------------------------ requests (any thread)
    def chat_prompt(self, messages: list[dict], profile: Profile | None, profile_prompt: bool) -> str:
        """The prompt text: ``messages`` through the chat template, the profile's persona
        (:func:`pluralign.evaluation.methods.persona_system`) as the system prompt unless
        ``profile_prompt`` is false; a system message of the client's own follows it."""
        from pluralign.evaluation.methods import persona_system
        from pluralign.models.chat import build_chat_prompt

        msgs = list(messages)
        if profile is not None and not profile.is_empty() and profile_prompt:
            persona = persona_system(profile)
            if msgs[0]["role"] == "system":
                msgs[0] = {"role": "system", "content": persona + "\n\n" + msgs[0]["content"]}
            else:
                msgs.insert(0, {"role": "system", "content": persona})
        with self.tok_lock:
            return build_chat_prompt(self.tok, msgs, use_chat_template=self.chat_template)

    def encode(self, text: str) -> list[int]:
        """Token ids of a prompt (a templated prompt carries its own BOS, as in the eval scorer)."""
        add = not (self.tok.bos_token and text.startswith(self.tok.bos_token))
        with self.tok_lock:
            return list(self.tok(text, add_special_tokens=add)["input_ids"])

    def count_tokens(self, text: str) -> int:
        with self.tok_lock:
            return len(self.tok(text, add_special_tokens=False)["input_ids"])

    def submit(self, job: GenJob | SurveyJob) -> None:
        if self._stop.is_set():
            raise APIError(503, "the model worker is not running", type="server_error", code="not_running")
        self._q.put(job)

    def load(self) -> dict:
        return {"running": len(self._batch) if self._batch is not None else 0,
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
        jobs (waiting for one when idle and ``block``), score surveys, admit queued requests into free
        rows (one prefill pass), then one decode step of the running rows."""
        self._take(block and self._batch is None and not self._pending and not self._surveys)
        if self._surveys:
            jobs, self._surveys = [j for j in self._surveys if not self._gone(j)], []
            if jobs:
                self._run_surveys(jobs)
        self._pending = deque(j for j in self._pending if not self._gone(j))
        if self._batch is not None:  # rows whose client went away leave now
            keep = [i for i, j in enumerate(self._batch.jobs) if not self._gone(j)]
            self._batch = _trim(_select(self._batch, keep)) if keep else None
        running = len(self._batch) if self._batch is not None else 0
        free = self.max_batch - running
        if free > 0 and self._pending:
            take = [self._pending.popleft() for _ in range(min(free, len(self._pending)))]
            try:
                new = self._prefill(take)
            except Exception as e:
                log.exception("prefill failed")
                self.stats["errors"] += 1
                for j in take:
                    j.fail(APIError(500, f"generation failed: {type(e).__name__}: {e}", type="server_error", code="internal_error"))
                new = None
            if running:
                self.stats["joined_running"] += len(take)
            if new is not None:
                self._batch = new if self._batch is None else _merge(self._batch, new)
        if self._batch is not None:
            self._decode()

    @staticmethod
    def _gone(job) -> bool:
        """True (and the job's waiter told) when its client went away."""
        if job.cancelled and not job.done:
            job.done = True
            job.emit("error", APIError(499, "the client closed the request", code="client_closed"))
        return job.cancelled

    # ------------------------------------------------------------------ forward passes
    def _profile_tensor(self, profiles: list[Profile]) -> torch.Tensor | None:
        if self.profile_kwargs is None:
            return None
        return self.profile_kwargs(profiles)["profile_embeds"]

    def _forward(self, prof, cache, **kw):
        extra = {} if prof is None else {"profile_embeds": prof}
        extra[self._cache_arg] = cache  # the cache is updated in place
        return self.model(use_cache=True, logits_to_keep=1, **kw, **extra)

    @torch.inference_mode()
    def _prefill(self, jobs: list[GenJob]) -> _Batch | None:
        n, width = len(jobs), max(len(j.prompt_ids) for j in jobs)
        ids = torch.full((n, width), int(self.tok.pad_token_id), dtype=torch.long)
        att = torch.zeros((n, width), dtype=torch.long)
        for r, j in enumerate(jobs):
            L = len(j.prompt_ids)
            ids[r, width - L:] = torch.tensor(j.prompt_ids, dtype=torch.long)
            att[r, width - L:] = 1
        ids, att = ids.to(self.device), att.to(self.device)
        pos = (att.cumsum(-1) - 1).clamp(min=0)
        prof = self._profile_tensor([j.profile for j in jobs])
        cache = _cache(None)
        if self.soft is not None:
            from pluralign.blackbox.softprompt import extend_inputs

            emb = self.model.get_input_embeddings()(ids)
            x, att, pos = extend_inputs(self.soft[None], emb, att, pos)
            out = self._forward(prof, cache, inputs_embeds=x, attention_mask=att, position_ids=pos)
        else:
            out = self._forward(prof, cache, input_ids=ids, attention_mask=att, position_ids=pos)
        self.stats["prefill_batches"] += 1
        self.stats["prefill_rows"] += n
        self.stats["max_prefill_rows"] = max(self.stats["max_prefill_rows"], n)
        toks = self._sample(out.logits[:, -1, :], jobs)
        b = _Batch(jobs=list(jobs), cache=cache, mask=att,
                   pos=att.sum(-1), last=torch.tensor(toks, dtype=torch.long, device=self.device), prof=prof)
        keep = [r for r, (j, t) in enumerate(zip(jobs, toks)) if not self._accept(j, t)]
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
        with self.tok_lock:
            return self.tok.decode(job.out_ids, skip_special_tokens=True)

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
        from pluralign.data.items import SurveyItem
        from pluralign.data.tasks import GroupExample, SurveyDataset
        from pluralign.evaluation.runner import EvalConfig, predict

        groups: dict[tuple, list[SurveyJob]] = {}
        for j in jobs:
            groups.setdefault(self.survey_settings(j.req), []).append(j)
        for (method, labels, ct, scoring), group in groups.items():
            items, examples, owner = {}, [], []
            try:
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
            except PluralignError as e:
                for j in group:
                    self._survey_fail(j, APIError(400, e.message, param=e.field))
                continue
            except Exception as e:
                log.exception("survey scoring failed")
                self.stats["errors"] += 1
                for j in group:
                    self._survey_fail(j, APIError(500, f"scoring failed: {type(e).__name__}: {e}", type="server_error",
                                                  code="internal_error"))
                continue
            self.stats["survey_batches"] += 1
            from pluralign.evaluation.scoring import option_labels

            res: list[list[dict]] = [[] for _ in group]
            for e, p, m, n in zip(examples, preds.probs, preds.mass, owner):
                it = items[e.item_id]
                res[n].append({"id": e.item_id.split("\x1f", 1)[1], "options": list(it.options),
                               "labels": option_labels(it.n_options, labels), "probs": [float(x) for x in p], "option_mass": float(m)})
            for n, j in enumerate(group):
                if not j.done:
                    j.done = True
                    j.emit("done", {"results": res[n], "method": method, "labels": labels, "scoring": scoring,
                                    "chat_template": ct is None and bool(getattr(self.tok, "chat_template", None))})


# ----------------------------------------------------------------------------------------- loading
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
    profile encoder the adapter records) and the soft prompt; return an :class:`Engine` (not started)."""
    from pluralign.models import load_backbone

    net, tok = load_backbone(model, dtype=dtype, device=device)
    profile_kwargs = None
    info = EngineInfo(model_id=model_id or str(model), model=str(model))
    if adapter is not None:
        from pluralign.adapters import load_adapter_for_eval, read_adapter_config

        meta = read_adapter_config(adapter)
        if meta.get("method") == "ptuning-v2":
            raise PluralignError("prefix-tuning (ptuning-v2) adapters keep their own KV prefix; the server cannot batch them "
                                 "(serve a LoRA / MoE-LoRA adapter, or score it with pluralign eval)", file=adapter, field="--adapter")
        net, profile_kwargs = load_adapter_for_eval(net, adapter, tokenizer=tok)
        info.adapter, info.adapter_method = str(adapter), meta.get("method")
        info.profile_routed = profile_kwargs is not None
        info.profile_encoder = (meta.get("profile_encoder") or {}).get("name") if profile_kwargs is not None else None
    sp = None
    if soft_prompt is not None:
        from pluralign.blackbox.softprompt import load_soft_prompt_model

        sp = load_soft_prompt_model(net, soft_prompt).soft_prompt.detach()  # checks the hidden size
        info.soft_prompt = str(soft_prompt)
    return Engine(net, tok, info=info, profile_kwargs=profile_kwargs, soft_prompt=sp, **engine_kw)
