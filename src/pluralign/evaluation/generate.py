"""Open-ended evaluation: generate per (profile, prompt) with the adapter and with the base model,
then compare (``pluralign generate-eval``).

Metrics (:func:`evaluate_generation`):

* **win rate vs the base model**, judged pairwise in BOTH orders (adapter as A, then as B): each
  order is a win, a loss or a tie (the judge's P(adapter better) within ``tie_margin`` of 0.5;
  identical completions are a tie without asking); ``win_rate = (wins + ties / 2) / judged``,
  with the counts, the judge's position bias (how often it picked A) and how often both orders
  agree. Off-format verdicts are counted and left out.
* **BLEnD answer match** (records with human answers): BLEnD's soft exact match
  (:func:`pluralign.data.loaders.blend.blend_match`), binary and count-weighted accuracy, for the
  adapter and the base model.
* **diversity across profiles**: for each prompt asked by several profiles (a BLEnD question id
  across regions; for PRISM / Community Alignment the same prompt text), Distinct-2 (distinct
  word bigrams / all bigrams of the completions of the different profiles, pooled) and the
  entropy (bits) of the distribution of the normalised answers across profiles; means over
  prompts (higher = the profiles get different answers).
* **judge vs human-answer agreement**: on records where exactly one of the two completions
  matches the human answers, how often the judge prefers that one (both orders averaged).

Judges (:func:`make_judge`): :class:`LocalJudge` (default) reads a local causal LM's next-token
log-probabilities of ``A`` and ``B`` after a judge prompt (so it cannot answer off-format; a
probability mass on {A, B} below ``min_mass`` is treated as off-format); :class:`HTTPJudge` asks an
OpenAI-compatible ``/v1/chat/completions`` endpoint (``pluralign serve`` is one) for one letter
and parses it (anything else is off-format). An endpoint that is down or answers with an HTTP
error is one :class:`~pluralign.errors.PluralignError` naming ``--judge-url``.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch

from pluralign._fields import helpfield
from pluralign.data.preferences import PromptRecord
from pluralign.errors import PluralignError
from pluralign.models.generation import decode, encode_prompt, generate_ids, prompt_text

JUDGE_SYSTEM = "You are an impartial judge comparing two responses. Answer with a single letter: A or B."
JUDGE_TEMPLATE = (
    "{who}\n\nPrompt:\n{prompt}\n\nResponse A:\n{a}\n\nResponse B:\n{b}\n\n"
    "Which response is better for this person? Answer with the single letter A or B."
)


def judge_messages(prompt: str, a: str, b: str, profile=None, role: str = "user") -> list[dict]:
    if profile is not None and not profile.is_empty():
        d = profile.describe()
        d = d[0].lower() + d[1:]
        who = (f"The person asking is {d}" if role == "user" else f"The answer should be the one given by {d}")
    else:
        who = "The person asking is an ordinary user."
    return [{"role": "system", "content": JUDGE_SYSTEM},
            {"role": "user", "content": JUDGE_TEMPLATE.format(who=who, prompt=prompt, a=a or "(empty)", b=b or "(empty)")}]


class Judge:
    """``prefer(items)`` -> P(A better) per ``(prompt, a, b, profile)`` item, None when off-format."""

    role = "user"

    def prefer(self, items: Sequence[tuple]) -> list[float | None]:  # pragma: no cover - abstract
        raise NotImplementedError

    def both_orders(self, items: Sequence[tuple]) -> list[tuple[float | None, float | None]]:
        """Per ``(prompt, x, y, profile)``: (P(x better) with x as A, P(x better) with x as B)."""
        n = len(items)
        fwd = self.prefer([(p, x, y, prof) for p, x, y, prof in items])
        rev = self.prefer([(p, y, x, prof) for p, x, y, prof in items])
        if len(fwd) != n or len(rev) != n:
            raise PluralignError("the judge returned a verdict count that does not match the items", field="judge")
        return [(f, (1.0 - r) if r is not None else None) for f, r in zip(fwd, rev)]

    def compare_both_orders(self, items: Sequence[tuple]) -> list[float | None]:
        """P(x better than y) averaged over the two orders (None when both are off-format)."""
        out = []
        for f, r in self.both_orders(items):
            vals = [v for v in (f, r) if v is not None]
            out.append(sum(vals) / len(vals) if vals else None)
        return out


class LocalJudge(Judge):
    """A local causal LM as judge: P(A) = softmax over the log-probs of the tokens ``A`` and ``B``
    at the answer position of the judge prompt (chat template when the model has one)."""

    def __init__(self, model, tok, *, batch_size: int = 8, max_length: int | None = 2048, min_mass: float = 0.0,
                 role: str = "user", name: str = "local"):
        from pluralign.evaluation.scoring import OptionScorer

        self.model, self.tok = model, tok
        self.scorer = OptionScorer(model, tok, batch_size=batch_size, max_length=max_length)
        self.min_mass = float(min_mass)
        self.role = role
        self.name = name
        self.masses: list[float] = []

    def prefer(self, items):
        from pluralign.models.chat import build_chat_prompt

        if not items:
            return []
        prompts = [build_chat_prompt(self.tok, judge_messages(p, a, b, prof, self.role)) for p, a, b, prof in items]
        scores = self.scorer.next_token(prompts, [["A", "B"]] * len(prompts))
        out = []
        for s in scores:
            self.masses.append(float(s.mass))
            out.append(None if s.mass < self.min_mass else float(s.probs[0]))
        return out


class HTTPJudge(Judge):
    """An OpenAI-compatible chat-completions endpoint as judge (``temperature 0``, a few tokens);
    the first letter of the reply must be A or B, else the verdict is off-format (None)."""

    def __init__(self, url: str, *, api_model: str | None = None, api_key: str | None = None, timeout: float = 60.0,
                 role: str = "user", transport=None):
        import httpx

        self.url = _chat_url(url)
        self.base = self.url.rsplit("/chat/completions", 1)[0]
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(timeout=timeout, headers=headers, transport=transport)
        self.api_model = api_model
        self.role = role
        self.name = self.url
        self.raw_off_format: list[str] = []

    def _request(self, method: str, url: str, **kw):
        import httpx

        try:
            r = self.client.request(method, url, **kw)
        except httpx.HTTPError as e:
            raise PluralignError(f"judge endpoint {url} is not reachable ({type(e).__name__}: {str(e)[:120]})", field="--judge-url") from None
        if r.status_code >= 400:
            raise PluralignError(f"judge endpoint {url} answered HTTP {r.status_code}: {' '.join(r.text.split())[:160]}", field="--judge-url")
        try:
            return r.json()
        except ValueError:
            raise PluralignError(f"judge endpoint {url} did not answer JSON", field="--judge-url") from None

    def _model(self) -> str:
        if self.api_model is None:
            d = self._request("GET", self.base + "/models")
            data = d.get("data") if isinstance(d, dict) else None
            self.api_model = str(data[0].get("id")) if isinstance(data, list) and data and isinstance(data[0], dict) else "default"
        return self.api_model

    def prefer(self, items):
        out = []
        for p, a, b, prof in items:
            body = {"model": self._model(), "messages": judge_messages(p, a, b, prof, self.role), "temperature": 0, "max_tokens": 4}
            d = self._request("POST", self.url, json=body)
            try:
                text = str(d["choices"][0]["message"]["content"] or "")
            except (KeyError, IndexError, TypeError):
                raise PluralignError("judge endpoint answer has no choices[0].message.content", field="--judge-url") from None
            v = parse_verdict(text)
            if v is None:
                self.raw_off_format.append(text[:40])
            out.append(v)
        return out


def parse_verdict(text: str) -> float | None:
    """1.0 for A, 0.0 for B (the first letter of the reply, after quotes / 'Response'), else None."""
    t = re.sub(r"^[\s\"'*(\[]*(response\s*)?", "", str(text), flags=re.I)
    if t[:1] in ("A", "a") and not t[1:2].isalpha():
        return 1.0
    if t[:1] in ("B", "b") and not t[1:2].isalpha():
        return 0.0
    return None


def _chat_url(url: str) -> str:
    u = str(url).rstrip("/")
    if not u.startswith(("http://", "https://")):
        raise PluralignError(f"judge URL must start with http:// or https://, got {url!r}", field="--judge-url")
    if u.endswith("/chat/completions"):
        return u
    if u.endswith("/v1"):
        return u + "/chat/completions"
    return u + "/v1/chat/completions"


def make_judge(*, model: str | None = None, url: str | None = None, api_model: str | None = None, api_key: str | None = None,
               device: str = "auto", dtype: str = "auto", batch_size: int = 8, min_mass: float = 0.0, role: str = "user",
               backbone: tuple | None = None) -> Judge:
    """A judge: the endpoint ``url`` when given, else the local ``model`` (or ``backbone = (model, tok)``)."""
    if url:
        import os

        return HTTPJudge(url, api_model=api_model, api_key=api_key or os.environ.get("PLURALIGN_JUDGE_API_KEY"), role=role)
    if backbone is None:
        if not model:
            raise PluralignError("a local judge needs a model (--judge-model)", field="--judge-model")
        from pluralign.models import load_backbone

        m, tok = load_backbone(model, dtype=dtype, device=device)
        for p in m.parameters():
            p.requires_grad_(False)
        backbone = (m, tok)
    return LocalJudge(backbone[0], backbone[1], batch_size=batch_size, min_mass=min_mass, role=role, name=str(model or "local"))


# --------------------------------------------------------------------------- metrics
def _words(text: str) -> list[str]:
    return re.findall(r"\w+", str(text).lower())


def distinct_n(texts: Sequence[str], n: int = 2) -> float | None:
    """Distinct n-grams / all n-grams of the pooled word sequences (None without any n-gram)."""
    grams = [tuple(w[i : i + n]) for w in map(_words, texts) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def answer_entropy(texts: Sequence[str]) -> float:
    """Shannon entropy (bits) of the distribution of the normalised answers."""
    from pluralign.data.loaders.blend import normalise_response

    c = Counter(" ".join(_words(normalise_response(t))) for t in texts)
    n = sum(c.values())
    return float(-sum(v / n * math.log2(v / n) for v in c.values())) if n else 0.0


def prompt_group(r: PromptRecord, role: str = "self") -> str:
    """What counts as "the same prompt" across profiles: the unit for answer-as-the-profile data
    (a BLEnD question id: the question text names each region), else the prompt text itself."""
    return r.unit if role == "self" else " ".join(r.prompt.split()).lower()


def diversity(records: Sequence[PromptRecord], completions: Sequence[str], *, role: str = "self") -> dict:
    """Distinct-2 and answer entropy across the distinct profiles asked the same prompt (groups
    with >= 2 profiles; one completion per profile and prompt)."""
    groups: dict[str, dict[str, str]] = defaultdict(dict)
    for r, c in zip(records, completions):
        groups[prompt_group(r, role)].setdefault(r.profile.key(), c)
    d2, ent, ent_max = [], [], []
    for by_prof in groups.values():
        texts = list(by_prof.values())
        if len(texts) < 2:
            continue
        v = distinct_n(texts, 2)
        if v is not None:
            d2.append(v)
        ent.append(answer_entropy(texts))
        ent_max.append(math.log2(len(texts)))
    return {
        "prompts": len(ent),
        "distinct2": float(np.mean(d2)) if d2 else None,
        "entropy_bits": float(np.mean(ent)) if ent else None,
        "entropy_max_bits": float(np.mean(ent_max)) if ent_max else None,
    }


@dataclass
class GenEvalConfig:
    max_new_tokens: int = helpfield(32, "New tokens per completion.")
    batch_size: int = helpfield(8, "Prompts per generate() call.")
    do_sample: bool = helpfield(False, "Sample (else greedy).")
    temperature: float = helpfield(1.0, "Sampling temperature (with do_sample).")
    top_p: float = helpfield(1.0, "Nucleus mass (with do_sample).")
    profile_prompt: bool = helpfield(True, "Profile in the system prompt, as in training.")
    chat_template: bool = helpfield(True, "Use the model's chat template.")
    max_length: int | None = helpfield(None, "Cut prompts to N tokens (middle cut).")
    tie_margin: float = helpfield(0.0, "A judge P(adapter better) within this of 0.5 is a tie.")
    seed: int = helpfield(0, "Seed of sampling.")


def _generate(model, tok, records, cfg: GenEvalConfig, *, role: str, profile_kwargs=None) -> list[str]:
    torch.manual_seed(cfg.seed)
    prompts = [encode_prompt(tok, prompt_text(tok, r, role=role, profile_prompt=cfg.profile_prompt, chat_template=cfg.chat_template),
                             cfg.max_length) for r in records]
    emb = profile_kwargs([r.profile for r in records])["profile_embeds"] if profile_kwargs is not None else None
    ids = generate_ids(model, tok, prompts, profile_embeds=emb, max_new_tokens=cfg.max_new_tokens, do_sample=cfg.do_sample,
                       temperature=cfg.temperature, top_p=cfg.top_p, batch_size=cfg.batch_size)
    return [decode(tok, c) for c in ids]


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def win_rate(records, adapter: Sequence[str], base: Sequence[str], judge: Judge, *, tie_margin: float = 0.0) -> tuple[dict, list]:
    """Pairwise adapter-vs-base verdicts in both orders (see the module docstring)."""
    items, idx = [], []
    verdicts: list[tuple[float | None, float | None] | str] = ["identical" if _same(a, b) else None for a, b in zip(adapter, base)]
    for i, (r, a, b) in enumerate(zip(records, adapter, base)):
        if verdicts[i] is None:
            items.append((r.prompt, a, b, r.profile))
            idx.append(i)
    for i, v in zip(idx, judge.both_orders(items) if items else []):
        verdicts[i] = v
    c = Counter()
    picked_a = judged_orders = consistent = both_judged = 0
    for v in verdicts:
        if v == "identical":
            c["ties"] += 2
            c["identical"] += 1
            continue
        outs = []
        for order, p in enumerate(v):
            if p is None:
                c["off_format"] += 1
                continue
            judged_orders += 1
            picked_a += int((p > 0.5) if order == 0 else (p < 0.5))  # with the adapter as B, P(adapter) < .5 means A
            o = "wins" if p > 0.5 + tie_margin else "losses" if p < 0.5 - tie_margin else "ties"
            c[o] += 1
            outs.append(o)
        if len(outs) == 2:
            both_judged += 1
            consistent += int(outs[0] == outs[1])
    n = c["wins"] + c["ties"] + c["losses"]
    rep = {
        "judge": getattr(judge, "name", type(judge).__name__), "records": len(records), "judged_orders": n,
        "wins": c["wins"], "ties": c["ties"], "losses": c["losses"], "off_format": c["off_format"], "identical": c["identical"],
        "win_rate": (c["wins"] + 0.5 * c["ties"]) / n if n else None,
        "position_bias_A": picked_a / judged_orders if judged_orders else None,
        "order_consistency": consistent / both_judged if both_judged else None,
    }
    if records and n == 0 and c["off_format"]:
        raise PluralignError(f"every judge verdict was off-format ({c['off_format']}); check the judge (--judge-url / --judge-model)",
                             field="--judge-url" if isinstance(judge, HTTPJudge) else "--judge-model")
    return rep, verdicts


def other_groups_answer(record: PromptRecord, pool: Sequence[PromptRecord]) -> str | None:
    """The model-free answer of a mean-collapsed model for ``record``: the answer the annotators of
    the *other* profiles (regions) asking the same unit (question) gave most often, pooled over
    them (counts summed by lower-cased first variant; ties broken alphabetically). ``None`` when no
    other profile has answers for the unit."""
    tally: Counter = Counter()
    for r in pool:
        if r.unit != record.unit or r.profile == record.profile or not r.answers:
            continue
        counts = r.answer_counts or (1,) * len(r.answers)
        for group, c in zip(r.answers, counts):
            if group:
                tally[group[0].strip().lower()] += int(c)
    if not tally:
        return None
    return min(tally, key=lambda a: (-tally[a], a))


def add_references(report: dict, records: Sequence[PromptRecord], pool: Sequence[PromptRecord]) -> dict:
    """Score the model-free reference ``other_groups_top`` (:func:`other_groups_answer`, from the
    records of ``pool``, e.g. the whole held-out part) on ``records`` with BLEnD's matching: per row
    ``ref_other_groups`` / ``ref_other_groups_weighted`` in ``report["outputs"]`` (matched by id) and
    ``report["references"]["other_groups_top"]``."""
    from pluralign.data.loaders.blend import blend_match

    rows = {row["id"]: row for row in report.get("outputs", [])}
    got = []
    for r in records:
        if not r.answers or r.id not in rows:
            continue
        a = other_groups_answer(r, pool)
        b, w = blend_match(a, r.answers, r.answer_counts) if a else (0.0, 0.0)
        rows[r.id].update({"ref_other_groups": b, "ref_other_groups_weighted": w, "ref_other_groups_answer": a})
        got.append((b, w, a is not None))
    if got:
        report.setdefault("references", {})["other_groups_top"] = {
            "n": len(got), "accuracy": float(np.mean([g[0] for g in got])), "weighted": float(np.mean([g[1] for g in got])),
            "without_other_groups": sum(1 for g in got if not g[2]),
            "what": "the other profiles' most frequent human answer to the same question (a mean-collapsed model's answer)",
        }
    return report


def evaluate_generation(adapted, base, tok, records: Sequence[PromptRecord], *, role: str = "self", profile_kwargs=None,
                        judge: Judge | None = None, cfg: GenEvalConfig | None = None, base_tok=None,
                        reference_pool: Sequence[PromptRecord] | None = None) -> dict:
    """Generate with ``adapted`` (``profile_kwargs(profiles) -> {"profile_embeds": ...}`` for
    profile-routed adapters) and ``base`` for every record, then the metrics of the module
    docstring. Returns the report (metrics + per-record outputs)."""
    from pluralign.data.loaders.blend import blend_match

    cfg = cfg or GenEvalConfig()
    records = list(records)
    if not records:
        raise PluralignError("no record to evaluate", field="data")
    ad = _generate(adapted, tok, records, cfg, role=role, profile_kwargs=profile_kwargs)
    bs = _generate(base, base_tok or tok, records, cfg, role=role)
    report: dict = {"config": asdict(cfg), "records": len(records), "role": role,
                    "empty": {"adapter": sum(1 for t in ad if not t), "base": sum(1 for t in bs if not t)}}
    rows = [{"id": r.id, "unit": r.unit, "profile": r.profile.key(), "prompt": r.prompt, "adapter": a, "base": b}
            for r, a, b in zip(records, ad, bs)]
    with_ans = [i for i, r in enumerate(records) if r.answers]
    if with_ans:
        m = {"adapter": [], "base": []}
        for i in with_ans:
            r = records[i]
            for who, txt in (("adapter", ad[i]), ("base", bs[i])):
                b, w = blend_match(txt, r.answers, r.answer_counts)
                m[who].append((b, w))
                rows[i][f"{who}_match"] = b
                rows[i][f"{who}_match_weighted"] = w
        report["blend_match"] = {
            "n": len(with_ans),
            **{f"{who}_accuracy": float(np.mean([b for b, _ in v])) for who, v in m.items()},
            **{f"{who}_weighted": float(np.mean([w for _, w in v])) for who, v in m.items()},
        }
    report["diversity"] = {"adapter": diversity(records, ad, role=role), "base": diversity(records, bs, role=role)}
    if judge is not None:
        judge.role = role
        wr, verdicts = win_rate(records, ad, bs, judge, tie_margin=cfg.tie_margin)
        report["win_rate"] = wr
        for row, v in zip(rows, verdicts):
            row["judge"] = v if v == "identical" else [None if p is None else round(float(p), 4) for p in v]
        if with_ans:
            agree = disagree = tie = 0
            for i in with_ans:
                am, bm = rows[i]["adapter_match"], rows[i]["base_match"]
                v = verdicts[i]
                if am == bm:
                    continue
                ps = [] if v == "identical" else [p for p in v if p is not None]
                if not ps:
                    tie += 1
                    continue
                p = sum(ps) / len(ps)
                if abs(p - 0.5) <= cfg.tie_margin:
                    tie += 1
                elif (p > 0.5) == (am > bm):
                    agree += 1
                else:
                    disagree += 1
            report["judge_human_agreement"] = {
                "decisive": agree + disagree + tie, "agree": agree, "disagree": disagree, "judge_tie": tie,
                "agreement": agree / (agree + disagree) if agree + disagree else None,
            }
        if isinstance(judge, LocalJudge) and judge.masses:
            report["win_rate"]["judge_mean_mass_AB"] = float(np.mean(judge.masses))
    report["outputs"] = rows
    if with_ans:
        add_references(report, records, reference_pool if reference_pool is not None else records)
    return report


__all__ = ["Judge", "LocalJudge", "HTTPJudge", "make_judge", "parse_verdict", "judge_messages", "distinct_n", "answer_entropy",
           "diversity", "prompt_group", "win_rate", "evaluate_generation", "GenEvalConfig", "other_groups_answer", "add_references"]
