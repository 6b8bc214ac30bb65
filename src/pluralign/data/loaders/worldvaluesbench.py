"""WorldValuesBench (Zhao, Mondal et al., LREC-COLING 2024): the official TSV release.

The release (repository ``Demon702/WorldValuesBench``) has one folder per split
(``full``, ``train``, ``valid``, ``test``), each holding two *wide* TSVs with one row per respondent:

* ``{split}_demographic_qa.tsv``: ``D_INTERVIEW`` then the demographic variables (``B_COUNTRY``,
  ``H_URBRURAL``, ``Q260`` sex, ``Q262`` age, ``X003R`` age band, ``Q275`` education, ``Q288`` income
  step, ``Q289`` religion, ...). Non-ordinal answers are the codebook *labels* ("Male", "Urban",
  "Upper secondary education (ISCED 3)"); ordinal ones (``Q288``) are numbers.
* ``{split}_value_qa.tsv``: ``D_INTERVIEW`` then one column per value question (``Q1`` ... ``Q259``),
  holding the answer on the question's ordinal scale ``answer_scale_min..answer_scale_max`` *after*
  the ``answer_adjustment.json`` recodings; an empty cell is a missing answer (Don't know, No answer,
  Not asked, or a code the adjustment drops).

Three metadata files describe the variables: ``question_metadata.json`` (prompt text, category,
``use_case`` value/demographic, scale range, ``answer_data_type`` ordinal/non_ordinal),
``codebook.json`` (code → label choices, negative codes are missing-value codes) and
``answer_adjustment.json`` (``{Qid: {raw code: new code or ""}}``). They are looked up beside the
TSVs, in the release's ``WorldValuesBench/`` and ``dataset_construction/`` folders, in
``metadata_dir``, and finally in the development data folder (``<shared>/worldvaluesbench``).

Survey items are built from the metadata and codebook: options are the codebook labels of the
non-negative codes, reordered by the answer adjustment (``Q56``: 2↔3) and with dropped codes
removed (``""``); ``ordinal`` follows ``answer_data_type``. ``raw_codes=True`` reads files that hold
the raw WVS codes instead (the same wide layout cut from the WVS CSV): negative codes become missing
and the adjustment is applied to the answers too.

The answers are WVS microdata and are not shipped: point the loader at your copy, e.g.
``load_dataset("worldvaluesbench:/data/WorldValuesBench/test")``.
"""

from __future__ import annotations

import math

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from pluralign.data.countries import country_name
from pluralign.data.items import SurveyItem
from pluralign.data.loaders import register_loader
from pluralign.data.loaders._tabular import read_table
from pluralign.data.profile import PROFILE_FIELDS, Profile
from pluralign.data.tasks import IndividualExample, SurveyDataset
from pluralign.errors import PluralignError
from pluralign.io import read_json
from pluralign.paths import shared_data_dir

ID_COLUMN = "D_INTERVIEW"
METADATA_FILES = ("question_metadata.json", "codebook.json", "answer_adjustment.json")
SPLITS = ("full", "train", "valid", "test")

#: demographic column → Profile field (the default persona of a respondent)
PROFILE_COLUMNS: dict[str, str] = {
    "B_COUNTRY": "country",
    "Q262": "age",
    "X003R": "age_band",
    "Q260": "sex",
    "Q275": "education",
    "Q289": "religion",
    "H_URBRURAL": "settlement",
    "Q288": "income",
    "Q272": "language",
    "Q273": "marital_status",
    "Q279": "employment",
}

CITATION = (
    "Zhao, W., Mondal, D., Tandon, N., Dillion, D., Gray, K., Gu, Y. (2024). WorldValuesBench. "
    "LREC-COLING 2024; Haerpfer, C. et al. (2022). World Values Survey: Round Seven. doi:10.14281/18241.24"
)

_SCALE_PREFIX = re.compile(r"^\s*On a scale of \d+ to \d+,\s*\d+ meaning '[^']*' and \d+ meaning '[^']*',?\s*", re.S)


