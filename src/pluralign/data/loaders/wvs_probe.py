"""WVS-7 respondent-level probe (``individual_answers.tsv``): profile + question → answer.

Answers are on the rescaled 1..N scale stated in each question text ("On a scale of 1 to 5, 1
meaning 'Disagree' and 5 meaning 'Agree', ..."). Also reads ``participant_demographics.tsv``
(profiles only) through :func:`load_profiles`.
"""

from __future__ import annotations

import re
from pathlib import Path

from pluralign.data.items import SurveyItem
from pluralign.data.loaders import register_loader
from pluralign.data.loaders._tabular import read_table
from pluralign.data.profile import Profile
from pluralign.data.tasks import IndividualExample, SurveyDataset
from pluralign.errors import PluralignError
from pluralign.paths import shared_data_dir

#: column → Profile field
PROFILE_COLUMNS = {
    "B_COUNTRY": "country",
    "H_URBRURAL": "settlement",
    "Q260": "sex",
    "X003R": "age_band",
    "Q275": "education",
    "Q288": "income",
    "Q289": "religion",
    "Q272": "language",
}
REQUIRED = ["D_INTERVIEW", "B_COUNTRY", "question_id", "question_text", "answer"]

_SCALE = re.compile(
    r"^\s*On a scale of (\d+) to (\d+),\s*\1 meaning '([^']*)' and \2 meaning '([^']*)',?\s*(.*)$", re.S
)


def parse_scale_question(qid: str, text: str, *, file: Path | None = None, row: int | None = None) -> SurveyItem:
    m = _SCALE.match(text)
    if not m:
        raise PluralignError(
            "question_text does not start with \"On a scale of A to B, A meaning '...' and B meaning '...'\"",
            file=file,
            row=row,
            field="question_text",
        )
    lo, hi, lo_lab, hi_lab, rest = int(m[1]), int(m[2]), m[3], m[4], m[5]
    codes = [str(c) for c in range(lo, hi + 1)]
    options = [str(c) for c in range(lo, hi + 1)]
    options[0], options[-1] = lo_lab.strip(), hi_lab.strip()
    text = rest.strip()
    text = text[:1].upper() + text[1:]
    return SurveyItem(id=qid, text=text, options=tuple(options), codes=tuple(codes), ordinal=True, source="wvs-probe")


def _profile_from_row(row: dict, *, file: Path, rowno: int) -> Profile:
    data = {field: row.get(col, "") for col, field in PROFILE_COLUMNS.items() if col in row}
    if data.get("religion", "").lower().startswith("do not belong"):
        data["religion"] = "no religion"
    return Profile.from_dict(data, file=str(file), row=rowno)


def default_probe_path() -> Path:
    root = shared_data_dir()
    if root is None:
        raise PluralignError(
            "the WVS respondent probe is not shipped (WVS terms); pass its path, e.g. wvs-probe:/path/individual_answers.tsv"
        )
    return root / "wvs_individual_probe" / "individual_answers.tsv"


def _detect(p: Path) -> bool:
    if p.suffix != ".tsv" or not p.is_file():
        return False
    try:
        with open(p, encoding="utf-8", errors="replace") as fh:
            header = fh.readline().rstrip("\r\n").split("\t")
    except OSError:
        return False
    return all(c in header for c in REQUIRED)


@register_loader("wvs-probe", detect=_detect, help="WVS-7 respondent probe TSV (profile + question → answer on 1..N)")
def load_wvs_probe(path: Path | None = None) -> SurveyDataset:
    path = Path(path) if path else default_probe_path()
    df = read_table(path, REQUIRED)
    items: dict[str, SurveyItem] = {}
    examples: list[IndividualExample] = []
    profiles: dict[str, Profile] = {}
    first_row: dict[str, tuple[int, tuple]] = {}
    texts: dict[str, tuple[int, str]] = {}
    for i, row in enumerate(df.to_dict("records"), start=1):
        qid = row["question_id"].strip()
        if not qid:
            raise PluralignError("empty question id", file=path, row=i, field="question_id")
        if qid not in items:
            items[qid] = parse_scale_question(qid, row["question_text"], file=path, row=i)
            texts[qid] = (i, row["question_text"])
        elif texts[qid][1] != row["question_text"]:
            raise PluralignError(f"question {qid} has a different text than in row {texts[qid][0]}", file=path, row=i, field="question_text")
        item = items[qid]
        rid = row["D_INTERVIEW"].strip()
        if not rid:
            raise PluralignError("empty respondent id", file=path, row=i, field="D_INTERVIEW")
        demo = tuple(row.get(c, "") for c in PROFILE_COLUMNS)
        if rid not in profiles:
            profiles[rid] = _profile_from_row(row, file=path, rowno=i)
            first_row[rid] = (i, demo)
        elif first_row[rid][1] != demo:
            col = next(c for c, a, b in zip(PROFILE_COLUMNS, first_row[rid][1], demo) if a != b)
            raise PluralignError(
                f"respondent {rid} has a different {col} than in row {first_row[rid][0]}", file=path, row=i, field=col
            )
        ans = item.index_of_code(row["answer"], file=str(path), row=i)
        examples.append(IndividualExample(respondent_id=rid, profile=profiles[rid], item_id=qid, answer=ans))
    return SurveyDataset(name="wvs-probe", kind="individual", items=items, examples=examples, source=str(path))


def load_profiles(path: Path) -> dict[str, Profile]:
    """``participant_demographics.tsv`` → respondent id → profile."""
    df = read_table(Path(path), ["D_INTERVIEW", "B_COUNTRY"])
    return {
        r["D_INTERVIEW"].strip(): _profile_from_row(r, file=Path(path), rowno=i)
        for i, r in enumerate(df.to_dict("records"), start=1)
    }
