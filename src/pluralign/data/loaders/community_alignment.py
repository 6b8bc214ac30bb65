"""Community Alignment (Meta, ``facebook/community-alignment-dataset``): multi-turn conversations
where an annotator picked the preferred of several candidate responses, with the annotator's
demographics.

Release format: ``community_alignment.csv`` (also distributed as Parquet / JSON Lines), one row
per conversation, columns used here:

* ``conversation_id``, ``annotator_id``, ``assigned_lang``;
* demographics ``annotator_age`` ("18-34", ...), ``annotator_gender``, ``annotator_education_level``,
  ``annotator_political``, ``annotator_ethnicity``, ``annotator_country``;
* per turn ``T`` in first, second, third, fourth: ``T_turn_prompt``, candidates
  ``T_turn_response_a`` .. ``T_turn_response_d`` (later turns may have fewer), and
  ``T_turn_preferred_response`` naming the preferred one (``response_b``; ``b`` / ``B`` accepted).

What this loader builds (profile role ``user``: the annotator is the person talked to): one
record per (conversation, turn) with the conversation so far (earlier prompts and preferred
responses) and the turn's prompt; pairs: the preferred response over each other non-empty
candidate (``kind = "not-preferred"``). ``unit`` = conversation id, ``respondent`` = annotator id.
``<|end_of_text|>`` markers left in some responses are removed.

Dropped and counted (``meta["dropped"]``; ``strict=True`` raises the first, naming file, row and
field): rows without any annotator demographic, turns whose preferred response is missing,
unknown or empty (and the turns after them), candidates identical to the preferred one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from pluralign.data.loaders import register_preference_loader
from pluralign.data.preferences import Dropper, PreferenceDataset, PromptRecord, add_pair, clean_text, put_gender
from pluralign.data.preferences import said as _said
from pluralign.data.profile import Profile
from pluralign.errors import PluralignError

CITATION = ("Meta FAIR (2025). Community Alignment dataset. huggingface.co/datasets/facebook/community-alignment-dataset; "
            "Zhang, L. H. et al. (2025). Cultivating Pluralism in Algorithmic Monoculture: The Community Alignment Dataset")
TURNS = ("first", "second", "third", "fourth")
SLOTS = ("a", "b", "c", "d")
RELEASE_NAMES = ("community_alignment.csv", "community_alignment.jsonl", "community_alignment.parquet")
def annotator_profile(row: dict) -> Profile:
    from pluralign.data.countries import to_iso3, country_name

    kw: dict = {}
    extra: list[tuple[str, str]] = []
    c = _said(row.get("annotator_country"))
    if c:
        kw["country"] = country_name(c) if to_iso3(c) else c.title() if c.islower() else c
    a = _said(row.get("annotator_age"))
    if a:
        kw["age_band"] = a if "year" in a else f"{a} years"
    put_gender(kw, extra, _said(row.get("annotator_gender")))
    e = _said(row.get("annotator_education_level"))
    if e:
        kw["education"] = e
    for col, name in (("annotator_political", "political"), ("annotator_ethnicity", "ethnicity")):
        v = _said(row.get(col))
        if v:
            extra.append((name, v))
    return Profile(**kw, extra=tuple(sorted(extra)))


def _release_file(path: Path) -> Path:
    path = Path(path)
    if path.is_dir():
        for n in RELEASE_NAMES:
            if (path / n).is_file():
                return path / n
        raise PluralignError(f"no {' / '.join(RELEASE_NAMES)} in this folder", file=path)
    return path


def _rows(path: Path) -> list[tuple[int, dict]]:
    suf = path.suffix.lower()
    if suf in (".jsonl", ".json"):
        from pluralign.data.loaders.prism import read_jsonl

        rows = read_jsonl(path)
    elif suf == ".parquet":
        import pandas as pd

        try:
            df = pd.read_parquet(path)
        except (ImportError, ValueError, OSError) as e:
            raise PluralignError(f"cannot read Parquet ({type(e).__name__}: {str(e).splitlines()[0][:120]})", file=path) from None
        rows = list(enumerate(df.to_dict("records"), start=1))
    else:
        from pluralign.data.loaders._tabular import read_table

        df = read_table(path, ["first_turn_prompt"], sep=",")
        rows = list(enumerate(df.to_dict("records"), start=1))
    if rows and "first_turn_prompt" not in rows[0][1]:
        raise PluralignError("missing column first_turn_prompt (not the Community Alignment release?)", file=path, field="first_turn_prompt")
    return rows


def _detect(path: Path) -> bool:
    try:
        p = Path(path)
        if p.is_dir():
            return any((p / n).is_file() for n in RELEASE_NAMES)
        if p.suffix.lower() == ".csv":
            with open(p, encoding="utf-8-sig", errors="replace") as fh:
                head = fh.readline()
            return "first_turn_prompt" in head and "preferred_response" in head
        return p.name in RELEASE_NAMES
    except OSError:
        return False


def _slot(v) -> str | None:
    s = _said(v)
    if s is None:
        return None
    s = s.lower().removeprefix("response_").strip()
    return s if s in SLOTS else None


@register_preference_loader(
    "community-alignment", detect=_detect,
    help="Community Alignment (community_alignment.csv): prompt, candidate responses, the annotator's preferred one, "
    "annotator demographics -> pairs",
)
def load_community_alignment(
    path: Path | None = None,
    *,
    languages: Sequence[str] | str | None = None,
    first_turn_only: bool = False,
    strict: bool = False,
) -> PreferenceDataset:
    """Load Community Alignment (see the module docstring). ``languages``: keep rows whose
    ``assigned_lang`` is one of these (e.g. ``en``); ``first_turn_only``: only the first turn."""
    if path is None:
        raise PluralignError("Community Alignment is not shipped; pass community-alignment:/data/community_alignment.csv", field="data")
    f = _release_file(Path(path))
    if isinstance(languages, str):
        languages = [x.strip() for x in languages.split(",") if x.strip()]
    langs = {x.lower() for x in languages} if languages else None
    drop = Dropper(strict)
    records: list[PromptRecord] = []
    pairs = []
    for row, r in _rows(f):
        if langs is not None and str(r.get("assigned_lang", "")).lower() not in langs:
            continue
        cid = str(_said(r.get("conversation_id")) or f"row{row}")
        try:
            prof = annotator_profile(r)
        except PluralignError as e:
            raise PluralignError(e.message, file=f, row=row, field=e.field) from None
        if prof.is_empty():
            drop("row without annotator demographics", file=f, row=row, field="annotator_country")
            continue
        context: list[tuple[str, str]] = []
        for k, t in enumerate(TURNS):
            prompt = clean_text(r.get(f"{t}_turn_prompt"))
            if not prompt:
                break
            cands = {s: clean_text(r.get(f"{t}_turn_response_{s}")) for s in SLOTS}
            pref = _slot(r.get(f"{t}_turn_preferred_response"))
            if pref is None or not cands.get(pref):
                drop("turn without a usable preferred response", file=f, row=row, field=f"{t}_turn_preferred_response")
                break
            rec = PromptRecord(id=f"{cid}:{k}", unit=cid, profile=prof, messages=tuple(context + [("user", prompt)]),
                               respondent=_said(r.get("annotator_id")), source_row=row)
            n = len(pairs)
            for s, text in cands.items():
                if s != pref and text:
                    add_pair(pairs, drop, rec, cands[pref], text, "not-preferred", file=f, row=row, field=f"{t}_turn_response_{s}")
            if len(pairs) > n:
                records.append(rec)
            if first_turn_only:
                break
            context += [("user", prompt), ("assistant", cands[pref])]
    if not pairs:
        raise PluralignError("no usable Community Alignment preference pair" + (f" (dropped: {drop.counts})" if drop.counts else ""), file=f)
    meta = {"citation": CITATION, "dropped": drop.counts, "languages": sorted(langs) if langs else None}
    return PreferenceDataset("community-alignment", records, pairs, str(f), "user", meta)


__all__ = ["load_community_alignment", "annotator_profile"]