# --------------------------------------------------------------------------- metadata
@dataclass
class WVBMetadata:
    """The three metadata files of the release and where they were found."""

    questions: dict
    codebook: dict
    adjustment: dict
    paths: dict[str, Path]

    def use_case(self, qid: str) -> str:
        return self.questions[qid].get("use_case", "")

    def is_ordinal(self, qid: str) -> bool:
        return self.questions[qid].get("answer_data_type", "ordinal") == "ordinal"

    def choices(self, qid: str) -> dict[str, str]:
        return dict((self.codebook.get(qid) or {}).get("choices") or {})

    def missing_labels(self, qid: str) -> frozenset[str]:
        """Labels of the negative (missing-value) codes of ``qid``, lower-cased (cached)."""
        cache = self.__dict__.setdefault("_missing", {})
        if qid not in cache:
            choices = (self.codebook.get(qid) or {}).get("choices") or {}
            cache[qid] = frozenset(str(lab).strip().lower() for code, lab in choices.items() if _is_negative(code))
        return cache[qid]


def _is_negative(code: object) -> bool:
    try:
        return float(code) < 0
    except (TypeError, ValueError):
        return False


def _search_dirs(start: Path | None, metadata_dir: Path | None) -> list[Path]:
    dirs: list[Path] = []
    if metadata_dir is not None:
        dirs.append(Path(metadata_dir))
    if start is not None:
        d = start if start.is_dir() else start.parent
        for base in (d, d.parent, d.parent.parent):
            dirs += [base, base / "WorldValuesBench", base / "dataset_construction"]
    root = shared_data_dir()
    if root is not None:
        dirs.append(root / "worldvaluesbench")
    out: list[Path] = []
    for x in dirs:
        if x not in out:
            out.append(x)
    return out


def load_metadata(start: Path | None = None, metadata_dir: Path | None = None) -> WVBMetadata:
    """Find and read ``question_metadata.json``, ``codebook.json`` and ``answer_adjustment.json``."""
    dirs = _search_dirs(start, metadata_dir)
    found: dict[str, Path] = {}
    for name in METADATA_FILES:
        for d in dirs:
            if (d / name).is_file():
                found[name] = d / name
                break
        else:
            raise PluralignError(
                f"{name} not found (looked in {', '.join(str(d) for d in dirs[:6])}{' ...' if len(dirs) > 6 else ''}); "
                "pass metadata_dir= pointing at the release's dataset_construction folder",
                file=start,
                field=name,
            )
    questions = read_json(found["question_metadata.json"])
    codebook = read_json(found["codebook.json"])
    adjustment = read_json(found["answer_adjustment.json"])
    for name, obj in (("question_metadata.json", questions), ("codebook.json", codebook), ("answer_adjustment.json", adjustment)):
        if not isinstance(obj, dict):
            raise PluralignError("expected a JSON object keyed by variable name", file=found[name])
    for qid, m in questions.items():
        if not isinstance(m, dict):
            raise PluralignError("expected an object", file=found["question_metadata.json"], field=qid)
        for key in ("question", "use_case"):
            if key not in m:
                raise PluralignError(f"missing key {key!r}", file=found["question_metadata.json"], field=f"{qid}.{key}")
    for qid, m in adjustment.items():
        if not isinstance(m, dict):
            raise PluralignError("expected {raw code: new code}", file=found["answer_adjustment.json"], field=qid)
    return WVBMetadata(questions=questions, codebook=codebook, adjustment=adjustment, paths=found)


def _int_code(v: object) -> int | None:
    """``"3"``, ``"3.0"``, ``3`` → 3; anything else → None."""
    try:
        f = float(str(v).strip())
    except (TypeError, ValueError):
        return None
    return int(f) if math.isfinite(f) and f == int(f) else None


