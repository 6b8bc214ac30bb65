"""The prompts of a test set and the :class:`Predictions` a read-out returns.

Shared by the runner's log-prob read-out (:func:`pluralign.evaluation.runner.predict`) and the
generating read-outs (:mod:`pluralign.evaluation.readouts`), so both ask the same prompts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pluralign.data.profile import Profile
from pluralign.data.tasks import SurveyDataset
from pluralign.evaluation.methods import FewShot, get_method
from pluralign.evaluation.scoring import option_labels
from pluralign.models.chat import build_chat_prompt


@dataclass
class Predictions:
    probs: list[np.ndarray]
    mass: list[float]
    seconds: float = 0.0
    n_prompts: int = 0
    extra: dict = field(default_factory=dict)


def build_prompts(tok, test: SurveyDataset, cfg, train: SurveyDataset | None = None, *, transform=None):
    """Unique prompts for ``test`` under ``cfg`` (an :class:`~pluralign.evaluation.runner.EvalConfig`);
    returns (prompts, labels, options, profiles, index per example).
    ``transform(messages, labels) -> messages`` rewrites each prompt's messages (e.g. the verbalized
    read-out's JSON request)."""
    labels_for = lambda item: option_labels(item.n_options, cfg.labels)  # noqa: E731
    kwargs = {"k": cfg.k_shot, "seed": cfg.seed, "labels_for": labels_for} if cfg.method == "fewshot" else {}
    method = get_method(cfg.method, **kwargs)
    if isinstance(method, FewShot):
        method.fit(train)
    prompts: list[str] = []
    labels: list[list[str]] = []
    options: list[list[str]] = []
    profiles: list[Profile] = []
    index: list[int] = []
    seen: dict[tuple[str, str], int] = {}
    for e in test.examples:
        item = test.items[e.item_id]
        key = (e.item_id, method.cache_key(e))
        if key not in seen:
            labs = labels_for(item)
            msgs = method.messages(e, item, labs)
            if transform is not None:
                msgs = transform(msgs, labs)
            prompts.append(build_chat_prompt(tok, msgs, use_chat_template=cfg.chat_template))
            labels.append(labs)
            options.append(list(item.options))
            profiles.append(e.profile)
            seen[key] = len(prompts) - 1
        index.append(seen[key])
    return prompts, labels, options, profiles, index


def expand_by_profile(test, prompts, labels, options, index):
    """The prompts again with one row per (prompt, profile): a profile-conditioned model scores each
    profile's rows even when the text is identical."""
    new_p, new_l, new_o, new_prof, new_idx = [], [], [], [], []
    seen: dict[tuple[int, str], int] = {}
    for e, i in zip(test.examples, index):
        key = (i, e.profile.key())
        if key not in seen:
            new_p.append(prompts[i])
            new_l.append(labels[i])
            new_o.append(options[i])
            new_prof.append(e.profile)
            seen[key] = len(new_p) - 1
        new_idx.append(seen[key])
    return new_p, new_l, new_o, new_prof, new_idx


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar over ``total`` prompts, or None when not ``enabled``."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    # loglik scoring advances by fractions of a prompt (one option row at a time): show whole prompts
    fmt = "{l_bar}{bar}| {n:.0f}/{total_fmt} prompts [{elapsed}<{remaining}, {rate_fmt}]"
    return tqdm(total=total, desc=f"scoring [{desc}]", unit="prompt", leave=False, bar_format=fmt)
