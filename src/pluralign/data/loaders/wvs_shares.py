"""Per-country WVS answer shares (distributional task).

Two formats:

* the CultureSPA release: a folder (or its ``proportions_group_by_country.json``) with
  ``{ISO3: {Qid: {code: share}}}`` beside ``wvs_questions.json`` (``[{Q_id, question, option_lst}]``).
  Shares there are over all respondents, so non-response is renormalised away; empty cells
  (item not asked) are skipped;
* the table shipped in this package (``pluralign/data/resources/wvs7_country_shares.json``), built
  from the former by ``scripts/build_resources.py``; it is the default, so the main command runs on a
  fresh machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pluralign.data.countries import country_name
from pluralign.data.items import SurveyItem
from pluralign.data.loaders import register_loader
from pluralign.data.profile import Profile
from pluralign.data.tasks import GroupExample, SurveyDataset
from pluralign.errors import PluralignError
from pluralign.io import read_json
from pluralign.paths import RESOURCES

SHIPPED = RESOURCES / "wvs7_country_shares.json"
CITATION = (
    "Haerpfer, C. et al. (2022). World Values Survey: Round Seven. doi:10.14281/18241.24; "
    "aggregated per-country shares via Xu et al. (2025), CultureSPA (NAACL 2025)."
)


def _items_from_questions(qpath: Path, props: dict, ordinal_meta: dict | None = None) -> dict[str, SurveyItem]:
    questions = read_json(qpath)
    if not isinstance(questions, list):
        raise PluralignError("expected a list of {Q_id, question, option_lst}", file=qpath)
    zero_based = {
        q for c in props.values() if isinstance(c, dict) for q, cell in c.items() if isinstance(cell, dict) and "0" in cell
    }
    items: dict[str, SurveyItem] = {}
    for i, q in enumerate(questions, start=1):
        if not isinstance(q, dict):
            raise PluralignError("expected an object {Q_id, question, option_lst}", file=qpath, row=i)
        for f in ("Q_id", "question", "option_lst"):
            if f not in q:
                raise PluralignError("missing key", file=qpath, row=i, field=f)
        if not isinstance(q["Q_id"], str) or not isinstance(q["question"], str) or not isinstance(q["option_lst"], list):
            raise PluralignError("Q_id and question must be strings, option_lst a list", file=qpath, row=i)
        opts = [str(o) for o in q["option_lst"]]
        if len(opts) < 2:
            continue  # open/demographic questions without options
        start = 0 if q["Q_id"] in zero_based else 1
        ordinal = True
        if ordinal_meta and q["Q_id"] in ordinal_meta:
            ordinal = ordinal_meta[q["Q_id"]].get("answer_data_type", "ordinal") == "ordinal"
        items[q["Q_id"]] = SurveyItem(
            id=q["Q_id"],
            text=q["question"].strip(),
            options=tuple(opts),
            codes=tuple(str(start + k) for k in range(len(opts))),
            ordinal=ordinal,
            category=(ordinal_meta or {}).get(q["Q_id"], {}).get("category", ""),
            source="wvs7-shares",
        )
    return items


def _normalise(cell: dict, item: SurveyItem, *, file: Path, row: str) -> np.ndarray | None:
    p = np.zeros(item.n_options)
    for code, share in cell.items():
        idx = item.index_of_code(code, file=str(file), row=None, field_name=f"{row}/{code}")
        if isinstance(share, bool):
            raise PluralignError(f"share {share!r} is not a number", file=file, field=f"{row}/{code}")
        try:
            v = float(share)
        except (TypeError, ValueError, OverflowError):
            raise PluralignError(f"share {share!r} is not a number", file=file, field=f"{row}/{code}") from None
        if not np.isfinite(v):
            raise PluralignError(f"share {share!r} is not a finite number", file=file, field=f"{row}/{code}")
        if v < 0:
            raise PluralignError(f"negative share {v}", file=file, field=f"{row}/{code}")
        p[idx] = v
    s = p.sum()
    return None if s <= 0 else p / s


def _dataset(
    items: dict[str, SurveyItem], props: dict, *, source: Path, value_only: bool, open_questions: frozenset = frozenset()
) -> SurveyDataset:
    """``open_questions``: ids listed without answer options (open / numeric); their shares are skipped."""
    examples: list[GroupExample] = []
    dropped: dict[str, int] = {}

    def drop(reason: str) -> None:
        dropped[reason] = dropped.get(reason, 0) + 1

    for iso, per_q in props.items():
        if not isinstance(per_q, dict):
            raise PluralignError("expected {question: {code: share}}", file=source, field=iso)
        prof = Profile(country=country_name(iso))
        for qid, cell in per_q.items():
            if qid not in items:
                if qid in open_questions:
                    drop("cells of questions without answer options")  # listed in wvs_questions.json without options
                    continue
                raise PluralignError(f"unknown question id {qid!r}", file=source, field=f"{iso}/{qid}")
            if value_only and _is_demographic(qid):
                continue
            if not isinstance(cell, (dict, list)):
                raise PluralignError(f"expected {{code: share}} or a list of shares, got {cell!r}", file=source, field=f"{iso}/{qid}")
            p = _normalise(cell, items[qid], file=source, row=f"{iso}/{qid}") if isinstance(cell, dict) else None
            if isinstance(cell, list):
                try:
                    p = np.asarray(cell, dtype=float)
                except (TypeError, ValueError):
                    raise PluralignError("shares must be numbers", file=source, field=f"{iso}/{qid}") from None
                if (p < 0).any() or not np.isfinite(p).all():
                    raise PluralignError("shares must be finite and non-negative", file=source, field=f"{iso}/{qid}")
                if len(p) != items[qid].n_options:
                    raise PluralignError(f"{len(p)} shares for {items[qid].n_options} options", file=source, field=f"{iso}/{qid}")
                p = p / p.sum() if p.sum() > 0 else None
            if p is None:
                drop("empty cells (question not asked in the country)")
                continue
            examples.append(GroupExample(group_id=iso, profile=prof, item_id=qid, probs=tuple(float(x) for x in p)))
    if not examples:
        raise PluralignError("no non-empty (country, question) cells", file=source)
    n_open = len(open_questions)
    if n_open:
        dropped["questions without answer options"] = n_open
    return SurveyDataset.from_examples("wvs-shares", "distributional", items, examples, str(source),
                                       {"citation": CITATION, "dropped": dropped})


def _shipped_items(raw, path: Path) -> dict[str, SurveyItem]:
    if not isinstance(raw, list):
        raise PluralignError("expected a list of items", file=path, field="items")
    items = {}
    for i, d in enumerate(raw, start=1):
        if not isinstance(d, dict) or not isinstance(d.get("id"), str) or not isinstance(d.get("text"), str) \
                or not isinstance(d.get("options"), list) or not isinstance(d.get("codes", []), list):
            raise PluralignError("an item needs a string id and text and a list of options", file=path, row=i, field="items")
        try:
            items[d["id"]] = SurveyItem.from_dict(d)
        except PluralignError as e:
            raise PluralignError(e.message, file=path, row=i, field="items") from None
    return items


def _is_demographic(qid: str) -> bool:
    try:
        return int("".join(ch for ch in qid[1:] if ch.isdigit())) >= 260
    except ValueError:
        return False


def _detect(p: Path) -> bool:
    if p.is_dir():
        return (p / "proportions_group_by_country.json").exists()
    return p.name in ("proportions_group_by_country.json",) or (p.suffix == ".json" and p.name.startswith("wvs7_country_shares"))


@register_loader("wvs-shares", detect=_detect, help="WVS-7 per-country answer shares (CultureSPA format or the shipped table)")
def load_wvs_shares(path: Path | None = None, *, value_only: bool = True) -> SurveyDataset:
    path = Path(path) if path else SHIPPED
    if path.is_dir():
        path = path / "proportions_group_by_country.json"
    data = read_json(path)
    if not isinstance(data, dict):
        raise PluralignError("expected {country: {question: {code: share}}}", file=path)
    if "items" in data and "shares" in data:  # shipped format
        items = _shipped_items(data["items"], path)
        if not isinstance(data["shares"], dict):
            raise PluralignError("expected {country: {question: [shares]}}", file=path, field="shares")
        return _dataset(items, data["shares"], source=path, value_only=value_only)
    qpath = path.parent / "wvs_questions.json"
    if not qpath.exists():
        raise PluralignError("wvs_questions.json must lie beside the proportions file", file=qpath)
    meta_path = path.parent.parent / "worldvaluesbench" / "question_metadata.json"
    meta = read_json(meta_path) if meta_path.exists() else None
    items = _items_from_questions(qpath, data, meta)
    listed = {str(q.get("Q_id")) for q in read_json(qpath) if isinstance(q, dict)}
    return _dataset(items, data, source=path, value_only=value_only, open_questions=frozenset(listed - set(items)))