def build_item(qid: str, meta: WVBMetadata) -> SurveyItem:
    """One survey item from the metadata: options are the codebook labels of the non-negative codes
    after the answer adjustment (recoded codes move, codes mapped to ``""`` are dropped)."""
    m = meta.questions[qid]
    qfile = meta.paths.get("question_metadata.json")
    if qid not in meta.codebook:
        raise PluralignError(f"question {qid} is not in codebook.json", file=meta.paths.get("codebook.json"), field=qid)
    adj = meta.adjustment.get(qid, {})
    by_code: dict[int, list[tuple[int, str]]] = {}
    for raw, label in meta.choices(qid).items():
        rc = _int_code(raw)
        if rc is None or rc < 0:
            continue
        new = adj.get(str(rc), str(rc))
        if str(new).strip() == "":
            continue  # the adjustment drops this code
        nc = _int_code(new)
        if nc is None:
            raise PluralignError(f"recoding {raw!r} → {new!r} is not an integer code", file=meta.paths.get("answer_adjustment.json"), field=qid)
        by_code.setdefault(nc, []).append((rc, str(label).strip()))
    ordinal = meta.is_ordinal(qid)
    if ordinal:
        lo, hi = _int_code(m.get("answer_scale_min")), _int_code(m.get("answer_scale_max"))
        if lo is None or hi is None or hi <= lo:
            raise PluralignError(
                f"ordinal question needs integer answer_scale_min < answer_scale_max, got {m.get('answer_scale_min')!r}..{m.get('answer_scale_max')!r}",
                file=qfile,
                field=qid,
            )
        codes = list(range(lo, hi + 1))
    else:
        codes = sorted(by_code)
    options = []
    for c in codes:
        sources = by_code.get(c, [])
        own = [lab for rc, lab in sources if rc == c]  # the code's own label, when it kept its place
        options.append((own or [lab for _, lab in sources] or [str(c)])[0])
    text = m["question"].strip()
    stripped = _SCALE_PREFIX.sub("", text).strip()
    if stripped and stripped != text:
        text = stripped[0].upper() + stripped[1:]
    return SurveyItem(
        id=qid,
        text=text,
        options=tuple(options),
        codes=tuple(str(c) for c in codes),
        ordinal=ordinal,
        category=str(m.get("category", "")),
        source="worldvaluesbench",
    )


def build_items(meta: WVBMetadata, question_ids: Sequence[str] | None = None) -> dict[str, SurveyItem]:
    """Items for ``question_ids`` (default: every ``use_case == "value"`` question)."""
    qids = list(question_ids) if question_ids is not None else [q for q in meta.questions if meta.use_case(q) == "value"]
    return {q: build_item(q, meta) for q in qids}


# --------------------------------------------------------------------------- files
def _pair_from_file(p: Path) -> tuple[Path, Path]:
    name = p.name
    if name.endswith("value_qa.tsv"):
        return p.with_name(name[: -len("value_qa.tsv")] + "demographic_qa.tsv"), p
    if name.endswith("demographic_qa.tsv"):
        return p, p.with_name(name[: -len("demographic_qa.tsv")] + "value_qa.tsv")
    raise PluralignError("expected a *_value_qa.tsv or *_demographic_qa.tsv file", file=p)


def resolve_files(path: Path, split: str | None = None) -> tuple[Path, Path]:
    """(demographic_qa, value_qa) for a split folder, the release root (+ ``split``) or one of the files."""
    path = Path(path)
    if path.is_file():
        return _pair_from_file(path)
    if not path.exists():
        raise PluralignError("no such file or folder", file=path)
    for root in (path, path / "WorldValuesBench"):
        if split:
            for cand in (root / split / f"{split}_value_qa.tsv", root / f"{split}_value_qa.tsv"):
                if cand.is_file():
                    return _pair_from_file(cand)
        values = sorted(root.glob("*value_qa.tsv"))
        if len(values) == 1:
            return _pair_from_file(values[0])
        if len(values) > 1:
            raise PluralignError(
                f"several value files here ({', '.join(v.name for v in values)}); pass split=", file=path, field="split"
            )
    present = [s for s in SPLITS if (path / s).is_dir() or (path / "WorldValuesBench" / s).is_dir()]
    if len(present) == 1 and not split:
        return resolve_files(path, present[0])
    if present and not split:
        raise PluralignError(
            f"this is the release root: pass split= ({', '.join(present)}) or point at a split folder", file=path, field="split"
        )
    raise PluralignError(
        f"no {split + '_' if split else '*_'}value_qa.tsv here (the WorldValuesBench release has <split>/<split>_value_qa.tsv)",
        file=path,
    )


