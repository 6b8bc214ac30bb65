"""Training examples for conditional SFT and DPO, built to match evaluation prompts token for token.

A training row is the evaluation prompt (``persona``: the profile as system prompt + the question;
``vanilla`` when the profile prompt is off, for the ablation) followed by ONE answer label token.
The prompt is rendered with the same helpers as :mod:`pluralign.evaluation` (``persona_system``,
``render_question``, ``build_chat_prompt``) and tokenised with the same :class:`OptionScorer`
rules (BOS handling, label-token lookup, truncation), so what is trained is exactly what
``pluralign eval`` reads: the next-token distribution at the prompt's last position, restricted to
the option labels.

Targets are a distribution over the item's options: one-hot on the respondent's answer for the
individual task, the group's human answer shares for the distributional task.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from pluralign.data.profile import Profile
from pluralign.data.tasks import GroupExample, IndividualExample, SurveyDataset, mean_distributions
from pluralign.errors import PluralignError
from pluralign.evaluation.methods import persona_system, render_question
from pluralign.evaluation.scoring import OptionScorer, option_labels
from pluralign.models.chat import build_chat_prompt

IGNORE_INDEX = -100


@dataclass
class TrainRow:
    """One encoded example. ``input_ids`` = prompt tokens + the answer label token."""

    input_ids: list[int]
    option_ids: list[int]  # label token id of each option, in option order
    target: list[float]  # distribution over options (one-hot for individual answers)
    answer: int  # option index of the (majority) answer
    profile: Profile
    item_id: str
    rejected: int | None = None  # option index of the rejected answer (DPO)
    ref: tuple[float, float] | None = None  # reference log-probs of (chosen, rejected) (DPO)
    trunk: "torch.Tensor | None" = None  # cached hidden states entering the first adapted layer [T, H] (fast path)


def eval_method_for(profile_prompt: bool) -> str:
    """The evaluation method whose prompts the training rows reproduce."""
    return "persona" if profile_prompt else "vanilla"


def training_prompt(tok, ex, item, labels: Sequence[str], *, profile_prompt: bool = True, chat_template: bool = True) -> str:
    """The exact prompt ``pluralign eval --method persona|vanilla`` builds for ``ex``."""
    msgs: list[dict] = []
    if profile_prompt:
        msgs.append({"role": "system", "content": persona_system(ex.profile)})
    msgs.append({"role": "user", "content": render_question(item, labels)})
    return build_chat_prompt(tok, msgs, use_chat_template=None if chat_template else False)


def target_of(ex, n_options: int) -> tuple[list[float], int]:
    if isinstance(ex, IndividualExample):
        t = [0.0] * n_options
        t[ex.answer] = 1.0
        return t, ex.answer
    if isinstance(ex, GroupExample):
        p = np.asarray(ex.probs, dtype=float)
        if p.shape[0] != n_options or not np.isfinite(p).all() or p.min() < 0 or p.sum() <= 0:
            raise PluralignError(f"bad answer distribution for {ex.group}/{ex.item_id}", field="probs")
        p = p / p.sum()
        return p.tolist(), int(np.argmax(p))
    raise PluralignError(f"cannot train on a {type(ex).__name__}")


def check_task(ds: SurveyDataset, task: str) -> None:
    if ds.kind != task:
        other = "wvs-probe" if task == "individual" else "wvs-shares"
        raise PluralignError(
            f"task {task!r} needs {task} data but {ds.name} is {ds.kind} (try --data {other})", field="task"
        )


def encode_dataset(
    tok,
    ds: SurveyDataset,
    *,
    profile_prompt: bool = True,
    labels: str = "auto",
    chat_template: bool = True,
    max_length: int | None = None,
    dpo_reference: SurveyDataset | None = None,
) -> list[TrainRow]:
    """Encode every example of ``ds``. With ``dpo_reference`` (the training set) the rows are DPO
    pairs built against ``mean``, the mean distribution of the reference's groups per item (full
    rules and their rationale: :mod:`pluralign.training.dpo`):

    * individual rows: chosen = the respondent's answer; rejected = the mode of ``mean`` when it
      differs, else the far end of the scale (ordinal items) or the option with the lowest target
      probability, ties broken by the lowest share in ``mean`` (nominal items);
    * group rows: chosen / rejected with ``human[chosen] > human[rejected]`` maximising the gap
      ``(human - mean)[chosen] - (human - mean)[rejected]``; ``answer`` is set to chosen; rows
      without a pair of positive gap (e.g. ``human == mean``) are left out."""
    scorer = OptionScorer(None, tok, max_length=max_length)
    means = mean_distributions(dpo_reference) if dpo_reference is not None else None
    collapse = {q: int(np.argmax(p)) for q, p in means.items()} if means is not None else None
    rows: list[TrainRow] = []
    cache: dict[tuple[str, str], tuple[list[int], list[int]]] = {}
    for ex in ds.examples:
        item = ds.items[ex.item_id]
        key = (ex.item_id, ex.profile.key() if profile_prompt else "")
        if key not in cache:
            labs = option_labels(item.n_options, labels)
            prompt = training_prompt(tok, ex, item, labs, profile_prompt=profile_prompt, chat_template=chat_template)
            cache[key] = (scorer._encode_prompt(prompt), scorer.label_token_ids(prompt, labs))
        prompt_ids, option_ids = cache[key]
        target, answer = target_of(ex, item.n_options)
        rejected = None
        if collapse is not None and isinstance(ex, GroupExample):
            pair = _group_pair(np.asarray(target), means.get(ex.item_id))
            if pair is None:
                continue  # the mean-collapse error gives no preference pair for this row
            answer, rejected = pair
        elif collapse is not None:
            c = collapse.get(ex.item_id)
            if c is not None and c != answer:
                rejected = c
            elif item.ordinal:
                rejected = 0 if answer >= item.n_options / 2 else item.n_options - 1
            else:  # nominal: no "far end"; the least likely option (the least popular on ties)
                m = means.get(ex.item_id)
                rejected = min(
                    (k for k in range(item.n_options) if k != answer),
                    key=lambda k: (target[k], float(m[k]) if m is not None else 0.0, k),
                )
        rows.append(
            TrainRow(
                input_ids=list(prompt_ids) + [option_ids[answer]],
                option_ids=list(option_ids),
                target=target,
                answer=answer,
                profile=ex.profile,
                item_id=ex.item_id,
                rejected=rejected,
            )
        )
    if dpo_reference is not None and not rows:
        raise PluralignError(
            "no DPO pair could be built: every group's answer distribution agrees with the training mean "
            "(the distributional DPO stage needs several groups per question)", file=ds.source, field="stage",
        )
    return rows


def _group_pair(human: np.ndarray, mean: np.ndarray | None, eps: float = 1e-9) -> tuple[int, int] | None:
    """``(chosen, rejected)`` with ``human[chosen] > human[rejected]`` maximising the mean-collapse
    gap ``d[chosen] - d[rejected]``, ``d = human - mean``; None without a pair of positive gap."""
    if mean is None or len(mean) != len(human):
        return None
    d = human - np.asarray(mean, dtype=float)
    best, pair = eps, None
    for c in range(len(human)):
        for r in range(len(human)):
            if human[c] > human[r] + eps and d[c] - d[r] > best:
                best, pair = d[c] - d[r], (c, r)
    return pair


def subsample(rows: list, n: int | None, seed: int) -> list:
    if n is None or n >= len(rows):
        return rows
    idx = list(range(len(rows)))
    random.Random(seed).shuffle(idx)
    return [rows[i] for i in sorted(idx[:n])]


class RowDataset(torch.utils.data.Dataset):
    def __init__(self, rows: list[TrainRow]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> TrainRow:
        return self.rows[i]


class ConditionalCollator:
    """Left-pads a list of :class:`TrainRow` into a batch.

    Keys: ``input_ids``, ``attention_mask``; ``labels`` (``-100`` everywhere except the answer
    token, the last position; all ``-100`` for soft targets); ``option_ids``, ``option_mask``,
    ``target_probs`` (``[B, K]``, K = most options in the batch); ``rejected_index`` for DPO rows;
    ``profile_embeds`` (``[B, D]``) when a profile table is given (profile-routed adapters),
    looked up per row from embeddings computed once per unique profile.
    """

    def __init__(
        self, pad_token_id: int, *, hard_labels: bool, profile_table: dict[str, torch.Tensor] | None = None,
        start_layer: int | None = None,
    ):
        self.pad = int(pad_token_id)
        self.hard_labels = hard_labels
        self.profile_table = profile_table
        self.start_layer = start_layer  # rows carry cached trunk states: batches get inputs_embeds

    def __call__(self, rows: list[TrainRow]) -> dict[str, torch.Tensor]:
        B = len(rows)
        L = max(len(r.input_ids) for r in rows)
        K = max(len(r.option_ids) for r in rows)
        ids = torch.full((B, L), self.pad, dtype=torch.long)
        att = torch.zeros((B, L), dtype=torch.long)
        labels = torch.full((B, L), IGNORE_INDEX, dtype=torch.long)
        opt = torch.zeros((B, K), dtype=torch.long)
        omask = torch.zeros((B, K), dtype=torch.bool)
        tgt = torch.zeros((B, K), dtype=torch.float32)
        for b, r in enumerate(rows):
            n = len(r.input_ids)
            ids[b, L - n :] = torch.tensor(r.input_ids)
            att[b, L - n :] = 1
            if self.hard_labels:
                labels[b, L - 1] = r.input_ids[-1]
            k = len(r.option_ids)
            opt[b, :k] = torch.tensor(r.option_ids)
            opt[b, k:] = r.option_ids[0]
            omask[b, :k] = True
            tgt[b, :k] = torch.tensor(r.target, dtype=torch.float32)
        batch = {
            "input_ids": ids,
            "attention_mask": att,
            "labels": labels,
            "option_ids": opt,
            "option_mask": omask,
            "target_probs": tgt,
        }
        if rows[0].rejected is not None:
            batch["chosen_index"] = torch.tensor([r.answer for r in rows], dtype=torch.long)
            batch["rejected_index"] = torch.tensor([r.rejected for r in rows], dtype=torch.long)
        if self.profile_table is not None:
            batch["profile_embeds"] = torch.stack([self.profile_table[r.profile.key()] for r in rows])
        if self.start_layer and rows[0].trunk is not None:  # fast path: left-padded cached trunk states
            H = rows[0].trunk.shape[-1]
            emb = torch.zeros((B, L, H), dtype=rows[0].trunk.dtype)
            for b, r in enumerate(rows):
                emb[b, L - r.trunk.shape[0] :] = r.trunk
            batch["inputs_embeds"] = emb
            batch["start_layer"] = int(self.start_layer)
        return batch


def profile_table(encoder, rows: list[TrainRow]) -> dict[str, torch.Tensor]:
    """Embeddings of the unique profiles of ``rows`` (one encoder call per unique profile)."""
    uniq: dict[str, Profile] = {}
    for r in rows:
        uniq.setdefault(r.profile.key(), r.profile)
    keys = list(uniq)
    emb = encoder.encode([uniq[k] for k in keys]).detach().float().cpu()
    return {k: emb[i] for i, k in enumerate(keys)}
