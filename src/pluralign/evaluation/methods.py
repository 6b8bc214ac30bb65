"""Inference-time prompting methods, behind a registry (adding one is one decorated class).

* ``vanilla``: the question and its numbered options, nothing about who answers;
* ``persona``: the profile's linearisation as the system prompt;
* ``fewshot``: k demonstrations (earlier chat turns) from *training* examples of the same group:
  for respondents, other respondents of the same country on the same question first (nearest
  profile first), then the same country's answers to other questions; for group distributions, the
  group's majority answers to other training questions.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Sequence

import numpy as np

from pluralign.data.items import SurveyItem
from pluralign.data.profile import PROFILE_FIELDS, Profile
from pluralign.data.tasks import Example, GroupExample, IndividualExample, SurveyDataset
from pluralign.errors import PluralignError
from pluralign.registry import Registry

INSTRUCTION = "Answer with the {kind} of one option only."


def render_question(item: SurveyItem, labels: Sequence[str]) -> str:
    """The user turn: question, numbered options, answer instruction."""
    lines = [item.text.strip(), "", "Options:"]
    for lab, opt in zip(labels, item.options):
        lines.append(f"{lab}. {opt}" if opt != lab else lab)
    kind = "number" if labels[0].isdigit() else "letter"
    lines += ["", INSTRUCTION.format(kind=kind)]
    return "\n".join(lines)


def persona_system(profile: Profile) -> str:
    d = profile.describe()
    return (
        "You are taking part in a survey. Answer every question as the following person would, "
        f"according to their own views: {d[0].lower() + d[1:]}"
    )


class PromptMethod:
    """Builds chat messages for one (example, item). ``fit`` sees the training set (if any)."""

    name = "base"
    uses_profile = False

    def fit(self, train: SurveyDataset | None) -> "PromptMethod":
        return self

    def messages(self, ex: Example, item: SurveyItem, labels: Sequence[str]) -> list[dict]:
        raise NotImplementedError

    def cache_key(self, ex: Example) -> str:
        """Examples with equal keys (and item) get the same prompt (scored once)."""
        return ex.profile.key() if self.uses_profile else ""


METHODS: Registry[type[PromptMethod]] = Registry("method", field="method")


def register_method(cls: type[PromptMethod]) -> type[PromptMethod]:
    """Class decorator: register a :class:`PromptMethod` under its ``name``."""
    return METHODS.add(cls.name, cls)


def get_method(name: str, **kwargs) -> PromptMethod:
    return METHODS.get(name)(**kwargs)


@register_method
class Vanilla(PromptMethod):
    name = "vanilla"

    def messages(self, ex, item, labels):
        return [{"role": "user", "content": render_question(item, labels)}]


@register_method
class Persona(PromptMethod):
    name = "persona"
    uses_profile = True

    def messages(self, ex, item, labels):
        return [
            {"role": "system", "content": persona_system(ex.profile)},
            {"role": "user", "content": render_question(item, labels)},
        ]


@register_method
class FewShot(PromptMethod):
    name = "fewshot"
    uses_profile = True

    def __init__(self, k: int = 3, seed: int = 0, persona: bool = True, labels_for=None):
        self.k = k
        self.seed = seed
        self.persona = persona
        self._by_group: dict[str, list[Example]] = defaultdict(list)
        self._items: dict[str, SurveyItem] = {}
        self._labels_for = labels_for  # item → labels; set by the runner

    def fit(self, train):
        if train is None or not len(train):
            raise PluralignError("fewshot needs training examples (a split with a non-empty train part)", field="method")
        self._items = dict(train.items)
        for e in train.examples:
            self._by_group[e.group].append(e)
        return self

    def cache_key(self, ex):
        rid = getattr(ex, "respondent_id", "")
        return f"{ex.profile.key()}#{rid}"

    def _demos(self, ex: Example) -> list[Example]:
        rid = getattr(ex, "respondent_id", None)
        # never the scored row's own answer: not the same respondent, and for group data not the same (group, item) cell
        pool = [d for d in self._by_group.get(ex.group, [])
                if (getattr(d, "respondent_id", None) != rid if rid is not None else d.item_id != ex.item_id)]
        if not pool:
            raise PluralignError(
                f"fewshot: no training examples for group {ex.group!r}; split by respondent or question, not by country",
                field="method",
            )
        rng = random.Random(f"{self.seed}|{ex.group}|{ex.item_id}|{getattr(ex, 'respondent_id', '')}")
        same_q = [d for d in pool if d.item_id == ex.item_id]
        other = [d for d in pool if d.item_id != ex.item_id]
        rng.shuffle(same_q)
        rng.shuffle(other)
        same_q.sort(key=lambda d: -_similarity(d.profile, ex.profile))
        return (same_q + other)[: self.k]

    def messages(self, ex, item, labels):
        msgs: list[dict] = []
        if self.persona:
            msgs.append({"role": "system", "content": persona_system(ex.profile)})
        for d in self._demos(ex):
            ditem = self._items[d.item_id]
            dl = self._labels_for(ditem) if self._labels_for else [str(i + 1) for i in range(ditem.n_options)]
            ans = d.answer if isinstance(d, IndividualExample) else int(np.argmax(d.probs))
            msgs.append({"role": "user", "content": render_question(ditem, dl)})
            msgs.append({"role": "assistant", "content": dl[ans]})
        msgs.append({"role": "user", "content": render_question(item, labels)})
        return msgs


def _similarity(a: Profile, b: Profile) -> int:
    return sum(getattr(a, f) is not None and getattr(a, f) == getattr(b, f) for f in PROFILE_FIELDS)


__all__ = ["METHODS", "PromptMethod", "get_method", "register_method", "render_question", "persona_system", "GroupExample"]
