"""GlobalOpinionQA (Durmus et al., 2023; ``Anthropic/llm_global_opinions``): per-country answer
distributions of Pew Global Attitudes and WVS questions.

The release is one CSV (``global_opinions.csv``) with the columns

* ``question``: the question text;
* ``selections``: the answer shares per country, written as the ``repr`` of a Python
  ``defaultdict``: ``defaultdict(<class 'list'>, {'Belgium': [0.41, 0.53, 0.06], ...})``;
* ``options``: the option labels as a Python list literal, ``['Yes', 'No', 'DK/Refused']``;
* ``source``: the survey (``GAS`` for Pew, ``WVS``).

Both literal columns are parsed with :func:`ast.literal_eval` (never ``eval``); ``nan`` shares count as
0. The path may also be a download of the dataset repository (the CSV is ``data/global_opinions.csv``
there). Rows of the release without a question text are skipped and counted
(``meta['skipped_empty_question']``). Each (country, question) becomes a distributional :class:`GroupExample` with shares renormalised to
sum to 1. Item ids are ``goqa-`` plus a short hash of question + options, so they do not move when
rows are added or reordered (repeats of the same question get ``-2``, ``-3``, ...).
"""

from __future__ import annotations

import ast
import hashlib
import math
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from pluralign.data.countries import country_name
from pluralign.data.items import SurveyItem
from pluralign.data.loaders import register_loader
from pluralign.data.loaders._tabular import read_table
from pluralign.data.profile import Profile
from pluralign.data.tasks import GroupExample, SurveyDataset
from pluralign.errors import PluralignError

REQUIRED = ["question", "selections", "options"]
CITATION = (
    "Durmus, E. et al. (2023). Towards Measuring the Representation of Subjective Global Opinions in "
    "Language Models. arXiv:2306.16388 (dataset Anthropic/llm_global_opinions)."
)

#: short country names used by the Pew surveys → names of :mod:`pluralign.data.countries`
COUNTRY_ALIASES = {
    "S. Korea": "South Korea", "Czech Rep.": "Czechia", "Czech Republic": "Czechia", "Britain": "Great Britain",
    "Palest. ter.": "Palestine", "Palestinian ter.": "Palestine", "Bosnia": "Bosnia Herzegovina",
}

_DEFAULTDICT = re.compile(r"^\s*defaultdict\(\s*<(?:class|type) '[\w.]+'>\s*,\s*(\{.*\})\s*\)\s*$", re.S)
_NAN = re.compile(r"(?<=[\[,\s])(?:nan|NaN|None)(?=\s*[,\]])")


def parse_options(text: str, *, file: Path, row: int) -> list[str]:
    """``"['Yes', 'No']"`` → ``['Yes', 'No']``; a clear error for anything else."""
    try:
        val = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise PluralignError(f"options must be a Python list literal like ['Yes', 'No'], got {_short(text)}", file=file, row=row, field="options") from None
    if not isinstance(val, (list, tuple)) or not all(isinstance(o, (str, int, float)) for o in val):
        raise PluralignError(f"options must be a list of labels, got {_short(text)}", file=file, row=row, field="options")
    opts = [str(o).strip() for o in val]
    if len(opts) < 2:
        raise PluralignError(f"need at least two options, got {len(opts)}", file=file, row=row, field="options")
    if len(set(opts)) != len(opts):
        raise PluralignError("repeated option label", file=file, row=row, field="options")
    return opts


