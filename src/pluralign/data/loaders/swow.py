"""Small World of Words (SWOW) free word associations: the official strength-file format.

SWOW is not a survey: it is *not* a :class:`~pluralign.data.SurveyDataset` loader. It yields, per cue
word, the human responses with their counts and strengths, ordered by strength.

Formats (CSV, comma- or tab-separated, detected from the header)::

    cue,response,R1,N,R1.Strength           # strength.SWOW-EN.R1.csv   (first responses)
    cue,response,R123,N,R123.Strength       # strength.SWOW-EN.R123.csv (all three responses)

The same columns are used by the Mandarin release (``strength.SWOWZH.R1.csv`` / ``.R123``); the
language is read from the file name (``SWOW-EN``, ``SWOWZH``/``SWOW-ZH``, ...) or given explicitly.
An R-style leading row-index column (``""`` or ``X``) is accepted and ignored.

Bad input (all documented, all counted in :attr:`SwowData.dropped`):

* a malformed row (missing field, count that is not a non-negative integer, ``N`` < 1, count > ``N``,
  strength outside [0, 1] or not equal to count/N within 1e-3) raises :class:`PluralignError` naming
  file, row and field; with ``on_bad_row="skip"`` such rows are dropped and counted instead;
* an empty or ``NA`` response (a participant who gave no response) is skipped and counted;
* a duplicate (cue, response) row raises by default; ``on_duplicate="merge"`` sums their counts;
* cues with fewer than ``min_responses`` distinct responses are dropped and counted (too few to form
  a training target of that length or to rank);
* ``language`` given but different from the tag in the file name raises (use a file of the
  language you ask for, or leave ``language`` unset); :func:`check_language` also rejects a prompt
  template language that does not match the data (see :mod:`pluralign.wordassoc.tasks`).

The SWOW data are CC BY-NC-ND: read them where they are; never copy them into this repository.
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pluralign.data.splits import unit_fraction
from pluralign.errors import PluralignError
from pluralign.paths import shared_data_dir

CITATION = (
    "De Deyne, S., Navarro, D. J., Perfors, A., Brysbaert, M., & Storms, G. (2019). The 'Small World of Words' "
    "English word association norms for over 12,000 cue words. Behavior Research Methods, 51, 987-1006."
)

#: file-name tag → language code
_LANG_TAGS = (
    (re.compile(r"SWOW[-_]?EN", re.I), "en"),
    (re.compile(r"SWOW[-_]?ZH", re.I), "zh"),
    (re.compile(r"SWOW[-_]?NL", re.I), "nl"),
    (re.compile(r"SWOW[-_]?ES|SWOW[-_]?RP", re.I), "es"),
)
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_NA = {"", "NA", "#Missing"}  # R's missing value; "none", "null", "nan" are real English responses


@dataclass(frozen=True)
class Association:
    response: str
    count: int
    strength: float


@dataclass
class SwowData:
    """Cue → human responses ordered by strength (highest first; ties by response)."""

    cues: dict[str, list[Association]]
    language: str
    response_set: str  # "R1" or "R123"
    source: str = ""
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.cues)

    def subset(self, cues) -> "SwowData":
        return SwowData({c: self.cues[c] for c in cues}, self.language, self.response_set, self.source, dict(self.dropped))

    def describe(self) -> dict:
        n = [len(v) for v in self.cues.values()]
        return {
            "source": self.source,
            "language": self.language,
            "response_set": self.response_set,
            "cues": len(self.cues),
            "rows": sum(n),
            "responses_per_cue": {"min": min(n), "max": max(n), "mean": round(sum(n) / len(n), 2)} if n else {},
            "dropped": dict(self.dropped),
        }


def default_swow_path() -> Path | None:
    """``<shared data>/swow_en/strength.SWOW-EN.R1.csv`` when present."""
    root = shared_data_dir()
    if root is None:
        return None
    p = root / "swow_en" / "strength.SWOW-EN.R1.csv"
    return p if p.exists() else None


def language_from_name(path: str | Path) -> str | None:
    name = Path(path).name
    for rx, lang in _LANG_TAGS:
        if rx.search(name):
            return lang
    return None


def _resolve(path: str | Path | None) -> Path:
    if path is None or str(path) in ("swow", "swow-en"):
        p = default_swow_path()
        if p is None:
            raise PluralignError(
                "SWOW-EN not found: pass the path of a strength.SWOW-EN.R1.csv file (download it from "
                "smallworldofwords.org; CC BY-NC-ND, not shipped with pluralign)",
                field="data",
            )
        return p
    p = Path(path).expanduser()
    if p.is_dir():
        cands = sorted(p.glob("strength.*.csv"))
        if not cands:
            raise PluralignError("no strength.*.csv file in this folder", file=p)
        return cands[0]
    if not p.is_file():
        raise PluralignError("SWOW file not found", file=p)
    return p


def _columns(header: list[str], file: Path) -> tuple[dict[str, int], str]:
    cols = {h.strip().strip('"'): i for i, h in enumerate(header)}
    for rs in ("R1", "R123", "R2", "R3"):
        if rs in cols and f"{rs}.Strength" in cols:
            need = ("cue", "response", rs, "N", f"{rs}.Strength")
            missing = [c for c in need if c not in cols]
            if missing:
                raise PluralignError(f"missing column(s) {', '.join(missing)}", file=file, field=missing[0])
            return {"cue": cols["cue"], "response": cols["response"], "count": cols[rs], "N": cols["N"],
                    "strength": cols[f"{rs}.Strength"]}, rs
    raise PluralignError(
        f"not a SWOW strength file: expected columns cue,response,R1,N,R1.Strength (or R123); found {','.join(cols)}",
        file=file,
        row=None,
        field="header",
    )


def load_swow(
    path: str | Path | None = None,
    *,
    language: str | None = None,
    min_responses: int = 3,
    on_bad_row: Literal["error", "skip"] = "error",
    on_duplicate: Literal["error", "merge"] = "error",
    max_cues: int | None = None,
) -> SwowData:
    """Read a SWOW strength file (R1 or R123; English, Mandarin or another SWOW language).

    ``path``: a strength CSV, a folder holding one, or ``None`` for the shared SWOW-EN copy.
    ``language``: the data language (``en``, ``zh``, ...); by default taken from the file name.
    ``min_responses``: cues with fewer distinct responses are dropped (counted in ``dropped``).
    ``max_cues``: keep only the first N cues (in file order) after filtering; for quick runs.
    """
    file = _resolve(path)
    tag = language_from_name(file)
    if language and tag and language != tag:
        raise PluralignError(f"language mismatch: asked for {language!r} but the file name says {tag!r}", file=file, field="language")
    lang = language or tag or "en"
    if on_bad_row not in ("error", "skip"):
        raise PluralignError(f"on_bad_row must be error or skip, not {on_bad_row!r}", field="on_bad_row")
    if on_duplicate not in ("error", "merge"):
        raise PluralignError(f"on_duplicate must be error or merge, not {on_duplicate!r}", field="on_duplicate")
    dropped = {"bad_rows": 0, "empty_responses": 0, "duplicates_merged": 0, "cues_below_min_responses": 0}
    raw: dict[str, dict[str, list]] = {}
    first_row: dict[tuple[str, str], int] = {}
    import io

    from pluralign.io import read_text

    text = read_text(file)  # UTF-8 (BOMs honoured); other encodings and binary: one clear error
    with io.StringIO(text, newline="") as fh:
        sample = fh.read(4096)
        fh.seek(0)
        delim = "\t" if sample.count("\t") > sample.count(",") else ","
        reader = _guarded_rows(csv.reader(fh, delimiter=delim), file)
        try:
            header = next(reader)
        except StopIteration:
            raise PluralignError("empty file", file=file) from None
        cols, rs = _columns(header, file)
        width = len(header)
        for rowno, row in enumerate(reader, start=1):
            if not row or all(not c.strip() for c in row):
                continue
            try:
                cue, resp, cnt, n = _parse_row(row, cols, width, file, rowno)
            except PluralignError:
                if on_bad_row == "skip":
                    dropped["bad_rows"] += 1
                    continue
                raise
            if resp is None:
                dropped["empty_responses"] += 1
                continue
            per = raw.setdefault(cue, {})
            if resp in per:
                if on_duplicate == "error":
                    raise PluralignError(
                        f"duplicate cue-response pair ({cue!r}, {resp!r}); first seen at row {first_row[(cue, resp)]} "
                        "(use on_duplicate='merge' / --on-duplicate merge to sum their counts)",
                        file=file, row=rowno, field="response",
                    )
                per[resp][0] += cnt
                per[resp][1] = max(per[resp][1], n)
                dropped["duplicates_merged"] += 1
            else:
                per[resp] = [cnt, n]
                first_row[(cue, resp)] = rowno
    cues: dict[str, list[Association]] = {}
    for cue, per in raw.items():
        if len(per) < min_responses:
            dropped["cues_below_min_responses"] += 1
            continue
        n_cue = max(v[1] for v in per.values())
        assoc = [Association(r, c, c / n_cue) for r, (c, _) in per.items()]
        assoc.sort(key=lambda a: (-a.count, a.response))
        cues[cue] = assoc
        if max_cues and len(cues) >= max_cues:
            break
    if not cues:
        raise PluralignError(f"no usable cues (min_responses={min_responses}; dropped: {dropped})", file=file)
    data = SwowData(cues, lang, rs, str(file), dropped)
    check_language(data, lang)
    return data


def _guarded_rows(reader, file: Path):
    """``csv.reader`` rows; a malformed file (a field over the size limit, a NUL) is one clear error."""
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise PluralignError(f"cannot parse as CSV ({e})", file=file, row=max(0, reader.line_num - 1) or None) from None


def _parse_row(row: list[str], cols: dict[str, int], width: int, file: Path, rowno: int):
    if len(row) < width:
        raise PluralignError(f"row has {len(row)} fields, the header {width}", file=file, row=rowno)
    cue = row[cols["cue"]].strip()
    if not cue or cue in _NA:
        raise PluralignError("empty cue", file=file, row=rowno, field="cue")
    resp = row[cols["response"]].strip()
    resp_out = None if resp in _NA else resp
    cnt = _int(row[cols["count"]], file, rowno, "count")
    n = _int(row[cols["N"]], file, rowno, "N")
    if n < 1:
        raise PluralignError(f"N must be >= 1, got {n}", file=file, row=rowno, field="N")
    if cnt > n:
        raise PluralignError(f"response count {cnt} exceeds N={n}", file=file, row=rowno, field="count")
    s_raw = row[cols["strength"]].strip()
    try:
        s = float(s_raw)
    except ValueError:
        raise PluralignError(f"strength {s_raw!r} is not a number", file=file, row=rowno, field="strength") from None
    if not math.isfinite(s) or not 0 <= s <= 1:
        raise PluralignError(f"strength {s_raw} is outside [0, 1]", file=file, row=rowno, field="strength")
    if abs(s - cnt / n) > 1e-3:
        raise PluralignError(f"strength {s_raw} != count/N = {cnt}/{n}", file=file, row=rowno, field="strength")
    return cue, resp_out, cnt, n


def _int(v: str, file: Path, rowno: int, name: str) -> int:
    v = v.strip()
    try:
        f = float(v)
    except ValueError:
        raise PluralignError(f"{name} {v!r} is not a number", file=file, row=rowno, field=name) from None
    if not math.isfinite(f) or f < 0 or f != int(f):
        raise PluralignError(f"{name} {v!r} is not a non-negative integer", file=file, row=rowno, field=name)
    return int(f)


def check_language(data: SwowData, template_language: str) -> None:
    """Raise when the prompt-template language does not match the data: the declared tag differs,
    or the cues' script contradicts it (CJK cues with a non-Chinese template, or Latin cues with
    a Chinese one; judged on the majority of at most 200 cues)."""
    if data.language != template_language:
        raise PluralignError(
            f"language mismatch: the data are {data.language!r} but the prompt template is {template_language!r}",
            file=data.source, field="language",
        )
    sample = list(data.cues)[:200]
    cjk = sum(bool(_CJK.search(c)) for c in sample) / max(1, len(sample))
    if template_language == "zh" and cjk < 0.5:
        raise PluralignError(f"language mismatch: template 'zh' but only {cjk:.0%} of cues are Chinese", file=data.source, field="language")
    if template_language != "zh" and cjk >= 0.5:
        raise PluralignError(
            f"language mismatch: template {template_language!r} but {cjk:.0%} of cues are Chinese (pass language='zh')",
            file=data.source, field="language",
        )


# ------------------------------------------------------------------------------------------ split
@dataclass
class CueSplit:
    train: SwowData
    val: SwowData
    test: SwowData
    seed: int

    def describe(self) -> dict:
        return {"by": "cue", "seed": self.seed, "train": len(self.train), "val": len(self.val), "test": len(self.test)}


def split_cues(data: SwowData, *, val_frac: float = 0.1, test_frac: float = 0.1, seed: int = 0) -> CueSplit:
    """Cue-level split (default 80/10/10). A cue's part depends only on ``(seed, cue)`` through a
    hash (as :func:`pluralign.data.split_dataset`), so it is stable across runs, file orderings and
    subsets: a cue held out in the full file is held out in any subset of it."""
    if not 0 < test_frac < 1 or not 0 <= val_frac < 1 or test_frac + val_frac >= 1:
        raise PluralignError(f"bad split fractions val={val_frac} test={test_frac}", field="split")
    parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for c in data.cues:
        f = unit_fraction(seed, f"swow:{c}")
        parts["test" if f < test_frac else "val" if f < test_frac + val_frac else "train"].append(c)
    for p in ("train", "test"):
        if not parts[p]:
            raise PluralignError(f"the {p} part of the cue split is empty ({len(data)} cues)", file=data.source, field="split")
    return CueSplit(data.subset(parts["train"]), data.subset(parts["val"]), data.subset(parts["test"]), seed)


# ------------------------------------------------------------------------------------------ reversed pairs
def pair_key(word: str) -> str:
    """Matching key of a cue or response when pairs are compared: NFKC, lower case, white space collapsed."""
    import unicodedata

    return " ".join(unicodedata.normalize("NFKC", word).lower().split())


def reversed_pairs(held_out: SwowData, train: SwowData, *, depth: int | None = None) -> dict[str, list[str]]:
    """The held-out pairs whose reversed pair is in ``train``.

    A held-out pair is (c, r): a cue c of ``held_out`` and one of its human responses r. Its reversed
    pair is (r, c): r is a cue of ``train`` and c one of r's responses there, within r's ``depth``
    strongest responses (the ones training can show: SFT targets, ranking candidates; ``None`` = all).
    A model trained on "r -> c" has seen the association of the held-out pair from the other side.
    Returns ``{c: [r, ...]}`` for the held-out cues that have at least one (responses in strength order)."""
    if depth is not None and depth < 1:
        raise PluralignError(f"depth must be >= 1, got {depth}", field="depth")
    seen: dict[str, set[str]] = {}
    for r, assoc in train.cues.items():
        seen[pair_key(r)] = {pair_key(a.response) for a in (assoc if depth is None else assoc[:depth])}
    out: dict[str, list[str]] = {}
    for c, assoc in held_out.cues.items():
        kc = pair_key(c)
        hits = [a.response for a in assoc if kc in seen.get(pair_key(a.response), ())]
        if hits:
            out[c] = hits
    return out


def exclude_reversed_pairs(train: SwowData, held_out: "SwowData | list[SwowData] | tuple[SwowData, ...]") -> tuple[SwowData, dict]:
    """``train`` without the reversed pairs of the held-out pairs, so that neither a held-out cue nor
    the reversed pair of any held-out pair is in the training data.

    From each training cue r, every response c is dropped where c is a held-out cue that has r among
    its own responses (:func:`reversed_pairs`, all depths). The other responses keep their counts and
    strengths (the next strongest move up into the SFT targets and ranking candidates). Returns the
    data and ``{"pairs_removed", "train_cues_changed", "held_out_cues"}`` (how many held-out cues had
    a reversed pair)."""
    parts = list(held_out) if isinstance(held_out, (list, tuple)) else [held_out]
    drop: dict[str, set[str]] = {}  # training cue key -> held-out cue keys to drop from its responses
    train_keys = {pair_key(r) for r in train.cues}
    for part in parts:
        for c, assoc in part.cues.items():
            kc = pair_key(c)
            for a in assoc:
                kr = pair_key(a.response)
                if kr in train_keys:
                    drop.setdefault(kr, set()).add(kc)
    cues: dict[str, list[Association]] = {}
    removed: set[tuple[str, str]] = set()
    for r, assoc in train.cues.items():
        bad = drop.get(pair_key(r), set())
        keep = [a for a in assoc if pair_key(a.response) not in bad] if bad else assoc
        removed |= {(pair_key(r), pair_key(a.response)) for a in assoc if pair_key(a.response) in bad}
        cues[r] = list(keep)
    out = SwowData(cues, train.language, train.response_set, train.source, dict(train.dropped))
    return out, {"pairs_removed": len(removed), "train_cues_changed": len({r for r, _ in removed}),
                 "held_out_cues": len({c for _, c in removed})}


__all__ = ["Association", "SwowData", "CueSplit", "load_swow", "split_cues", "sample_cues", "check_language", "default_swow_path", "CITATION",
           "exclude_reversed_pairs", "pair_key", "reversed_pairs"]


def sample_cues(data: SwowData, n: int | None, *, seed: int = 0) -> SwowData:
    """A deterministic subset of ``n`` cues (hash order with ``seed``; all when ``n`` is None or
    larger than the data). Growing ``n`` only adds cues."""
    if n is None or n >= len(data):
        return data
    if n < 1:
        raise PluralignError(f"need at least one cue, got n={n}", field="cues")
    order = sorted(data.cues, key=lambda c: hashlib.sha256(f"{seed}|sample|{c}".encode()).hexdigest())
    return data.subset(order[:n])
