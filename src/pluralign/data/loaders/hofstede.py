"""Hofstede's VSM 2013 questionnaire (24 content items) and the 6-D country scores.

Both ship with the package as small tables (``data/resources/vsm2013_items.json``: the items in
pluralign's own wording with the manual's index definitions; ``data/resources/hofstede_scores.csv``:
the published country scores). VSM is a questionnaire with *country-level targets*, not a data set
of human answers, so nothing here is registered as a :class:`~pluralign.data.SurveyDataset` loader:
use :func:`load_vsm_items`, :func:`load_hofstede_scores` and :func:`country_target`.
"""

from __future__ import annotations

import csv
import math
import functools
import io
from dataclasses import dataclass, field
from pathlib import Path

from pluralign.data.countries import country_name, to_iso3
from pluralign.data.items import SurveyItem
from pluralign.errors import PluralignError
from pluralign.paths import RESOURCES

#: the six Hofstede dimensions, in the usual order
DIMENSIONS: tuple[str, ...] = ("PDI", "IDV", "MAS", "UAI", "LTO", "IVR")
#: dimension → column of the scores file (LTO is Minkov's WVS-based ``ltowvs``)
_COLUMNS = {"PDI": "pdi", "IDV": "idv", "MAS": "mas", "UAI": "uai", "LTO": "ltowvs", "IVR": "ivr"}

VSM_ITEMS_FILE = RESOURCES / "vsm2013_items.json"
#: the same 24 items reworded a second time (other stems and item texts, same scales and indices):
#: the generalisation check of a searched soft prompt
VSM_REWORDED_FILE = RESOURCES / "vsm2013_items_reworded.json"
#: short names accepted by :func:`load_vsm_items`
VSM_VARIANTS = {"default": VSM_ITEMS_FILE, "reworded": VSM_REWORDED_FILE}
HOFSTEDE_FILE = RESOURCES / "hofstede_scores.csv"


# ---------------------------------------------------------------------------------------- VSM items
@dataclass(frozen=True)
class VSMQuestionnaire:
    """The 24 VSM 2013 content items as :class:`SurveyItem` (ids ``vsm01``..``vsm24``, options in
    scale order, answer code k = option k, 1..5) and each index's terms ``(weight, plus, minus)``
    with item numbers 1..24: ``index = sum(w * (mean[plus] - mean[minus])) + C``."""

    items: tuple[SurveyItem, ...]
    terms: dict[str, tuple[tuple[float, int, int], ...]]
    citation: str = ""
    path: str = ""

    def item_number(self, item_id: str) -> int:
        return int(item_id.removeprefix("vsm"))


def _render_item(it: dict, stems: dict) -> str:
    stem = stems.get(it.get("stem") or "", "")
    text = it["text"].strip()
    if it.get("stem") == "agree_disagree":
        return f'{stem}\n"{text}"'
    return f"{stem} {text}" if stem else text


@functools.lru_cache(maxsize=4)
def _load_vsm(path: str) -> VSMQuestionnaire:
    from pluralign.io import read_json

    raw = read_json(path)
    try:
        scales = raw["scales"]
        stems = raw.get("stems", {})
        items = []
        for r, it in enumerate(raw["items"], start=1):
            scale = it.get("scale")
            if scale not in scales:
                raise PluralignError(f"unknown scale {scale!r}", file=path, row=r, field="scale")
            items.append(
                SurveyItem(
                    id=f"vsm{int(it['id']):02d}", text=_render_item(it, stems), options=tuple(scales[scale]),
                    ordinal=True, category=it.get("stem") or scale, source="VSM 2013 (paraphrased)",
                )
            )
        terms = {}
        for dim in DIMENSIONS:
            spec = raw["indices"][dim]["terms"]
            terms[dim] = tuple((float(w), int(a), int(b)) for w, a, b in spec)
    except KeyError as e:
        raise PluralignError(f"VSM item file lacks {e.args[0]!r}", file=path, field=str(e.args[0])) from None
    numbers = sorted(int(i.id[3:]) for i in items)
    if numbers != list(range(1, 25)):
        raise PluralignError(f"expected VSM items 1..24, got {numbers}", file=path, field="items")
    for it in items:
        if it.n_options != 5:
            raise PluralignError(f"{it.id}: VSM items have 5 answer options, got {it.n_options}", file=path, field="scales")
    return VSMQuestionnaire(items=tuple(items), terms=terms, citation=raw.get("citation", ""), path=path)