def parse_selections(text: str, *, file: Path, row: int) -> dict[str, list[float]]:
    """``"defaultdict(<class 'list'>, {'Belgium': [0.4, 0.6]})"`` (or a plain dict literal) →
    ``{'Belgium': [0.4, 0.6]}``; ``nan`` → 0."""
    s = text.strip()
    m = _DEFAULTDICT.match(s)
    body = m.group(1) if m else s
    if not body.startswith("{"):
        raise PluralignError(
            f"selections must look like defaultdict(<class 'list'>, {{'Country': [p1, p2, ...]}}), got {_short(text)}",
            file=file, row=row, field="selections",
        )
    body = _NAN.sub("None", body)
    try:
        val = ast.literal_eval(body)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise PluralignError(f"cannot parse selections {_short(text)}", file=file, row=row, field="selections") from None
    if not isinstance(val, dict):
        raise PluralignError("selections must map country → list of shares", file=file, row=row, field="selections")
    out: dict[str, list[float]] = {}
    for country, shares in val.items():
        if not isinstance(country, str) or not country.strip():
            raise PluralignError(f"bad country name {country!r}", file=file, row=row, field="selections")
        if not isinstance(shares, (list, tuple)):
            raise PluralignError(f"shares of {country} must be a list", file=file, row=row, field="selections")
        vals: list[float] = []
        for x in shares:
            if x is None:
                vals.append(0.0)
                continue
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                raise PluralignError(f"share {x!r} of {country} is not a number", file=file, row=row, field="selections")
            if math.isnan(x):
                x = 0.0
            if x < 0 or math.isinf(x):
                raise PluralignError(f"share {x!r} of {country} is not a proportion", file=file, row=row, field="selections")
            vals.append(float(x))
        out[country.strip()] = vals
    return out


def _short(text: str, n: int = 60) -> str:
    t = " ".join(str(text).split())
    return repr(t if len(t) <= n else t[: n - 3] + "...")


def _item_id(question: str, options: list[str]) -> str:
    h = hashlib.sha1(("\x1f".join([" ".join(question.split()), *options])).encode("utf-8")).hexdigest()
    return f"goqa-{h[:10]}"


#: where the CSV lies in a download of the Hugging Face dataset repository
RELEASE_PATHS = ("data/global_opinions.csv", "global_opinions.csv")


def _release_file(p: Path) -> Path:
    """``p`` itself, or the CSV inside a download of the ``Anthropic/llm_global_opinions`` repository."""
    if p.is_dir():
        for rel in RELEASE_PATHS:
            if (p / rel).is_file():
                return p / rel
    return p


def _detect(p: Path) -> bool:
    p = _release_file(p)
    if not p.is_file() or p.suffix.lower() != ".csv":
        return False
    try:
        with open(p, encoding="utf-8", errors="replace") as fh:
            header = fh.readline().strip().lstrip("\ufeff").split(",")
    except OSError:
        return False
    cols = {c.strip().strip('"') for c in header}
    return all(c in cols for c in REQUIRED)


