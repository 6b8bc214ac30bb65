"""The WVS-7 teaching sample of the ``drhur`` R package (Yue Hu, "Learning R with Dr. Hu"):
1,264 respondents from 45 countries with a handful of demographics and 17 value items.

The package ships the data frame ``wvs7`` (``data/wvs7.rda``); this loader reads its CSV export
(``wvs7_sample.csv``, one row per respondent, columns below) and, if the optional ``pyreadr`` package
is installed, the ``.rda`` itself. Small but real: handy for quick individual-task runs.

Coding notes (checked against the answer counts): the trust and confidence items are reverse-coded
relative to the WVS codebook, so 4 = "Trust completely" / "A great deal"; ``equalFreedom`` is
1 = freedom, 2 = equality; the corruption items hold the labels None / Few / Most / All.
"""

from __future__ import annotations

import math

from pathlib import Path

import pandas as pd

from pluralign.data.items import SurveyItem
from pluralign.data.loaders import register_loader
from pluralign.data.loaders._tabular import read_table
from pluralign.data.profile import Profile
from pluralign.data.tasks import IndividualExample, SurveyDataset
from pluralign.errors import PluralignError
from pluralign.paths import shared_data_dir

CITATION = (
    "Hu, Y. drhur: Learning R with Dr. Hu (R package, CC BY-NC 4.0), WVS-7 sample; "
    "Haerpfer, C. et al. (2022). World Values Survey: Round Seven. doi:10.14281/18241.24"
)
DEMOGRAPHICS = ["country", "female", "age", "education", "religious", "marital", "incomeLevel"]

_TRUST = ("Do not trust at all", "Do not trust very much", "Trust somewhat", "Trust completely")
_CONF = ("None at all", "Not very much", "Quite a lot", "A great deal")
_CORR = ("None of them", "Few of them", "Most of them", "All of them")
_CORR_CODES = ("None", "Few", "Most", "All")


def _items() -> dict[str, SurveyItem]:
    items = [
        SurveyItem(
            id="equalIncentive",
            text="Where would you place your views on this scale: 1 means 'Incomes should be made more equal', "
            "10 means 'There should be greater incentives for individual effort'?",
            options=("Incomes should be made more equal", *map(str, range(2, 10)), "Greater incentives for individual effort"),
            category="Economic Values",
        ),
        SurveyItem(
            id="equalFreedom",
            text="If you had to choose, which one would you say is more important: freedom or equality?",
            options=("Freedom", "Equality"),
            ordinal=False,
            category="Political Culture and Political Regimes",
        ),
    ]
    for key, who in (("state", "state authorities"), ("local", "local authorities"),
                     ("civil", "civil service providers (police, doctors, teachers)")):
        items.append(SurveyItem(
            id=f"corruption_{key}", text=f"How widespread do you think corruption is among {who} in your country?",
            options=_CORR, codes=_CORR_CODES, category="Perceptions of Corruption",
        ))
    for key, whom in (("family", "your family"), ("neighbor", "your neighborhood"),
                      ("stranger", "people you meet for the first time"), ("foreigner", "people of another nationality")):
        items.append(SurveyItem(
            id=f"trust_{key}", text=f"How much do you trust {whom}?", options=_TRUST, category="Social Capital, Trust and Organizational Membership",
        ))
    for key, what in (("armedForce", "the armed forces"), ("policy", "the police"), ("court", "the courts"),
                      ("gov", "the government"), ("parliament", "parliament"), ("civil", "the civil service"),
                      ("parties", "political parties"), ("tv", "television")):
        items.append(SurveyItem(
            id=f"confidence_{key}", text=f"How much confidence do you have in {what}?", options=_CONF,
            category="Social Capital, Trust and Organizational Membership",
        ))
    return {it.id: SurveyItem(**{**it.__dict__, "source": "drhur"}) for it in items}


ITEMS = _items()
_EDUCATION = {
    0: "Early childhood education / no education", 1: "Primary education", 2: "Lower secondary education",
    3: "Upper secondary education", 4: "Post-secondary non-tertiary education", 5: "Short-cycle tertiary education",
    6: "Bachelor or equivalent", 7: "Master or equivalent", 8: "Doctoral or equivalent",
}
_MARITAL = {"Divoiced": "Divorced", "Cohabitant": "Living together as married"}


