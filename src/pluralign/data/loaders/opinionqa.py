"""OpinionQA (Santurkar et al. 2023, ``tatsu-lab/opinions_qa``): Pew American Trends Panel
questions with per-group human answer distributions.

The release has one folder per survey wave (``human_resp/American_Trends_Panel_W26/`` ...) with

* ``info.csv``: ``key`` (question id, e.g. ``SAFECRIME_W26``), ``question``, ``references`` (the
  answer options as a Python list literal, refusal options last) and ``option_ordinal`` (the
  ordinal value of each non-refusal option, e.g. ``[1.0, 2.0, 3.0, 4.0]``; ``[1.0, 2.0, 1.5]``
  when the middle answer is written last);
* per-group answers, either as ``<ATTRIBUTE>_data.json`` (``{key: {"question_text": ...,
  "<group>": {option text: count, ...}}}``, as in the GitHub repository) or as the respondent
  file ``responses.csv`` with ``metadata.csv`` (the CodaLab release): answers weighted by
  ``WEIGHT_W<wave>``, groups the values of each demographic column listed in ``metadata.csv``,
  plus ``Overall``, exactly as ``helpers.extract_human_opinions`` builds them.

As in the reference code the human distribution ``D_H`` covers the ordinal options only (refusals
are dropped and the rest renormalised) and groups whose answers are all refusals are skipped.
Options are put in the order of their ordinal values (stable), so the Earth Mover's distance on
positions 0..K-1 is OpinionQA's ``W1 / max W1`` whenever the sorted ordinal values are evenly
spaced (all but a handful of items; the others are listed in ``meta['uneven_scale']``). Items
whose ordinal values are all equal (no order) are nominal. Groups are ``ATTRIBUTE:value``
(``SEX:Female``, ``POLPARTY:Democrat``, ``Overall``); their profile carries the attribute (sex,
age band, education, religion, income, region, marital status; the others as extra attributes)
and ``residence: United States``. ``NONE_data.json`` and the groups ``Refused`` are not read.
"""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from pluralign.data.items import SurveyItem
from pluralign.data.loaders import register_loader
from pluralign.data.profile import Profile
from pluralign.data.tasks import GroupExample, SurveyDataset
from pluralign.errors import PluralignError

CITATION = (
    "Santurkar, S., Durmus, E., Ladhak, F., Lee, C., Liang, P., Hashimoto, T. (2023). Whose Opinions Do "
    "Language Models Reflect? ICML 2023 (data: Pew Research Center American Trends Panel, via tatsu-lab/opinions_qa)."
)
INFO_COLUMNS = ("key", "question", "references", "option_ordinal")
#: demographic attributes of OpinionQA (helpers.DEMOGRAPHIC_ATTRIBUTES) → Profile field
PROFILE_FIELD = {"SEX": "sex", "AGE": "age_band", "EDUCATION": "education", "RELIG": "religion", "INCOME": "income",
                 "CREGION": "region", "MARITAL": "marital_status"}
DEMOGRAPHIC_ATTRIBUTES = ("CREGION", "AGE", "SEX", "EDUCATION", "CITIZEN", "MARITAL", "RELIG", "RELIGATTEND",
                          "POLPARTY", "INCOME", "POLIDEOLOGY", "RACE")
SKIP_GROUPS = {"Refused", "refused"}
RESIDENCE = ("residence", "United States")


def _literal(text, *, file: Path, row: int, field: str):
    try:
        return ast.literal_eval(str(text).strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise PluralignError(f"must be a Python literal, got {str(text)[:60]!r}", file=file, row=row, field=field) from None


def _wave_dirs(path: Path) -> list[Path]:
    if (path / "info.csv").is_file():
        return [path]
    dirs = sorted(d for d in path.iterdir() if d.is_dir() and (d / "info.csv").is_file()) if path.is_dir() else []
    return dirs


def _detect(p: Path) -> bool:
    if not p.is_dir():
        return False
    for d in _wave_dirs(p)[:1]:
        try:
            header = (d / "info.csv").open(encoding="utf-8", errors="replace").readline()
        except OSError:
            return False
        return all(c in header for c in INFO_COLUMNS)
    return False


def _read_info(d: Path):
    import pandas as pd

    f = d / "info.csv"
    try:
        df = pd.read_csv(f, dtype=str, keep_default_na=False)
    except Exception as e:  # pandas raises many types for malformed CSV
        raise PluralignError(f"cannot read the CSV ({e.__class__.__name__}: {e})", file=f) from None
    missing = [c for c in INFO_COLUMNS if c not in df.columns]
    if missing:
        raise PluralignError(f"missing column(s) {', '.join(missing)} (have: {', '.join(df.columns)})", file=f)
    out = []
    for i, r in enumerate(df.to_dict("records"), start=1):
        refs = _literal(r["references"], file=f, row=i, field="references")
        ordv = _literal(r["option_ordinal"], file=f, row=i, field="option_ordinal")
        if not isinstance(refs, (list, tuple)) or not all(isinstance(x, str) for x in refs):
            raise PluralignError("references must be a list of option texts", file=f, row=i, field="references")
        if not isinstance(ordv, (list, tuple)) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in ordv):
            raise PluralignError("option_ordinal must be a list of numbers", file=f, row=i, field="option_ordinal")
        if not 2 <= len(ordv) <= len(refs):
            raise PluralignError(f"{len(ordv)} ordinal values for {len(refs)} references (need 2 or more, at most one per option)",
                                 file=f, row=i, field="option_ordinal")
        key = r["key"].strip()
        if not key:
            raise PluralignError("empty question key", file=f, row=i, field="key")
        out.append({"key": key, "question": " ".join(r["question"].split()), "refs": [x.strip() for x in refs],
                    "ordinal": [float(x) for x in ordv], "row": i})
    return out