@register_loader(
    "globalopinionqa",
    detect=_detect,
    help="GlobalOpinionQA CSV (question, selections per country, options, source): per-country answer shares",
)
def load_globalopinionqa(
    path: Path | None = None,
    *,
    sources: Sequence[str] | str | None = None,
    ordinal: bool = False,
    skip_invalid: bool = False,
    strict: bool = False,
) -> SurveyDataset:
    """Read the GlobalOpinionQA CSV as a distributional dataset (groups are countries).

    ``sources`` keeps only rows of these surveys (``GAS``, ``WVS``); ``ordinal`` marks every item as
    ordinal (the release does not say which are, so the default is nominal: compare with
    Jensen-Shannon rather than Earth Mover's distance).

    Unusable cells are skipped and counted per reason in ``meta['dropped']`` (the policy of every
    loader): a country whose shares are all 0 or do not match the options, and then a question
    left with no country, or with fewer than two options (those rows are also listed in
    ``meta['skipped']``). ``strict`` fails on the first instead. A malformed row (a literal that
    does not parse, a share that is not a proportion) is an error, unless ``skip_invalid`` skips
    and counts it too. Nothing usable left is always an error.
    """
    if path is None:
        raise PluralignError(
            "GlobalOpinionQA is not shipped; pass the CSV of Anthropic/llm_global_opinions, e.g. globalopinionqa:/data/global_opinions.csv"
        )
    path = _release_file(Path(path))
    if path.is_dir():
        raise PluralignError(f"no {' or '.join(RELEASE_PATHS)} in this folder (the Anthropic/llm_global_opinions release)", file=path)
    df = read_table(path, REQUIRED, sep=",")
    has_source = "source" in df.columns
    items: dict[str, SurveyItem] = {}
    examples: list[GroupExample] = []
    skipped: list[dict] = []
    dropped: dict[str, int] = {}

    def drop(reason: str, err: PluralignError, *, row_level: bool) -> None:
        if strict:
            raise err
        dropped[reason] = dropped.get(reason, 0) + 1
        if row_level:
            skipped.append({"row": err.row, "reason": err.message})
    empty: list[int] = []
    if isinstance(sources, str):
        sources = sources.split(",")
    keep_sources = {s.strip().upper() for s in sources if s.strip()} if sources else None
    for i, row in enumerate(df.to_dict("records"), start=1):
        src = row.get("source", "").strip() if has_source else ""
        if keep_sources is not None and src.upper() not in keep_sources:
            continue
        question = " ".join(row["question"].split())
        if not question or question.lower() in ("nan", "none"):
            # the published release has rows without a question text: they cannot be asked, so they
            # are skipped and counted (meta['skipped_empty_question'])
            empty.append(i)
            continue
        try:
            options = parse_options(row["options"], file=path, row=i)
            selections = parse_selections(row["selections"], file=path, row=i)
        except PluralignError as e:
            if "at least two options" in e.message:
                drop("questions with fewer than two options", e, row_level=True)
            elif skip_invalid:
                drop("malformed rows", e, row_level=True)
            else:
                raise
            continue
        if not selections:
            drop("questions without countries", PluralignError("no countries in selections (empty group list)", file=path,
                                                              row=i, field="selections"), row_level=True)
            continue
        dists: dict[str, np.ndarray] = {}
        reasons = []
        for country, shares in selections.items():
            if len(shares) != len(options):
                e = PluralignError(f"{country} has {len(shares)} shares for {len(options)} options", file=path, row=i, field="selections")
                drop("cells whose shares do not match the options", e, row_level=False)
                reasons.append(e.message)
                continue
            p = np.asarray(shares, dtype=float)
            if p.sum() <= 0:
                e = PluralignError(f"{country} has no answers (all shares are 0)", file=path, row=i, field="selections")
                drop("cells with all shares 0", e, row_level=False)
                reasons.append(e.message)
                continue
            dists[country] = p / p.sum()
        if not dists:
            drop("questions without a usable country", PluralignError("; ".join(reasons), file=path, row=i, field="selections"),
                 row_level=True)
            continue
        base = _item_id(question, options)
        qid, k = base, 1
        while qid in items:
            k += 1
            qid = f"{base}-{k}"
        items[qid] = SurveyItem(
            id=qid, text=question, options=tuple(options), ordinal=ordinal, category=src, source="globalopinionqa"
        )
        for country, p in dists.items():
            name = country_name(COUNTRY_ALIASES.get(country, country))
            examples.append(
                GroupExample(group_id=name, profile=Profile(country=name), item_id=qid, probs=tuple(float(x) for x in p))
            )
    if not examples:
        raise PluralignError(
            "no (country, question) distributions" + (f" for source(s) {', '.join(sorted(keep_sources))}" if keep_sources else "")
            + (f" (dropped: {', '.join(f'{n} {r}' for r, n in dropped.items())})" if dropped else ""),
            file=path,
        )
    meta: dict = {"citation": CITATION, "dropped": dropped}
    if skipped:
        meta["skipped"] = skipped
    if empty:
        meta["skipped_empty_question"] = empty
    return SurveyDataset(name="globalopinionqa", kind="distributional", items=items, examples=examples, source=str(path), meta=meta)
