"""PRISM (Kirk et al., NeurIPS 2024 Datasets & Benchmarks; ``HannahRoseKirk/prism-alignment``):
1,500 raters from 75 countries, their survey profile and their scored conversations with LLMs.

Release files (JSON Lines, one object per line), fields used here:

* ``survey.jsonl`` (one rater per line): ``user_id``, ``age`` ("25-34 years old"), ``gender``,
  ``education``, ``employment_status``, ``marital_status``, ``religion`` / ``ethnicity`` (objects
  with ``simplified``), ``location`` (object with ``reside_country``);
* ``conversations.jsonl`` (one conversation per line): ``conversation_id``, ``user_id``,
  ``conversation_type``, ``conversation_history``: a list of turns ``{turn, role ("user" |
  "model"), content, score (1-100), if_chosen, within_turn_id, model_name}``. At each turn the
  rater scored every model response (4 in the opening turn, 2 later) and continued with the
  chosen one.

What this loader builds (a :class:`~pluralign.data.preferences.PreferenceDataset`, profile role
``user``: the rater is the person the model talks to): one record per (conversation, turn) with
the conversation so far (earlier user turns and the chosen responses) and the turn's user message;
pairs from the scores: every two responses of the turn whose scores differ by at least
``min_gap`` give (higher, lower) (``kind = "lower-score"``). ``unit`` = conversation id,
``respondent`` = user id.

Dropped and counted (``meta["dropped"]``; ``strict=True`` raises the first, naming file, row and
field): conversations of a rater with no survey row, a survey row with no usable demographic,
responses without a numeric score, pairs with equal (or closer than ``min_gap``) scores, pairs
whose two responses have identical text, turns after one without a chosen response. A line that
is not JSON is always an error.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

from pluralign.data.loaders import register_preference_loader
from pluralign.data.preferences import Dropper, PreferenceDataset, PromptRecord, add_pair, clean_text, put_gender
from pluralign.data.preferences import said as _said
from pluralign.data.profile import Profile
from pluralign.errors import PluralignError

CITATION = ("Kirk, H. R. et al. (2024). The PRISM Alignment Dataset: What Participatory, Representative and "
            "Individualised Human Feedback Reveals About the Subjective and Multicultural Alignment of Large Language "
            "Models. NeurIPS Datasets and Benchmarks. huggingface.co/datasets/HannahRoseKirk/prism-alignment (CC BY-NC 4.0)")


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """``[(row, object)]`` of a JSON Lines file (blank lines skipped); a bad line is one error."""
    from pluralign.io import read_text

    path = Path(path)
    if not path.is_file():
        raise PluralignError("file not found" if not path.exists() else "is a folder, not a file", file=path)
    out = []
    for i, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise PluralignError(f"not a JSON object ({str(e).split(':')[0]})", file=path, row=i) from None
        if not isinstance(obj, dict):
            raise PluralignError("each line must be a JSON object", file=path, row=i)
        out.append((i, obj))
    if not out:
        raise PluralignError("no data rows", file=path)
    return out


def survey_profile(row: dict) -> Profile:
    """A rater's profile from their survey row (fields the rater did not give are left out)."""
    kw: dict = {}
    extra: list[tuple[str, str]] = []
    loc = row.get("location")
    country = _said(loc.get("reside_country")) if isinstance(loc, dict) else _said(loc)
    if country:
        kw["country"] = country
    age = _said(row.get("age"))
    if age:
        kw["age_band"] = age.replace(" old", "").strip()
    put_gender(kw, extra, _said(row.get("gender")))
    for src, dst in (("education", "education"), ("employment_status", "employment"), ("marital_status", "marital_status")):
        v = _said(row.get(src))
        if v:
            kw[dst] = v
    rel = _said(row.get("religion"))
    if rel:
        kw["religion"] = "no religion" if rel.lower() in ("no affiliation", "no religion", "non-religious") else rel
    eth = _said(row.get("ethnicity"))
    if eth:
        extra.append(("ethnicity", eth))
    return Profile(**kw, extra=tuple(sorted(extra)))


def _files(path: Path) -> tuple[Path, Path]:
    path = Path(path)
    if path.is_dir():
        for d in (path, path / "data"):
            if (d / "conversations.jsonl").is_file():
                return d / "survey.jsonl", d / "conversations.jsonl"
        raise PluralignError("no conversations.jsonl in this folder (the PRISM release)", file=path)
    return path.parent / "survey.jsonl", path


def _detect(path: Path) -> bool:
    try:
        p = Path(path)
        d = p if p.is_dir() else p.parent
        if not p.is_dir() and p.name != "conversations.jsonl":
            return False
        return (d / "conversations.jsonl").is_file() and (d / "survey.jsonl").is_file()
    except OSError:
        return False


