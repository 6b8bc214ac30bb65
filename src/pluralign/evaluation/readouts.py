"""Three ways to read an answer distribution from a model (``--readout``).

* ``logprob`` (default): next-token probabilities of the option labels, renormalised over the
  options (:class:`pluralign.evaluation.scoring.OptionScorer`; ``--scoring loglik`` uses the
  options' full log-likelihood). One forward pass per prompt.
* ``verbalized``: the question's answer instruction asks instead for a JSON object of percentages
  per option (``{"1": 30, "2": 70}``); the reply is generated greedily and parsed robustly
  (:func:`parse_verbalized`: the first ``{...}`` block, JSON or Python-literal syntax, single
  quotes, ``%`` signs, unquoted keys, trailing commas; keys are option labels, ``Option 1`` or the
  option text; missing options count 0; ``label: value`` pairs without braces also count). The
  percentages are renormalised to sum to 1. A reply with no usable percentages is *unparseable*:
  that example is not scored (``coverage`` < 1) and counted in ``readout.unparseable``.
* ``sampled``: N answers (``--samples``) sampled at temperature 1 (no top-k / top-p), each parsed to
  one option (:func:`parse_choice`: the label at the start of the reply, the option text, or a
  standalone label); the histogram of valid answers is the distribution. Answers naming no option
  are counted in ``readout.invalid_samples``; a prompt with no valid answer is not scored.

Both generating read-outs are batched (prompts sorted by length, left-padded, position ids from
the attention mask) and seeded: batch ``b`` samples under ``torch`` seed ``seed * 1_000_003 + b``
inside :func:`torch.random.fork_rng`, so the same seed and batch size give the same answers and the
global RNG is untouched. ``option_mass`` is the share of parseable replies (verbalized) or of valid
samples (sampled).

Any object with ``generate_texts(prompts, *, max_new_tokens, num_samples, do_sample, temperature,
seed) -> list[list[str]]`` can stand in for the model (tests use a stub that returns fixed text).
"""

from __future__ import annotations

import ast
import json
import re
import time
from typing import Callable, Sequence

import numpy as np

from pluralign.errors import PluralignError
from pluralign.evaluation.prompts import Predictions, build_prompts, expand_by_profile, progress_bar

READOUTS = ("logprob", "verbalized", "sampled")

VERBAL_INSTRUCTION = (
    "Do not choose one option. Estimate how people answer this question (the people described, if any): "
    "reply with only a JSON object that maps every option {kind} to the percentage of people choosing it, "
    "the percentages summing to 100, for example {example} for a question with two options."
)


def verbal_instruction(labels: Sequence[str]) -> str:
    kind = "number" if labels[0].isdigit() else "letter"
    a, b = ("1", "2") if kind == "number" else ("A", "B")
    return VERBAL_INSTRUCTION.format(kind=kind, example=json.dumps({a: 30, b: 70}))


def verbalize_messages(msgs: list[dict], labels: Sequence[str]) -> list[dict]:
    """``msgs`` with the last user turn's answer instruction replaced by the JSON request."""
    from pluralign.evaluation.methods import INSTRUCTION

    out = [dict(m) for m in msgs]
    for m in reversed(out):
        if m.get("role") == "user":
            text = m["content"]
            kind = "number" if labels[0].isdigit() else "letter"
            old = INSTRUCTION.format(kind=kind)
            new = verbal_instruction(labels)
            m["content"] = text.replace(old, new) if old in text else f"{text}\n\n{new}"
            break
    return out


# ---------------------------------------------------------------------------------- parsing
_NUM = r"[-+]?\d+(?:[.,]\d+)?"


def _balanced_block(text: str) -> str | None:
    i = text.find("{")
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i : j + 1]
    return text[i:] + "}"  # an unfinished object (the reply ran out of tokens)


