"""Held-out word associations that are held out for real (issue 29, part 3).

A cue-level split keeps every held-out cue out of training, but not its pairs seen from the other
side: for a held-out pair (c, r), a training cue r may have c among its responses, and a model
trained on "r -> c" has seen the association. With ``held_out_pairs = "exclude"`` (the default of
``pluralign wordassoc train``) such reversed pairs are dropped from the training data
(:func:`~pluralign.data.loaders.swow.exclude_reversed_pairs`, against the validation and test cues),
so a test pair's cue and its reversed pair are both absent from training.

The adapter records how its training data was made (:func:`training_record`, under
``training_data`` in ``pluralign_wordassoc.json``); ``pluralign wordassoc eval`` rebuilds that data
(:func:`rebuild_training`) and reports every metric also on the evaluated cues that have no reversed
pair in it (:func:`adapter_leaks`), so results of adapters trained with ``keep`` show both variants.
"""

from __future__ import annotations

from typing import Callable

from pluralign.data.loaders.swow import SwowData, exclude_reversed_pairs, reversed_pairs, sample_cues, split_cues
from pluralign.errors import PluralignError

HELD_OUT_PAIRS = ("exclude", "keep")
#: responses per training cue that the evaluation checks for an adapter without a record (the
#: defaults' deepest use: 5 ranking candidates; the 3 SFT targets are within them)
UNRECORDED_DEPTH = 5


def prepare_training(data: SwowData, *, split_seed: int, sample_seed: int, train_cues: int | None,
                     held_out_pairs: str = "exclude") -> tuple[SwowData, dict | None, object]:
    """The training cues (a seeded subset of the split's training part) and, with ``exclude``, without
    the reversed pairs of the validation and test pairs. Returns ``(train, exclusion counts or None, split)``."""
    if held_out_pairs not in HELD_OUT_PAIRS:
        raise PluralignError(f"must be exclude or keep, got {held_out_pairs!r}", field="--held-out-pairs")
    sp = split_cues(data, seed=split_seed)
    train = sample_cues(sp.train, train_cues, seed=sample_seed)
    stats = None
    if held_out_pairs == "exclude":
        train, stats = exclude_reversed_pairs(train, [sp.val, sp.test])
    return train, stats, sp


def training_record(data: SwowData, *, stage: str, split_seed: int, sample_seed: int, train_cues: int | None, min_responses: int,
                    held_out_pairs: str, depth: int | None, excluded: dict | None = None, previous: dict | None = None) -> dict:
    """What an adapter was trained on, enough to rebuild it: the split, the cue subset, whether the
    reversed pairs were excluded and how many strongest responses of a cue training showed
    (``depth``; None = all)."""
    return {"stage": stage, "data": data.source, "split_seed": split_seed, "sample_seed": sample_seed, "train_cues": train_cues,
            "min_responses": min_responses, "held_out_pairs": held_out_pairs, "depth": depth, "excluded": excluded,
            "previous": previous}


def sft_depth(*, n_targets: int, samples_per_cue: int, tasks: str, n_candidates: int) -> int:
    d = n_targets * samples_per_cue
    return max(d, n_candidates) if "ranking" in tasks else d


def rl_depth(*, reward: str, n_candidates: int) -> int | None:
    """The ranking reward shows a cue's ``n_candidates`` strongest responses; the precision reward
    scores against all of them."""
    return n_candidates if reward == "spearman" else None


def rebuild_training(data: SwowData, record: dict) -> SwowData:
    train, _, _ = prepare_training(data, split_seed=int(record["split_seed"]), sample_seed=int(record["sample_seed"]),
                                   train_cues=record.get("train_cues"), held_out_pairs=record.get("held_out_pairs", "keep"))
    return train


def adapter_leaks(data: SwowData, part: SwowData, meta: dict | None, *, split_seed: int, adapter: bool = True,
                  min_responses: int | None = None, reload: Callable[[int], SwowData] | None = None) -> tuple[dict, str]:
    """``({cue: [responses]}, description)``: the cues of ``part`` with a reversed pair in the training
    data of the adapter whose record is ``meta`` (its chain of stages: an RL adapter's SFT stage
    counts too). No adapter: nothing was trained. An adapter without a record: the whole training
    part of the split, its :data:`UNRECORDED_DEPTH` strongest responses per cue (an over-estimate).
    ``reload(min_responses)`` reads the data again where a stage was trained with another
    ``min_responses`` than ``data`` was read with (``min_responses``)."""
    if not adapter:
        return {}, "no adapter: nothing trained"
    rec = (meta or {}).get("training_data")
    if not rec:
        sp = split_cues(data, seed=split_seed)
        return (reversed_pairs(part, sp.train, depth=UNRECORDED_DEPTH),
                f"the adapter has no record of its training data: the whole training part of the split (seed {split_seed}), "
                f"{UNRECORDED_DEPTH} strongest responses per cue")
    leaks: dict[str, list[str]] = {}
    stages = []
    while rec:
        if int(rec["split_seed"]) != split_seed:
            raise PluralignError(f"the adapter's {rec.get('stage', 'training')} stage held out the cues of the split with seed "
                                 f"{rec['split_seed']}; evaluate it on that split (--split-seed {rec['split_seed']})", field="--split-seed")
        src = data
        if reload is not None and min_responses is not None and rec.get("min_responses") not in (None, min_responses):
            src = reload(int(rec["min_responses"]))
        train = rebuild_training(src, rec)
        for c, rs in reversed_pairs(part, train, depth=rec.get("depth")).items():
            leaks[c] = sorted(set(leaks.get(c, [])) | set(rs))
        kept = "excluded" if rec.get("held_out_pairs") == "exclude" else "kept"
        stages.append(f"{rec.get('stage', '?')}: {len(train)} cues, reversed pairs {kept}, {rec.get('depth') or 'all'} strongest "
                      "responses per cue")
        rec = rec.get("previous")
    return leaks, "the adapter's recorded training data (" + "; ".join(stages) + ")"


__all__ = ["HELD_OUT_PAIRS", "UNRECORDED_DEPTH", "adapter_leaks", "prepare_training", "rebuild_training", "rl_depth", "sft_depth",
           "training_record"]
