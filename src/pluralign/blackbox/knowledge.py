"""A cultural-knowledge multiple-choice check built from BLEnD (Myung et al., 2024).

BLEnD asks the same everyday-culture questions ("What is the most popular fruit in X?") in many
regions, with the answers of about five native annotators each. A multiple-choice item for region R
and question q: the correct option is R's most frequent answer (it must be given by at least
``min_votes`` annotators and strictly more often than R's second answer); the distractors are
other regions' most frequent answers to q that no annotator of R gave. Options are shuffled with a
seed; the model's choice is read with :class:`~pluralign.evaluation.scoring.OptionScorer` (letter
labels, next-token). This answers whether aligning values (VSM) transfers to knowledge, as the
soft-prompt paper did with CulturalBench.

:class:`KnowledgeEvaluator` scores the same questions for a whole population of soft prompts in
batched forward passes (the engine of :mod:`~pluralign.blackbox.population`): the second objective
of the NSGA-II search.

The data is read from ``<shared data>/blend_cultural_knowledge/annotations`` (not shipped).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pluralign.data.countries import to_iso3
from pluralign.data.items import SurveyItem
from pluralign.errors import PluralignError

#: ISO3 (or Hofstede code) → BLEnD region. IND → Assam (a state of India) and SAU/ARA → Algeria
#: (an Arab country) are substitutes: BLEnD's copy here has no all-India or Saudi region.
BLEND_REGIONS = {
    "USA": "US", "GBR": "UK", "CHN": "China", "IND": "Assam", "SAU": "Algeria", "ARA": "Algeria", "DZA": "Algeria",
    "IDN": "Indonesia", "IRN": "Iran", "MEX": "Mexico", "KOR": "South_Korea", "PRK": "North_Korea", "ESP": "Spain",
    "ETH": "Ethiopia",
}


@dataclass(frozen=True)
class KnowledgeItem:
    qid: str
    region: str
    question: str
    options: tuple[str, ...]
    answer: int  # index of the correct option


def blend_dir() -> Path:
    from pluralign.paths import shared_data_dir

    d = shared_data_dir()
    p = (d / "blend_cultural_knowledge" / "annotations") if d else None
    if p is None or not p.is_dir():
        raise PluralignError("BLEnD annotations not found (expected <shared data>/blend_cultural_knowledge/annotations; set PLURALIGN_DATA)",
                             file=str(p) if p else None)
    return p


def blend_region(country: str) -> str:
    c = country.strip()
    key = c.upper() if c.upper() in BLEND_REGIONS else to_iso3(c)
    if key in BLEND_REGIONS:
        return BLEND_REGIONS[key]
    raise PluralignError(f"no BLEnD region for {country!r} (known: {', '.join(sorted(BLEND_REGIONS))})", field="country")


def _top(entry: dict) -> tuple[str, int, int, set[str]]:
    ann = sorted(entry.get("annotations", []), key=lambda a: -int(a.get("count", 0)))
    allans = {s.strip().lower() for a in ann for s in (a.get("en_answers") or [])}
    if not ann or not ann[0].get("en_answers"):
        return "", 0, 0, allans
    second = int(ann[1]["count"]) if len(ann) > 1 else 0
    return ann[0]["en_answers"][0].strip(), int(ann[0]["count"]), second, allans


def build_knowledge_set(region: str, *, n: int = 100, n_options: int = 4, seed: int = 0, min_votes: int = 2,
                        root: Path | None = None) -> list[KnowledgeItem]:
    root = root or blend_dir()
    files = {p.name.removesuffix("_data.json"): p for p in sorted(root.glob("*_data.json"))}
    if region not in files:
        raise PluralignError(f"BLEnD region {region!r} not in {root} (have: {', '.join(files)})", field="region")

    def load(p: Path) -> dict:
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise PluralignError(f"invalid JSON ({e.msg})", file=p, row=e.lineno) from None

    data = {r: load(p) for r, p in files.items()}
    mine = data[region]
    rng = random.Random(f"{seed}|{region}")
    items = []
    for qid in sorted(mine):
        ans, c1, c2, allans = _top(mine[qid])
        if not ans or c1 < min_votes or c1 <= c2:
            continue
        distract, seen = [], {ans.lower()}
        for r in sorted(data):
            if r == region or qid not in data[r]:
                continue
            o, oc, _, _ = _top(data[r][qid])
            if o and oc >= 1 and o.lower() not in allans and o.lower() not in seen:
                seen.add(o.lower())
                distract.append(o)
        if len(distract) < n_options - 1:
            continue
        opts = [ans] + rng.sample(distract, n_options - 1)
        perm = list(range(n_options))
        rng.shuffle(perm)
        q = mine[qid].get("en_question") or mine[qid].get("question")
        items.append(KnowledgeItem(qid=qid, region=region, question=q.strip(), options=tuple(opts[i] for i in perm), answer=perm.index(0)))
    rng.shuffle(items)
    return items[:n]


def knowledge_prompts(tok, items: list[KnowledgeItem], *, chat_template: bool | None = None,
                      system: str | None = None) -> tuple[list[str], list[list[str]]]:
    """The multiple-choice prompts of ``items`` and their letter labels (as :func:`knowledge_accuracy` scores them)."""
    from pluralign.evaluation.methods import render_question
    from pluralign.evaluation.scoring import letter_labels
    from pluralign.models.chat import build_chat_prompt

    prompts, labels = [], []
    for it in items:
        labs = letter_labels(len(it.options))
        si = SurveyItem(id=it.qid, text=it.question, options=it.options, ordinal=False)
        msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": render_question(si, labs)}]
        prompts.append(build_chat_prompt(tok, msgs, use_chat_template=chat_template))
        labels.append(labs)
    return prompts, labels


class KnowledgeEvaluator:
    """BLEnD accuracy of every candidate soft prompt of a population, the questions batched with the
    population (shared prefix and stems run once per candidate, as for the VSM items)."""

    def __init__(self, model, tok, items: list[KnowledgeItem], *, cfg=None, chat_template: bool | None = None) -> None:
        from pluralign.blackbox.population import PopulationConfig, PromptPopulation
        from pluralign.evaluation.scoring import OptionScorer

        if not items:
            raise PluralignError("no knowledge items to score", field="knowledge")
        if len({len(it.options) for it in items}) != 1:
            raise PluralignError("every knowledge question needs the same number of options", field="knowledge")
        prompts, labels = knowledge_prompts(tok, items, chat_template=chat_template)
        scorer = OptionScorer(model, tok)
        seqs = [scorer._encode_prompt(p) for p in prompts]
        label_ids = [scorer.label_token_ids(p, labs) for p, labs in zip(prompts, labels)]
        self.items = list(items)
        self.gold = np.array([it.answer for it in items])
        self.engine = PromptPopulation(model, seqs, label_ids, cfg=cfg or PopulationConfig())
        self.region = items[0].region

    @property
    def n(self) -> int:
        return len(self.items)

    @property
    def chance(self) -> float:
        return 1.0 / len(self.items[0].options)

    def evaluate(self, X) -> dict:
        """``accuracy[P]``, ``mass[P]`` (mean probability on the option letters) and ``correct[P, n]``."""
        lp = self.engine._memo_logprobs(X).double().numpy()  # [P, n, K]
        pred = lp.argmax(-1)
        correct = pred == self.gold[None]
        return {"accuracy": correct.mean(1), "mass": np.exp(lp).sum(-1).mean(1), "correct": correct}

    def accuracy(self, X) -> np.ndarray:
        return self.evaluate(X)["accuracy"]


def knowledge_accuracy(model, tok, items: list[KnowledgeItem], *, batch_size: int = 16, chat_template: bool | None = None,
                       system: str | None = None) -> dict:
    """Accuracy (and mean option mass) of ``model`` on the multiple-choice items."""
    from pluralign.evaluation.scoring import OptionScorer

    if not items:
        raise PluralignError("no knowledge items to score", field="knowledge")
    prompts, labels = knowledge_prompts(tok, items, chat_template=chat_template, system=system)
    scores = OptionScorer(model, tok, batch_size=batch_size).next_token(prompts, labels)
    pred = np.array([int(np.argmax(s.probs)) for s in scores])
    gold = np.array([it.answer for it in items])
    return {"n": len(items), "accuracy": float((pred == gold).mean()), "chance": 1.0 / len(items[0].options),
            "mass": float(np.mean([s.mass for s in scores])), "region": items[0].region}


__all__ = ["BLEND_REGIONS", "KnowledgeEvaluator", "KnowledgeItem", "blend_region", "build_knowledge_set", "knowledge_accuracy",
           "knowledge_prompts"]