def _loads(block: str):
    try:
        return json.loads(block)
    except (ValueError, TypeError):
        pass
    s = block
    s = re.sub(r"(\d)\s*%", r"\1", s)  # 40% -> 40
    s = s.replace("\u201c", '"').replace("\u201d", '"').replace("\u2018", "'").replace("\u2019", "'")
    s = re.sub(r",\s*([}\]])", r"\1", s)  # trailing commas
    s = re.sub(r"([{,]\s*)([A-Za-z0-9_][\w .-]*?)\s*:", lambda m: f'{m.group(1)}"{m.group(2)}":', s)  # bare keys
    for attempt in (s, s.replace("'", '"')):
        try:
            return json.loads(attempt)
        except (ValueError, TypeError):
            pass
    try:
        return ast.literal_eval(s)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return None


def _number(v) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        m = re.search(_NUM, v)
        if m:
            return float(m.group(0).replace(",", "."))
    if isinstance(v, dict):  # {"1": {"percentage": 40}}
        for x in v.values():
            n = _number(x)
            if n is not None:
                return n
    return None


def _norm(s: str) -> str:
    return " ".join(str(s).lower().replace("\u2019", "'").split()).strip(" .:)(\"'")


def option_index(key, labels: Sequence[str], options: Sequence[str]) -> int | None:
    """Option index named by ``key``: a label (``"2"``, ``"B"``, ``"2."``, ``"(b)"``), ``"Option 2"``,
    the option text, or ``"2. Option text"``; None if it names none."""
    k = _norm(key)
    labs = [_norm(x) for x in labels]
    if k in labs:
        return labs.index(k)
    opts = [_norm(o) for o in options]
    if k in opts:
        return opts.index(k)
    m = re.match(r"^(?:option|answer|choice)?\s*([a-z0-9]+)\b\s*(?:[.:)\-]\s*(.*))?$", k)
    if m:
        head, rest = m.group(1), (m.group(2) or "").strip()
        if head in labs and (not rest or rest in opts[labs.index(head)] or opts[labs.index(head)] in rest):
            return labs.index(head)
    return None


def parse_verbalized(text: str, labels: Sequence[str], options: Sequence[str]) -> tuple[np.ndarray | None, str]:
    """Percentages per option in a reply → (distribution or None, status).

    Status: ``ok``; ``partial`` (some options missing, counted 0); or why nothing was usable:
    ``no_json``, ``no_options`` (no key names an option), ``bad_value`` (a negative or non-numeric
    value), ``zero_total``."""
    K = len(labels)
    pairs: list[tuple[object, object]] = []
    block = _balanced_block(text)
    if block is None:  # maybe a bare list of K numbers, [30, 70]
        m = re.search(r"\[[^\[\]]*\]", text)
        block = m.group(0) if m else None
    obj = _loads(block) if block else None
    if isinstance(obj, dict):
        pairs = list(obj.items())
    elif isinstance(obj, list) and all(isinstance(x, (int, float)) for x in obj) and len(obj) == K:
        pairs = list(zip(labels, obj))  # a bare list of K numbers, in option order
    if not pairs:  # "1: 40%, 2: 60%" or "A = 40" without braces
        lab = "|".join(re.escape(x) for x in labels)
        for m in re.finditer(rf"(?<![\w.])[\"']?(?:option\s*)?({lab})[\"']?\s*[:=]\s*[\"']?({_NUM})\s*%?", text, re.I):
            pairs.append((m.group(1), m.group(2)))
    if not pairs:
        return None, "no_json"
    vals = np.zeros(K)
    named = np.zeros(K, dtype=bool)
    for k, v in pairs:
        j = option_index(k, labels, options)
        if j is None:
            continue
        x = _number(v)
        if x is None or x < 0 or not np.isfinite(x):
            return None, "bad_value"
        vals[j] = x
        named[j] = True
    if not named.any():
        return None, "no_options"
    if vals.sum() <= 0:
        return None, "zero_total"
    return vals / vals.sum(), ("ok" if named.all() else "partial")