def _clean_demographic(value: str, col: str, meta: WVBMetadata, *, raw_codes: bool) -> str:
    """Official files hold labels for non-ordinal variables and numbers for ordinal ones; raw files
    hold codes. Missing-value labels / negative codes become ``""``."""
    v = value.strip()
    if not v:
        return ""
    if col not in meta.questions:
        return v
    code = _int_code(v)
    if code is not None:
        if code < 0:
            return ""
        if not meta.is_ordinal(col) and (raw_codes or col == "B_COUNTRY"):
            return str(((meta.codebook.get(col) or {}).get("choices") or {}).get(str(code), v))
        return str(code) if meta.is_ordinal(col) or col in ("Q262",) else v
    if v.lower() in meta.missing_labels(col):
        return ""
    return v


def load_profiles(
    path: Path,
    meta: WVBMetadata,
    *,
    profile_columns: Mapping[str, str] | None = None,
    raw_codes: bool = False,
    ids: set[str] | None = None,
) -> dict[str, Profile]:
    """``*_demographic_qa.tsv`` → respondent id → :class:`Profile` (only ``ids`` when given)."""
    mapping = dict(PROFILE_COLUMNS if profile_columns is None else profile_columns)
    for col, fld in mapping.items():
        if fld not in PROFILE_FIELDS:
            raise PluralignError(f"unknown profile field {fld!r} for column {col} (known: {', '.join(PROFILE_FIELDS)})", file=path, field=col)
    df = read_table(path, [ID_COLUMN], sep="\t")
    if profile_columns is not None:
        missing = [c for c in mapping if c not in df.columns]
        if missing:
            raise PluralignError(f"missing column(s) {', '.join(missing)}", file=path, field=missing[0])
    unknown = [c for c in df.columns if c != ID_COLUMN and c not in meta.questions]
    if unknown:
        raise PluralignError(f"unknown question id {unknown[0]!r} (not in question_metadata.json)", file=path, field=unknown[0])
    cols = [c for c in mapping if c in df.columns]
    out: dict[str, Profile] = {}
    for i, (rid, *vals) in enumerate(df[[ID_COLUMN, *cols]].itertuples(index=False, name=None), start=1):
        rid = _clean_id(rid, file=path, row=i)
        if ids is not None and rid not in ids:
            continue
        if rid in out:
            raise PluralignError(f"duplicate respondent id {rid}", file=path, row=i, field=ID_COLUMN)
        data: dict[str, str] = {}
        for col, v in zip(cols, vals):
            v = _clean_demographic(v, col, meta, raw_codes=raw_codes)
            if not v:
                continue
            fld = mapping[col]
            if fld == "religion" and v.lower().startswith("do not belong"):
                v = "no religion"
            if fld == "country":
                v = country_name(v)
            data[fld] = v
        try:
            out[rid] = Profile.from_dict(data, file=str(path), row=i)
        except PluralignError as e:
            col = next((c for c, f in mapping.items() if f == e.field), e.field)
            raise PluralignError(e.message, file=path, row=i, field=col) from None
    return out


def _clean_id(v: str, *, file: Path, row: int) -> str:
    rid = str(v).strip()
    if rid.endswith(".0"):
        rid = rid[:-2]
    if not rid:
        raise PluralignError("empty respondent id", file=file, row=row, field=ID_COLUMN)
    return rid