def _num(v: str, *, file: Path, row: int, field: str) -> int | None:
    v = v.strip()
    if not v:
        return None
    try:
        f = float(v)
    except ValueError:
        raise PluralignError(f"expected a number, got {v!r}", file=file, row=row, field=field) from None
    if not math.isfinite(f) or f != int(f):
        raise PluralignError(f"expected a whole number, got {v!r}", file=file, row=row, field=field)
    return int(f)


def _profile(row: dict, *, file: Path, rowno: int) -> Profile:
    sex = {"true": "female", "false": "male", "1": "female", "0": "male"}.get(row["female"].strip().lower())
    if row["female"].strip() and sex is None:
        raise PluralignError(f"expected True/False, got {row['female']!r}", file=file, row=rowno, field="female")
    edu = _num(row["education"], file=file, row=rowno, field="education")
    if edu is not None and edu not in _EDUCATION:
        raise PluralignError(f"education must be an ISCED level 0-8, got {edu}", file=file, row=rowno, field="education")
    data = {
        "country": row["country"],
        "sex": sex,
        "age": _num(row["age"], file=file, row=rowno, field="age"),
        "education": _EDUCATION.get(edu) if edu is not None else None,
        "marital_status": _MARITAL.get(row["marital"].strip(), row["marital"].strip()) or None,
        "income": _num(row["incomeLevel"], file=file, row=rowno, field="incomeLevel"),
    }
    extra = {"religiosity": row["religious"].strip()} if row["religious"].strip() else {}
    try:
        return Profile.from_dict({**data, "extra": extra}, file=str(file), row=rowno)
    except PluralignError as e:
        col = {"sex": "female", "income": "incomeLevel", "marital_status": "marital"}.get(e.field or "", e.field)
        raise PluralignError(e.message, file=file, row=rowno, field=col) from None


def default_path() -> Path:
    root = shared_data_dir()
    if root is None:
        raise PluralignError("the drhur WVS-7 sample is not shipped; pass its path, e.g. wvs7-drhur:/path/wvs7_sample.csv")
    return root / "wvs7_individual_sample_drhur" / "wvs7_sample.csv"


def _read(path: Path) -> pd.DataFrame:
    if path.suffix.lower() == ".rda":
        try:
            import pyreadr  # optional
        except ImportError:
            raise PluralignError("reading .rda needs the optional package pyreadr (pip install pyreadr), or export the data frame to CSV", file=path) from None
        frames = pyreadr.read_r(str(path))
        if "wvs7" not in frames:
            raise PluralignError(f"no data frame 'wvs7' (found: {', '.join(frames)})", file=path)
        df = frames["wvs7"].astype(object).where(frames["wvs7"].notna(), "").astype(str)
        missing = [c for c in [*DEMOGRAPHICS, *ITEMS] if c not in df.columns]
        if missing:
            raise PluralignError(f"missing column(s) {', '.join(missing)}", file=path, field=missing[0])
        return df
    return read_table(path, [*DEMOGRAPHICS, *ITEMS], sep=",")


def _detect(p: Path) -> bool:
    if not p.is_file() or p.suffix.lower() != ".csv":
        return False
    try:
        with open(p, encoding="utf-8", errors="replace") as fh:
            cols = {c.strip().strip('"') for c in fh.readline().strip().split(",")}
    except OSError:
        return False
    return {"country", "female", "equalIncentive", "trust_family"} <= cols


@register_loader("wvs7-drhur", detect=_detect, help="WVS-7 teaching sample of the drhur R package (1,264 respondents, 17 value items)")
def load_drhur(path: Path | None = None) -> SurveyDataset:
    path = Path(path) if path else default_path()
    df = _read(path)
    examples: list[IndividualExample] = []
    for i, row in enumerate(df.to_dict("records"), start=1):
        if not row["country"].strip():
            raise PluralignError("empty country", file=path, row=i, field="country")
        prof = _profile(row, file=path, rowno=i)
        rid = f"drhur-{i}"  # the sample has no respondent ids: the row number is the id
        for qid, item in ITEMS.items():
            v = row[qid].strip()
            if not v:
                continue
            examples.append(IndividualExample(respondent_id=rid, profile=prof, item_id=qid, answer=item.index_of_code(v, file=str(path), row=i, field_name=qid)))
    if not examples:
        raise PluralignError("no answers", file=path)
    return SurveyDataset(name="wvs7-drhur", kind="individual", items=dict(ITEMS), examples=examples, source=str(path), meta={"citation": CITATION})
