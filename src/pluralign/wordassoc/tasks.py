"""The two word-association tasks, their prompts (per language) and the output parser.

* **generation**: "cue" → the words that come to mind, most common first. A training sample holds
  ``n_targets`` (default 3, as in ALIGN) human responses ordered by strength; ``samples_per_cue`` > 1
  adds the next strength-ordered groups of responses as further samples of the same cue.
* **ranking**: "cue" + candidate responses (in a seeded random order) → the candidates ranked from the
  most to the least common human response. The score / RL reward is Spearman's ρ between the
  model's order and the human strengths (:mod:`pluralign.wordassoc.metrics`).

A prompt template is registered per language (:data:`TEMPLATES`); adding a language is one
:func:`register_template` call. The template language must match the data language
(:func:`pluralign.data.loaders.swow.check_language`).
"""

from __future__ import annotations

import random
import re
import unicodedata
from dataclasses import dataclass
from typing import Sequence

from pluralign.data.loaders.swow import SwowData
from pluralign.errors import PluralignError
from pluralign.registry import Registry


@dataclass(frozen=True)
class Template:
    language: str
    system: str
    generation: str  # format fields: cue, n
    ranking: str  # format fields: cue, candidates
    separator: str  # between words in a target / a ranked list


TEMPLATES: Registry[Template] = Registry("prompt template", field="language")


def register_template(t: Template) -> Template:
    return TEMPLATES.add(t.language, t)


register_template(Template(
    language="en",
    system="You are a native speaker of English taking part in a word association study.",
    generation=(
        'Cue word: "{cue}"\nWrite the first {n} words that come to mind when you read the cue word, '
        "most common first, separated by commas. Reply with the words only."
    ),
    ranking=(
        'Cue word: "{cue}"\nCandidate associations: {candidates}\n'
        "Rank all the candidates from the one most people would say first to the one fewest people would say, "
        "separated by commas. Reply with the ranked words only."
    ),
    separator=", ",
))
register_template(Template(
    language="zh",
    system="你是一名以汉语为母语的参与者，正在参加一项词语联想研究。",
    generation="提示词：“{cue}”\n请写出你看到提示词后最先想到的{n}个词，最常见的在前，用逗号分隔。只回答这些词。",
    ranking="提示词：“{cue}”\n候选联想词：{candidates}\n请把所有候选词按说出它的人数从多到少排序，用逗号分隔。只回答排序后的词。",
    separator="，",
))


def get_template(language: str) -> Template:
    if language not in TEMPLATES:
        raise PluralignError(f"no prompt template for language {language!r} (have: {', '.join(sorted(TEMPLATES))})", field="language")
    return TEMPLATES[language]


# ------------------------------------------------------------------------------------------ prompts
def generation_messages(cue: str, n: int, language: str = "en") -> list[dict]:
    t = get_template(language)
    return [{"role": "system", "content": t.system}, {"role": "user", "content": t.generation.format(cue=cue, n=n)}]


def ranking_messages(cue: str, candidates: Sequence[str], language: str = "en") -> list[dict]:
    t = get_template(language)
    cands = t.separator.join(candidates)
    return [{"role": "system", "content": t.system}, {"role": "user", "content": t.ranking.format(cue=cue, candidates=cands)}]


def generation_examples(data: SwowData, *, n_targets: int = 3, samples_per_cue: int = 1) -> list[dict]:
    """Prompt-completion records for SFT (TRL's conversational prompt/completion format): the
    completion lists ``n_targets`` responses ordered by human strength."""
    if n_targets < 1 or samples_per_cue < 1:
        raise PluralignError("n_targets and samples_per_cue must be >= 1", field="n_targets")
    t = get_template(data.language)
    out = []
    for cue, assoc in data.cues.items():
        for s in range(samples_per_cue):
            group = assoc[s * n_targets:(s + 1) * n_targets]
            if len(group) < n_targets:
                break
            out.append({
                "prompt": generation_messages(cue, n_targets, data.language),
                "completion": [{"role": "assistant", "content": t.separator.join(a.response for a in group)}],
                "cue": cue,
            })
    if not out:
        raise PluralignError(f"no cue has {n_targets} responses", file=data.source, field="n_targets")
    return out


def ranking_examples(data: SwowData, *, n_candidates: int = 5, seed: int = 0) -> list[dict]:
    """Ranking records: the cue's ``n_candidates`` strongest responses, shuffled (seeded per cue).
    ``strengths`` are aligned with ``candidates``; ``target`` is the human order (for SFT/inspection).
    Cues with fewer responses are skipped."""
    if n_candidates < 2:
        raise PluralignError("ranking needs at least 2 candidates", field="n_candidates")
    t = get_template(data.language)
    out = []
    for cue, assoc in data.cues.items():
        if len(assoc) < n_candidates:
            continue
        top = assoc[:n_candidates]
        order = list(range(n_candidates))
        random.Random(f"{seed}|{cue}").shuffle(order)
        cands = [top[i].response for i in order]
        out.append({
            "prompt": ranking_messages(cue, cands, data.language),
            "cue": cue,
            "candidates": cands,
            "strengths": [top[i].strength for i in order],
            "target": t.separator.join(a.response for a in top),
        })
    if not out:
        raise PluralignError(f"no cue has {n_candidates} responses for the ranking task", file=data.source, field="n_candidates")
    return out


# ------------------------------------------------------------------------------------------ parsing
_SPLIT = re.compile(r"[,;\n，、；|/]+")
_NUMBERING = re.compile(r"^\s*(?:\d+[.)\]:-]|[-*•·]|\(\d+\))\s*")


def normalise(word: str) -> str:
    """Matching key of a response: NFKC, lower case, outer punctuation and quotes stripped, inner
    white space collapsed (so ``"Animal."`` and ``animal`` match)."""
    w = unicodedata.normalize("NFKC", word).strip().lower()
    w = _NUMBERING.sub("", w)
    w = w.strip(" \t\"'`“”‘’«».。!！?？:：()[]{}<>*_")
    return " ".join(w.split())


def parse_associations(text: str, *, max_words: int = 4) -> list[str]:
    """Split a model reply into normalised, de-duplicated associations (in order). Pieces longer
    than ``max_words`` words (sentences, not associations) are dropped."""
    out: list[str] = []
    seen = set()
    for piece in _SPLIT.split(text):
        w = normalise(piece)
        if not w or len(w.split()) > max_words or w in seen:
            continue
        seen.add(w)
        out.append(w)
    return out


__all__ = [
    "Template", "TEMPLATES", "register_template", "get_template", "generation_messages", "ranking_messages",
    "generation_examples", "ranking_examples", "normalise", "parse_associations",
]