def _answer_index(
    value: str, item: SurveyItem, adj: Mapping[str, str], *, raw_codes: bool, label_index: dict[str, int], file: Path, row: int
) -> int | None:
    v = value.strip()
    if not v:
        return None
    code = _int_code(v)
    if code is None:
        idx = label_index.get(v.lower())
        if idx is None:
            raise PluralignError(
                f"answer {value!r} is not an option of {item.id} (codes {', '.join(item.codes)} or their labels)",
                file=file, row=row, field=item.id,
            )
        return idx
    if raw_codes:
        if code < 0:
            return None
        new = str(adj.get(str(code), str(code))).strip()
        if not new:
            return None
        code = int(new)
    return item.index_of_code(str(code), file=str(file), row=row, field_name=item.id)


def _lookup_table(qid: str, item: SurveyItem, meta: WVBMetadata, *, raw_codes: bool) -> dict[str, int]:
    """Cell text → option index (-1 = missing) for the values a column usually holds."""
    table: dict[str, int] = {"": -1}
    if raw_codes:
        adj = meta.adjustment.get(qid, {})
        for raw in meta.choices(qid):
            rc = _int_code(raw)
            if rc is None:
                continue
            new = str(adj.get(str(rc), str(rc))).strip() if rc >= 0 else ""
            idx = item.codes.index(new) if new in item.codes else (-1 if rc < 0 or not new else None)
            if idx is not None:
                table[str(rc)] = table[f"{rc}.0"] = idx
    else:
        for k, c in enumerate(item.codes):
            table[c] = table[f"{c}.0"] = k
    return table


# --------------------------------------------------------------------------- loader
def _detect(p: Path) -> bool:
    """The release's file names (``<split>_value_qa.tsv`` / ``<split>_demographic_qa.tsv``) or a folder
    holding them (a split folder or the release root)."""
    try:
        if p.is_file():
            return p.name.endswith(("value_qa.tsv", "demographic_qa.tsv"))
        if p.is_dir():
            for root in (p, p / "WorldValuesBench"):
                for d in (root, *(root / s for s in SPLITS)):
                    if d.is_dir() and any(d.glob("*value_qa.tsv")):
                        return True
    except OSError:
        return False
    return False