def _score(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        try:
            v = float(v)
        except (TypeError, ValueError):
            return None
    return float(v) if math.isfinite(v) else None


@register_preference_loader(
    "prism", detect=_detect,
    help="PRISM (survey.jsonl + conversations.jsonl): rater profile, conversation turns, scored responses -> pairs by score",
)
def load_prism(
    path: Path | None = None,
    *,
    min_gap: float = 1.0,
    conversation_types: Sequence[str] | str | None = None,
    first_turn_only: bool = False,
    strict: bool = False,
) -> PreferenceDataset:
    """Load PRISM (see the module docstring). ``min_gap``: smallest score difference that makes a
    pair (scores are 1-100); ``conversation_types``: keep only these (``unguided``, ``values
    guided``, ``controversy guided``); ``first_turn_only``: only the opening turn (4 responses)."""
    if path is None:
        raise PluralignError("PRISM is not shipped; pass its folder, e.g. prism:/data/prism-alignment "
                             "(survey.jsonl and conversations.jsonl of HannahRoseKirk/prism-alignment)", field="data")
    if not (min_gap > 0):
        raise PluralignError(f"min_gap must be > 0, got {min_gap}", field="min_gap")
    survey_file, conv_file = _files(Path(path))
    drop = Dropper(strict)
    profiles: dict[str, Profile] = {}
    for row, obj in read_jsonl(survey_file):
        uid = obj.get("user_id")
        if uid is None or str(uid).strip() == "":
            drop("survey row without user_id", file=survey_file, row=row, field="user_id")
            continue
        try:
            prof = survey_profile(obj)
        except PluralignError as e:
            raise PluralignError(e.message, file=survey_file, row=row, field=e.field) from None
        if prof.is_empty():
            drop("survey row without any demographic", file=survey_file, row=row, field="user_id")
            continue
        profiles[str(uid)] = prof
    if isinstance(conversation_types, str):
        conversation_types = [c.strip() for c in conversation_types.split(",") if c.strip()]
    keep_types = {c.lower() for c in conversation_types} if conversation_types else None
    records: list[PromptRecord] = []
    pairs = []
    for row, conv in read_jsonl(conv_file):
        cid = str(conv.get("conversation_id") or f"row{row}")
        if keep_types is not None and str(conv.get("conversation_type", "")).lower() not in keep_types:
            continue
        uid = conv.get("user_id")
        prof = profiles.get(str(uid)) if uid is not None else None
        if prof is None:
            drop("conversation of a rater without a survey profile", file=conv_file, row=row, field="user_id",
                 detail=f"user_id {uid!r}")
            continue
        hist = conv.get("conversation_history")
        if not isinstance(hist, list) or not hist:
            drop("conversation without conversation_history", file=conv_file, row=row, field="conversation_history")
            continue
        turns: dict[int, dict] = {}
        for u in hist:
            if not isinstance(u, dict):
                raise PluralignError("conversation_history entries must be objects", file=conv_file, row=row, field="conversation_history")
            try:
                t = int(u.get("turn", 0))
            except (TypeError, ValueError):
                raise PluralignError(f"turn must be a number, got {u.get('turn')!r}", file=conv_file, row=row, field="turn") from None
            slot = turns.setdefault(t, {"user": None, "models": []})
            if u.get("role") == "user":
                slot["user"] = clean_text(u.get("content"))
            elif u.get("role") == "model":
                slot["models"].append(u)
        context: list[tuple[str, str]] = []
        for t in sorted(turns):
            slot = turns[t]
            if not slot["user"]:
                drop("turn without a user message", file=conv_file, row=row, field="conversation_history")
                break
            rec = PromptRecord(id=f"{cid}:{t}", unit=cid, profile=prof, messages=tuple(context + [("user", slot["user"])]),
                               respondent=str(uid), source_row=row)
            scored = []
            for m in slot["models"]:
                s = _score(m.get("score"))
                if s is None:
                    drop("model response without a numeric score", file=conv_file, row=row, field="score")
                    continue
                scored.append((s, clean_text(m.get("content")), bool(m.get("if_chosen"))))
            n_before = len(pairs)
            for i in range(len(scored)):
                for j in range(i + 1, len(scored)):
                    (si, ci, _), (sj, cj, _) = scored[i], scored[j]
                    if abs(si - sj) < min_gap:
                        drop(f"responses scored within min_gap={min_gap:g} (no preference)", file=conv_file, row=row, field="score")
                        continue
                    hi, lo = (ci, cj) if si > sj else (cj, ci)
                    add_pair(pairs, drop, rec, hi, lo, "lower-score", file=conv_file, row=row, field="content")
            if len(pairs) > n_before:
                records.append(rec)
            chosen = [c for _, c, ch in scored if ch and c]
            if first_turn_only:
                break
            if not chosen:
                if t != max(turns):
                    drop("turns after one without a chosen response", file=conv_file, row=row, field="if_chosen")
                break
            context += [("user", slot["user"]), ("assistant", chosen[0])]
    if not pairs:
        raise PluralignError("no usable PRISM preference pair" + (f" (dropped: {drop.counts})" if drop.counts else ""), file=conv_file)
    meta = {"citation": CITATION, "dropped": drop.counts, "raters": len(profiles), "min_gap": min_gap,
            "conversation_types": sorted(keep_types) if keep_types else None}
    return PreferenceDataset("prism", records, pairs, str(conv_file), "user", meta)


__all__ = ["load_prism", "survey_profile", "read_jsonl"]