def _item(info: dict, wave: str) -> tuple[SurveyItem, list[int], bool]:
    """The item (ordinal options sorted by their ordinal value) and the order used."""
    ordv = info["ordinal"]
    k = len(ordv)
    order = sorted(range(k), key=lambda j: (ordv[j], j))
    vals = [ordv[j] for j in order]
    ordinal = vals[-1] > vals[0]
    steps = np.diff(vals)
    uneven = bool(ordinal and not np.allclose(steps, steps.mean()))
    item = SurveyItem(
        id=info["key"], text=info["question"], options=tuple(info["refs"][j] for j in order), ordinal=ordinal,
        codes=tuple(str(j + 1) for j in order), category=wave, source="opinionqa",
    )
    return item, order, uneven


def _group_profile(attr: str, value: str) -> Profile:
    if attr == "Overall":
        return Profile(extra=(RESIDENCE,))
    f = PROFILE_FIELD.get(attr)
    if f is not None:
        try:
            return Profile.from_dict({f: value, "extra": dict([RESIDENCE])})
        except PluralignError:
            pass  # a value the field does not accept (e.g. sex "Refused"): keep it as an extra attribute
    return Profile(extra=tuple(sorted([RESIDENCE, (attr.lower(), value)])))


def _json_groups(d: Path, attributes: set[str] | None) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """attribute → question key → group → option text → count, from ``<ATTR>_data.json``."""
    out: dict = {}
    for f in sorted(d.glob("*_data.json")):
        attr = f.name[: -len("_data.json")]
        if attr == "NONE" or (attributes is not None and attr not in attributes):
            continue
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise PluralignError(f"cannot read the JSON ({e.__class__.__name__}: {e})", file=f) from None
        if not isinstance(data, dict):
            raise PluralignError("expected an object question key → groups", file=f)
        per_q = {}
        for key, q in data.items():
            if not isinstance(q, dict):
                raise PluralignError("expected an object of groups", file=f, field=str(key))
            groups = {}
            for g, counts in q.items():
                if g in ("MC_options", "question_text") or g in SKIP_GROUPS:
                    continue
                if not isinstance(counts, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in counts.values()):
                    raise PluralignError(f"group {g!r} must map option text → count", file=f, field=str(key))
                groups[str(g)] = {str(k).strip(): float(v) for k, v in counts.items()}
            per_q[str(key)] = groups
        out[attr] = per_q
    return out