def load_vsm_items(path: str | Path | None = None) -> VSMQuestionnaire:
    """The shipped VSM 2013 items (our paraphrase; citation in the file), ``"reworded"`` (the same
    items phrased a second way, :data:`VSM_REWORDED_FILE`) or a file of the same format."""
    path = VSM_VARIANTS.get(str(path), path) if path is not None else VSM_ITEMS_FILE
    return _load_vsm(str(path))


# ---------------------------------------------------------------------------------------- scores
@dataclass(frozen=True)
class HofstedeTarget:
    """Published scores of one country (or region): ``scores`` holds only the measured dimensions."""

    code: str  # Hofstede's own code (e.g. CHI, ARA)
    iso3: str | None
    name: str
    unit_type: str  # country | region | subnational
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(d for d in DIMENSIONS if d not in self.scores)

    def to_dict(self) -> dict:
        return {"code": self.code, "iso3": self.iso3, "name": self.name, "unit_type": self.unit_type,
                "scores": dict(self.scores), "missing": list(self.missing)}


@functools.lru_cache(maxsize=4)
def _load_scores(path: str) -> dict[str, HofstedeTarget]:
    p = Path(path)
    if not p.exists():
        raise PluralignError("file not found", file=p)
    from pluralign.io import read_text

    lines = [ln for ln in read_text(p).splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    need = {"hofstede_code", "iso3", "unit_type", "country", *_COLUMNS.values()}
    try:
        header = reader.fieldnames
    except csv.Error as e:
        raise PluralignError(f"cannot parse as CSV ({e})", file=p, row=None) from None
    if not header or not need <= set(header):
        raise PluralignError(f"expected columns {sorted(need)}", file=p, field="header")
    out: dict[str, HofstedeTarget] = {}
    try:
        rows = list(reader)
    except csv.Error as e:
        raise PluralignError(f"cannot parse as CSV ({e})", file=p, row=reader.line_num or None) from None
    for r, row in enumerate(rows, start=1):
        if None in row or any(row.get(c) is None for c in need):
            raise PluralignError(f"expected {len(reader.fieldnames)} fields", file=p, row=r)
        scores = {}
        for dim, col in _COLUMNS.items():
            v = (row.get(col) or "").strip()
            if v in ("", "#NULL!"):
                continue
            try:
                scores[dim] = float(v)
            except ValueError:
                raise PluralignError(f"not a number: {v!r}", file=p, row=r, field=col) from None
            if not math.isfinite(scores[dim]):
                raise PluralignError(f"not a finite number: {v!r}", file=p, row=r, field=col)
        code = row["hofstede_code"].strip()
        out[code] = HofstedeTarget(code=code, iso3=(row["iso3"] or "").strip() or None, name=row["country"].strip(),
                                   unit_type=row["unit_type"].strip(), scores=scores)
    return out


def load_hofstede_scores(path: str | Path | None = None) -> dict[str, HofstedeTarget]:
    """All rows of the scores file, keyed by Hofstede code (countries, regions, sub-national samples)."""
    return _load_scores(str(path or HOFSTEDE_FILE))


def country_target(country: str, *, path: str | Path | None = None, min_dims: int = 1) -> HofstedeTarget:
    """The target of a country given as ISO3 code, Hofstede code (``ARA`` = Arab countries) or name.

    Raises :class:`PluralignError` when the file has no row for it or fewer than ``min_dims``
    measured dimensions (e.g. Saudi Arabia has only LTO and IVR: use the ``ARA`` region)."""
    table = load_hofstede_scores(path)
    src = str(path or HOFSTEDE_FILE)
    q = country.strip()
    iso = to_iso3(q)
    hit = None
    if iso:
        hit = next((t for t in table.values() if t.iso3 == iso and t.unit_type == "country"), None)
    if hit is None:
        hit = table.get(q.upper()) or next((t for t in table.values() if t.name.lower() == q.lower()), None)
    if hit is None:
        raise PluralignError(
            f"no Hofstede scores for {q!r} ({country_name(q)}); use an ISO3 code, a Hofstede code or a name "
            f"from the scores file (regions: {', '.join(sorted(c for c, t in table.items() if t.unit_type == 'region'))})",
            file=src, field="country",
        )
    if len(hit.scores) < max(1, min_dims):
        have = ", ".join(hit.scores) or "none"
        raise PluralignError(
            f"{hit.name} has {len(hit.scores)} measured dimension(s) ({have}); at least {min_dims} needed"
            + (" (Saudi Arabia: use the 'ARA' Arab-countries region)" if hit.iso3 == "SAU" else ""),
            file=src, field="country",
        )
    return hit


__all__ = ["DIMENSIONS", "HofstedeTarget", "VSMQuestionnaire", "country_target", "load_hofstede_scores", "load_vsm_items"]