def parse_choice(text: str, labels: Sequence[str], options: Sequence[str]) -> int | None:
    """The option one sampled answer names: a label at the start (``"2"``, ``"2."``, ``"(B)"``,
    ``"Answer: 2"``), an option text at the start, else the first standalone digit label (letter
    labels only when followed by ``.`` or ``)``); None if none."""
    t = text.strip()
    t = re.sub(r"^(?:the\s+)?(?:answer|option|choice)\s*(?:is)?\s*[:\-]?\s*", "", t, flags=re.I)
    m = re.match(r"^[\(\[\"'*]*\s*([A-Za-z0-9]+)(?![A-Za-z0-9])", t)
    # a letter label must not be the article of a sentence ("A lot of people ...")
    if m and m.group(1) in labels and (m.group(1).isdigit() or not re.match(r"\s+[a-z]", t[m.end():])):
        return list(labels).index(m.group(1))
    low = _norm(t)
    for j, o in enumerate(options):
        if _norm(o) and low.startswith(_norm(o)):
            return j
    if labels[0].isdigit():
        for m in re.finditer(r"(?<![\w.])(\d+)(?![\w])", t):
            if m.group(1) in labels:
                return list(labels).index(m.group(1))
    else:
        for m in re.finditer(r"(?<![A-Za-z])([A-Z])[.)]", t):
            if m.group(1) in labels:
                return list(labels).index(m.group(1))
    return None


# ---------------------------------------------------------------------------------- generation
class HFGenerator:
    """Batched generation with a causal LM: prompts sorted by length, left-padded; prompts are
    tokenised (and truncated) exactly as :class:`OptionScorer` does for scoring."""

    def __init__(self, model, tok, *, batch_size: int = 16, max_length: int | None = None,
                 batch_extra: Callable[[list[int]], dict] | None = None):
        from pluralign.evaluation.scoring import OptionScorer

        if not hasattr(model, "generate"):
            raise PluralignError(f"{type(model).__name__} cannot generate text; use --readout logprob", field="readout")
        self.model, self.tok = model, tok
        self.scorer = OptionScorer(model, tok, batch_size=batch_size, max_length=max_length)
        self.batch_size = batch_size
        self.batch_extra = batch_extra

    def generate_texts(self, prompts: Sequence[str], *, max_new_tokens: int, num_samples: int = 1, do_sample: bool = False,
                       temperature: float = 1.0, seed: int = 0, progress: Callable[[int], None] | None = None) -> list[list[str]]:
        import torch
        from transformers import GenerationConfig

        seqs = [self.scorer._encode_prompt(p) for p in prompts]
        per = max(1, self.batch_size // num_samples) if num_samples > 1 else self.batch_size
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        gc_model = getattr(self.model, "generation_config", None)
        eos = getattr(gc_model, "eos_token_id", None) or self.tok.eos_token_id
        gcfg = GenerationConfig(
            max_new_tokens=max_new_tokens, do_sample=do_sample, num_return_sequences=num_samples,
            temperature=temperature if do_sample else 1.0, top_k=0 if do_sample else None, top_p=1.0 if do_sample else None,
            pad_token_id=self.tok.pad_token_id, eos_token_id=eos,
        )
        out: list[list[str]] = [[] for _ in prompts]
        dev = self.scorer.device
        for b, s in enumerate(range(0, len(order), per)):
            idx = order[s : s + per]
            width = max(len(seqs[i]) for i in idx)
            ids = torch.full((len(idx), width), self.tok.pad_token_id, dtype=torch.long)
            att = torch.zeros((len(idx), width), dtype=torch.long)
            for r, i in enumerate(idx):
                ids[r, width - len(seqs[i]):] = torch.tensor(seqs[i])
                att[r, width - len(seqs[i]):] = 1
            extra = self.batch_extra(idx) if self.batch_extra else {}
            with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []), torch.inference_mode():
                torch.manual_seed(seed * 1_000_003 + b)
                try:
                    gen = self.model.generate(input_ids=ids.to(dev), attention_mask=att.to(dev), generation_config=gcfg, **extra)
                except (TypeError, ValueError) as e:
                    raise PluralignError(f"this model cannot generate for --readout ({e}); use --readout logprob", field="readout") from None
            new = gen[:, width:].cpu()
            texts = self.tok.batch_decode(new, skip_special_tokens=True)
            for r, i in enumerate(idx):
                out[i] = texts[r * num_samples : (r + 1) * num_samples]
            if progress:
                progress(len(idx))
        return out