@register_loader(
    "worldvaluesbench",
    detect=_detect,
    help="WorldValuesBench release TSVs (<split>_demographic_qa.tsv + <split>_value_qa.tsv; metadata from the release or shared data)",
)
def load_worldvaluesbench(
    path: Path | None = None,
    *,
    split: str | None = None,
    metadata_dir: Path | None = None,
    questions: Sequence[str] | str | None = None,
    countries: Sequence[str] | str | None = None,
    max_respondents: int | None = None,
    profile_columns: Mapping[str, str] | None = None,
    raw_codes: bool = False,
) -> SurveyDataset:
    """Read a WorldValuesBench split as an individual-task dataset (one example per non-empty answer).

    ``path``: a split folder, the release root (with ``split``), or one of the two TSVs (the other
    is found beside it). ``questions`` / ``countries`` / ``max_respondents`` cut the (large) data
    while reading; ``profile_columns`` maps demographic columns to :class:`Profile` fields
    (default :data:`PROFILE_COLUMNS`); ``raw_codes`` reads raw WVS codes instead of the release's
    recoded values.
    """
    if path is None:
        raise PluralignError(
            "the WorldValuesBench answers are not shipped (WVS terms); pass the release folder, e.g. worldvaluesbench:/data/WorldValuesBench/test"
        )
    if isinstance(questions, str):
        questions = questions.split(",")
    if isinstance(countries, str):
        countries = countries.split(",")
    if split is not None and split not in SPLITS:
        raise PluralignError(f"unknown split {split!r} (one of {', '.join(SPLITS)})", field="split")
    demo_path, value_path = resolve_files(Path(path), split)
    meta = load_metadata(value_path, metadata_dir)
    vdf = read_table(value_path, [ID_COLUMN], sep="\t")
    qcols = [c for c in vdf.columns if c != ID_COLUMN]
    for c in qcols:
        if c not in meta.questions:
            raise PluralignError(f"unknown question id {c!r} (not in question_metadata.json)", file=value_path, field=c)
        if meta.use_case(c) != "value":
            raise PluralignError(f"{c} is a {meta.use_case(c) or 'non-value'} variable, not a value question", file=value_path, field=c)
    if questions is not None:
        want = [str(q) for q in questions]
        unknown = [q for q in want if q not in qcols]
        if unknown:
            raise PluralignError(f"unknown question id(s) {', '.join(unknown)} (not columns of this file)", file=value_path, field="question_id")
        qcols = [c for c in qcols if c in set(want)]
    if not qcols:
        raise PluralignError("no value-question columns", file=value_path)
    items = build_items(meta, qcols)

    ids = [_clean_id(r, file=value_path, row=i) for i, r in enumerate(vdf[ID_COLUMN], start=1)]
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        for i, r in enumerate(ids, start=1):
            if r in seen:
                raise PluralignError(f"duplicate respondent id {r}", file=value_path, row=i, field=ID_COLUMN)
            seen.add(r)
    if not demo_path.is_file():
        raise PluralignError(f"the demographic file {demo_path.name} must lie beside the value file", file=demo_path)
    profiles = load_profiles(demo_path, meta, profile_columns=profile_columns, raw_codes=raw_codes, ids=set(ids))
    keep_rows = []
    wanted_countries = {country_name(c) for c in countries} if countries else None
    for i, rid in enumerate(ids, start=1):
        if rid not in profiles:
            raise PluralignError(f"respondent {rid} has no row in {demo_path.name}", file=value_path, row=i, field=ID_COLUMN)
        if wanted_countries is not None and profiles[rid].country not in wanted_countries:
            continue
        keep_rows.append(i - 1)
        if max_respondents is not None and len(keep_rows) >= max_respondents:
            break
    if wanted_countries is not None:
        have = {profiles[ids[r]].country for r in keep_rows}
        missing = wanted_countries - have
        if missing:
            raise PluralignError(f"no respondents from {', '.join(sorted(missing))}", file=demo_path, field="B_COUNTRY")

    # answer index per cell (-1 = missing): a lookup table per column for the common values, the
    # careful per-cell path (and its errors) for anything else
    answers = np.full((len(vdf), len(qcols)), -1, dtype=np.int32)
    rows_kept = np.asarray(keep_rows, dtype=np.int64)
    for j, q in enumerate(qcols):
        item, adj = items[q], meta.adjustment.get(q, {})
        label_idx = {o.lower(): k for k, o in enumerate(item.options)}
        table = _lookup_table(q, item, meta, raw_codes=raw_codes)
        col = vdf[q].iloc[rows_kept]
        mapped = col.map(table)
        for k in np.flatnonzero(mapped.isna().to_numpy()):  # values outside the table: check one by one
            idx = _answer_index(
                col.iat[k], item, adj, raw_codes=raw_codes, label_index=label_idx, file=value_path, row=int(rows_kept[k]) + 1
            )
            mapped.iat[k] = -1 if idx is None else idx
        answers[rows_kept, j] = mapped.to_numpy(dtype=np.int32)
    examples: list[IndividualExample] = []
    for r in keep_rows:
        rid, prof = ids[r], profiles[ids[r]]
        examples.extend(
            IndividualExample(respondent_id=rid, profile=prof, item_id=q, answer=a)
            for q, a in zip(qcols, answers[r].tolist())
            if a >= 0
        )
    if not examples:
        raise PluralignError("no answers left (every selected cell is empty)", file=value_path)
    return SurveyDataset.from_examples(
        "worldvaluesbench",
        "individual",
        items,
        examples,
        str(value_path),
        {"citation": CITATION, "demographics": str(demo_path), "metadata": {k: str(v) for k, v in meta.paths.items()}},
    )


__all__ = [
    "PROFILE_COLUMNS",
    "WVBMetadata",
    "build_item",
    "build_items",
    "load_metadata",
    "load_profiles",
    "load_worldvaluesbench",
    "resolve_files",
]