def _response_groups(d: Path, keys: Sequence[str], attributes: set[str] | None) -> dict:
    """The same from ``responses.csv`` + ``metadata.csv`` (weighted, as extract_human_opinions)."""
    import pandas as pd

    wave = d.name.split("_W")[-1]
    resp_f, md_f = d / "responses.csv", d / "metadata.csv"
    try:
        hdf = pd.read_csv(resp_f, dtype=str, keep_default_na=False)
        md = pd.read_csv(md_f, dtype=str, keep_default_na=False) if md_f.exists() else None
    except Exception as e:
        raise PluralignError(f"cannot read the CSV ({e.__class__.__name__}: {e})", file=resp_f) from None
    wkey = f"WEIGHT_W{wave}"
    if wkey not in hdf.columns:
        raise PluralignError(f"no weight column {wkey}", file=resp_f, field=wkey)
    try:
        w = hdf[wkey].replace("", "nan").astype(float).to_numpy()
    except ValueError:
        raise PluralignError("weights must be numbers", file=resp_f, field=wkey) from None
    groups_of: dict[str, list[str]] = {}
    if md is not None and {"key", "options"} <= set(md.columns):
        for i, r in enumerate(md.to_dict("records"), start=1):
            if r["key"] in DEMOGRAPHIC_ATTRIBUTES and r["key"] in hdf.columns:
                opts = _literal(r["options"], file=md_f, row=i, field="options")
                groups_of[r["key"]] = [str(o) for o in opts]
    out: dict = {}
    for attr in ["Overall", *groups_of]:
        if attributes is not None and attr not in attributes:
            continue
        per_q = {}
        for key in keys:
            if key not in hdf.columns:
                continue
            ans = hdf[key].to_numpy()
            ok = np.array([a != "" for a in ans]) & np.isfinite(w)
            vals = ["Overall"] * len(ans) if attr == "Overall" else hdf[attr].to_numpy()
            groups: dict[str, dict[str, float]] = {}
            allowed = None if attr == "Overall" else set(groups_of[attr])
            for a, g, wt, k in zip(ans, vals, w, ok):
                if not k or (allowed is not None and g not in allowed):
                    continue
                d_g = groups.setdefault(str(g), {})
                d_g[str(a).strip()] = d_g.get(str(a).strip(), 0.0) + float(wt)
            per_q[key] = groups
        out[attr] = per_q
    return out


@register_loader(
    "opinionqa", detect=_detect,
    help="OpinionQA (Pew American Trends Panel) wave folders: info.csv + <ATTR>_data.json or responses.csv",
)
def load_opinionqa(path: Path | None = None, *, attributes: Sequence[str] | str | None = None) -> SurveyDataset:
    """Read one wave folder or a folder of wave folders (``human_resp/``) as a distributional
    dataset; ``attributes`` keeps only these demographic attributes (``SEX``, ``POLPARTY``,
    ``Overall``, ...)."""
    if path is None:
        raise PluralignError("OpinionQA is not shipped; pass its human_resp folder (or one wave folder), e.g. opinionqa:/data/opinions_qa/human_resp")
    path = Path(path)
    if not path.exists():
        raise PluralignError("no such folder", file=path)
    waves = _wave_dirs(path)
    if not waves:
        raise PluralignError("no info.csv here or in a sub-folder (expected an OpinionQA wave folder such as American_Trends_Panel_W26)", file=path)
    if isinstance(attributes, str):
        attributes = attributes.split(",")
    keep = {a.strip() for a in attributes if a.strip()} if attributes else None
    items: dict[str, SurveyItem] = {}
    examples: list[GroupExample] = []
    uneven: list[str] = []
    for d in waves:
        infos = _read_info(d)
        wave = d.name
        weighted = False
        if list(d.glob("*_data.json")):
            data = _json_groups(d, keep)
        elif (d / "responses.csv").is_file():
            data = _response_groups(d, [i["key"] for i in infos], keep)
            weighted = True
        else:
            raise PluralignError("no <ATTRIBUTE>_data.json and no responses.csv: no human answers", file=d)
        for info in infos:
            if info["key"] in items:
                raise PluralignError(f"question key {info['key']!r} appears twice", file=d / "info.csv", row=info["row"], field="key")
            item, order, is_uneven = _item(info, wave)
            used = False
            for attr, per_q in data.items():
                for g, counts in (per_q.get(info["key"]) or {}).items():
                    raw = np.array([counts.get(info["refs"][j], 0.0) for j in order], dtype=float)
                    if not np.all(np.isfinite(raw)) or raw.min() < 0:
                        raise PluralignError(f"negative or non-finite count for group {g!r}", file=d, field=info["key"])
                    if raw.sum() <= 0 or not math.isfinite(raw.sum()):
                        continue  # only refusals (OpinionQA skips these)
                    gid = "Overall" if attr == "Overall" else f"{attr}:{g}"
                    whole = not weighted and all(float(v).is_integer() for v in counts.values())  # counts, not weights
                    examples.append(GroupExample(
                        group_id=gid, profile=_group_profile(attr, g), item_id=item.id, probs=tuple(float(x) for x in raw / raw.sum()),
                        n=int(sum(counts.values())) if whole else None,
                    ))
                    used = True
            if used:
                items[item.id] = item
                if is_uneven:
                    uneven.append(item.id)
    if not examples:
        raise PluralignError("no (group, question) distributions" + (f" for attribute(s) {', '.join(sorted(keep))}" if keep else ""), file=path)
    meta = {"citation": CITATION, "waves": [d.name for d in waves]}
    if uneven:
        meta["uneven_scale"] = uneven
    return SurveyDataset(name="opinionqa", kind="distributional", items=items, examples=examples, source=str(path), meta=meta)