# ---------------------------------------------------------------------------------- predict
def build_readout_prompts(tok, test, cfg, train=None, *, verbal: bool = False):
    """Unique prompts for ``test`` as :func:`pluralign.evaluation.prompts.build_prompts` builds them;
    ``verbal`` swaps the answer instruction for the JSON request."""
    return build_prompts(tok, test, cfg, train, transform=verbalize_messages if verbal else None)


def predict_readout(model, tok, test, cfg, *, train=None, profile_kwargs=None, progress: bool = True):
    """Predictions of the ``verbalized`` or ``sampled`` read-out (see the module docstring)."""
    if cfg.readout not in READOUTS:
        raise PluralignError(f"unknown readout {cfg.readout!r} ({' | '.join(READOUTS)})", field="readout")
    verbal = cfg.readout == "verbalized"
    n = 1 if verbal else int(cfg.samples)
    if n < 1:
        raise PluralignError(f"--samples must be at least 1, got {cfg.samples}", field="samples")
    prompts, labels, options, profiles, index = build_readout_prompts(tok, test, cfg, train, verbal=verbal)
    if profile_kwargs is not None:
        prompts, labels, options, profiles, index = expand_by_profile(test, prompts, labels, options, index)
    extra_fn = (lambda idx: profile_kwargs([profiles[i] for i in idx])) if profile_kwargs else None
    if hasattr(model, "generate_texts"):
        gen = model
    else:
        gen = HFGenerator(model, tok, batch_size=cfg.batch_size, max_length=cfg.max_length, batch_extra=extra_fn)
    kmax = max((len(x) for x in labels), default=2)
    max_new = cfg.max_new_tokens or (min(256, 24 + 10 * kmax) if verbal else 8)
    bar = progress_bar(len(prompts), f"{cfg.method}/{cfg.readout}", progress)
    t0 = time.perf_counter()
    try:
        texts = gen.generate_texts(prompts, max_new_tokens=max_new, num_samples=n, do_sample=not verbal,
                                   temperature=float(cfg.temperature), seed=cfg.seed, **({"progress": bar.update} if bar and isinstance(gen, HFGenerator) else {}))
    finally:
        if bar:
            bar.close()
    dt = time.perf_counter() - t0
    probs: list[np.ndarray | None] = []
    mass: list[float] = []
    status: dict[str, int] = {}
    failures: list[str] = []
    invalid = 0
    for p_texts, labs, opts in zip(texts, labels, options):
        if verbal:
            dist, st = parse_verbalized(p_texts[0] if p_texts else "", labs, opts)
            status[st] = status.get(st, 0) + 1
            if dist is None and len(failures) < 5:
                failures.append((p_texts[0] if p_texts else "")[:200])
            probs.append(dist)
            mass.append(1.0 if dist is not None else 0.0)
        else:
            counts = np.zeros(len(labs))
            for t in p_texts:
                j = parse_choice(t, labs, opts)
                if j is None:
                    invalid += 1
                    if len(failures) < 5:
                        failures.append(t[:100])
                else:
                    counts[j] += 1
            probs.append(counts / counts.sum() if counts.sum() > 0 else None)
            mass.append(float(counts.sum() / max(1, len(p_texts))))
    n_prompts = len(prompts)
    if verbal:
        bad = n_prompts - status.get("ok", 0) - status.get("partial", 0)
        info = {"name": "verbalized", "max_new_tokens": max_new, "replies": n_prompts, "unparseable": bad,
                "unparseable_frac": bad / max(1, n_prompts), "status": dict(sorted(status.items())), "unparsed_examples": failures}
    else:
        total = n_prompts * n
        info = {"name": "sampled", "samples": n, "temperature": float(cfg.temperature), "max_new_tokens": max_new,
                "invalid_samples": invalid, "invalid_frac": invalid / max(1, total),
                "prompts_without_valid_sample": sum(p is None for p in probs), "invalid_examples": failures}
    return Predictions(
        probs=[probs[i] for i in index], mass=[mass[i] for i in index], seconds=dt, n_prompts=n_prompts,
        extra={"readout": info},
    )
