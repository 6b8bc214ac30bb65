"""BLEnD (Myung et al., NeurIPS 2024 Datasets & Benchmarks): everyday cultural knowledge of 16
countries / regions, short-answer questions with the answers of ~5 native annotators each.

Release layout (the ``data/`` folder of ``nlee0212/BLEnD``)::

    annotations/{Region}_data.json   {question_id: {question, en_question,
                                       annotations: [{answers, en_answers, count}], idks: {...}}}
    questions/{Region}_questions.csv (not needed: the annotation files carry the questions)

What this loader builds (a :class:`~pluralign.data.preferences.PreferenceDataset`):

* one :class:`~pluralign.data.preferences.PromptRecord` per (region, question): profile = the
  region (``Profile(country=...)``; Assam, West Java and Northern Nigeria as regions of India,
  Indonesia and Nigeria), prompt = BLEnD's short-answer instruction "Read the following question
  and provide a single answer without any explanations." (their template ``inst-4``) around the
  English question (``en_question``; ``language="local"``: the local-language ``question``),
  human answers = the annotation groups (local + English variants), most frequent first;
  ``unit`` = the question id, which BLEnD shares across regions, so a question split holds a
  question out for every region at once;
* preference pairs, one per record: chosen = the region's most frequent answer (English variant);
  rejected = the most frequent answer that only OTHER regions gave for the same question id (it
  matches none of this region's answers under the matching below), else a generic hedge
  (``HEDGE``). ``pair.kind`` says which (``other-region`` / ``hedge``).

Questions BLEnD itself leaves out of scoring are dropped and counted (``meta["dropped"]``): no
annotation, or ``no-answer + not-applicable >= 3``, or ``idk >= 5`` (``soft_exact_match`` of
``evaluation/exact_match.py`` in the BLEnD repository).

Answer matching (:func:`blend_match`) follows BLEnD's soft exact match for the clean-up: the
response is lower-cased, full-width punctuation mapped to ASCII and a leading ``word:`` prefix
dropped. An answer group then counts when one of its variants occurs in the response **as a whole
phrase at word boundaries** (:func:`answer_in_response`): both sides are split into words at
punctuation, spaces, ``-`` and ``'``, lower-cased, combining acute accents dropped, and a word
matches its plural (``-s``, ``-es``, ``-ies`` <-> ``-y``), so "tea" matches "Teas." and "green tea"
but not "steak", and "ping-pong" matches "ping pong". The score is binary (any group matched) and
weighted (count of the first matched group / count of the most frequent group, groups taken most
frequent first). **Deviations from BLEnD** (issue 29): BLEnD also accepts a variant that is a raw
substring of the response ("tea" in "steak"), which favours long answers, and a variant whose
lemmas all appear anywhere in the response in any order; neither is accepted here. BLEnD lemmatises
with a language-specific tool (spaCy, jieba, Okt, hazm, ...); here the only folding is the plural
rule above, so answers in languages that attach particles or articles to the word (Korean, Arabic,
Persian, ...) match only when the response has the bare word. Characters of scripts written without
spaces (Chinese, Japanese kana, Thai, ...) are one word each, so there a variant matches as a
character sequence. ``scripts/blend_rematch.py`` recomputes stored reports under both rules.

The data is not shipped (no licence file in the GitHub release; the Hugging Face copy
``nayeon212/BLEnD`` is CC BY-SA 4.0). Pass ``blend:/path/to/BLEnD/data``; without a path the
development copy ``$PLURALIGN_DATA/blend_cultural_knowledge`` is used when present.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from pluralign.data.loaders import register_preference_loader
from pluralign.data.preferences import Dropper, PreferenceDataset, PromptRecord, add_pair
from pluralign.data.profile import Profile
from pluralign.errors import PluralignError

CITATION = ("Myung, J. et al. (2024). BLEnD: A Benchmark for LLMs on Everyday Knowledge in Diverse Cultures and "
            "Languages. NeurIPS Datasets and Benchmarks. github.com/nlee0212/BLEnD")
#: BLEnD's inst-4 template (the short-answer instruction of the paper's prompts)
INSTRUCTION = "Read the following question and provide a single answer without any explanations.\n\nQuestion: {q}\nAnswer:"
HEDGE = "It depends; there is no single answer to that."

#: file stem -> profile fields (regions below country level keep their country)
REGIONS: dict[str, dict] = {
    "UK": {"country": "United Kingdom"}, "US": {"country": "United States"}, "South_Korea": {"country": "South Korea"},
    "North_Korea": {"country": "North Korea"}, "Algeria": {"country": "Algeria"}, "China": {"country": "China"},
    "Indonesia": {"country": "Indonesia"}, "Spain": {"country": "Spain"}, "Iran": {"country": "Iran"},
    "Mexico": {"country": "Mexico"}, "Greece": {"country": "Greece"}, "Ethiopia": {"country": "Ethiopia"},
    "Azerbaijan": {"country": "Azerbaijan"}, "Assam": {"country": "India", "region": "Assam"},
    "West_Java": {"country": "Indonesia", "region": "West Java"},
    "Northern_Nigeria": {"country": "Nigeria", "region": "Northern Nigeria"},
}
#: how the questions name each region (for ``neutral=True``)
_ALIASES: dict[str, tuple[str, ...]] = {
    "UK": ("the United Kingdom", "the UK", "UK"), "US": ("the United States", "the US", "US", "USA"),
    "South_Korea": ("South Korea",), "North_Korea": ("North Korea",), "West_Java": ("West Java",),
    "Northern_Nigeria": ("Northern Nigeria",),
}


def region_profile(stem: str) -> Profile:
    fields = REGIONS.get(stem) or {"country": stem.replace("_", " ")}
    return Profile(**fields)


# --------------------------------------------------------------------------- matching (BLEnD's soft exact match, on whole words)
_FULLWIDTH = str.maketrans({"：": ":", "、": ",", "，": ",", "。": "."})
_ACUTE = {ord("\N{COMBINING ACUTE ACCENT}"): None}


def normalise_response(text: str, prompt: str | None = None) -> str:
    """BLEnD's clean-up of a model response (``delete_prompt_from_answer`` + ``strip('.').lower()``)."""
    t = str(text or "")
    if prompt:
        t = t.replace(prompt, "")
    t = t.translate(_FULLWIDTH).lower()
    p = (prompt or "").translate(_FULLWIDTH).lower()
    m = re.findall(r"^(\w+:)\s", t)
    best = ""
    for x in m:
        if len(x) > len(best) and x.replace(":", "") in p:
            best = x
    if best:
        t = t.replace(best, "")
    return t.strip().strip(".").strip()


#: scripts written without spaces between words: each character is its own token (no word
#: boundary can be seen without a segmenter, so an answer in them matches as a character sequence)
_UNSPACED = ((0x0E00, 0x0EFF), (0x1000, 0x109F), (0x1780, 0x17FF), (0x3040, 0x30FF), (0x3400, 0x4DBF),
             (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x3134F))


def _unspaced(ch: str) -> bool:
    o = ord(ch)
    return any(lo <= o <= hi for lo, hi in _UNSPACED)


def _word_char(ch: str) -> bool:
    return ch == "_" or unicodedata.category(ch)[0] in "LNM"  # letters, digits, combining marks


@lru_cache(maxsize=1 << 16)
def match_tokens(text: str) -> tuple[str, ...]:
    """The words of ``text`` for matching: NFD, combining acute accents dropped, lower-cased, split
    at every character that is not a letter, digit, combining mark or ``_`` (so punctuation, ``-``
    and ``'`` separate words); characters of scripts written without spaces (CJK, kana, Thai, Lao,
    Khmer, Myanmar) are one token each."""
    t = unicodedata.normalize("NFD", str(text)).translate(_ACUTE).lower()
    out: list[str] = []
    cur: list[str] = []
    for ch in t:
        if _word_char(ch) and not _unspaced(ch):
            cur.append(ch)
            continue
        if cur:
            out.append("".join(cur))
            cur = []
        if _unspaced(ch) and _word_char(ch):
            out.append(ch)
    if cur:
        out.append("".join(cur))
    return tuple(out)


@lru_cache(maxsize=1 << 16)
def _forms(tok: str) -> frozenset[str]:
    """``tok`` and its singular readings when it looks like an English plural: ``-s`` (not
    ``-ss``), ``-es`` and ``-ies`` -> ``-y``, each only when at least 3 letters (2 before ``-y``)
    remain, so "teas" -> "tea", "dishes" -> "dish", "cherries" -> "cherry", "bus" stays "bus"."""
    f = {tok}
    if tok.endswith("s") and not tok.endswith("ss") and len(tok) >= 4:
        f.add(tok[:-1])
        if tok.endswith("es") and len(tok) >= 5:
            f.add(tok[:-2])
        if tok.endswith("ies") and len(tok) >= 5:
            f.add(tok[:-3] + "y")
    return frozenset(f)


def _same_word(a: str, b: str) -> bool:
    """Equal, or one is a plural of the other (:func:`_forms`)."""
    return a == b or a in _forms(b) or b in _forms(a)


def phrase_in(want: Sequence[str], have: Sequence[str]) -> bool:
    """Whether the token sequence ``want`` occurs contiguously in ``have`` (word by word,
    :func:`_same_word`)."""
    n = len(want)
    if not n or n > len(have):
        return False
    return any(all(_same_word(w, h) for w, h in zip(want, have[i:i + n])) for i in range(len(have) - n + 1))


def answer_in_response(answer: str, response: str) -> bool:
    """One answer variant against a (normalised) response: the variant's words occur in the
    response as a whole phrase at word boundaries, after lower-casing, dropping punctuation and
    acute accents and folding a plural ending (:func:`match_tokens`, :func:`_same_word`). "tea"
    matches "Teas." and "green tea", not "steak"; "ping-pong" matches "ping pong"."""
    return phrase_in(match_tokens(str(answer)), match_tokens(str(response)))


def blend_match(response: str, answers: Sequence[Sequence[str]], counts: Sequence[int] | None = None, *,
                prompt: str | None = None) -> tuple[float, float]:
    """``(binary, weighted)`` BLEnD scores of ``response`` against answer groups (most frequent
    first): 1 / count-of-matched-group over count-of-top-group when a variant of a group occurs in
    the response as a whole phrase (:func:`answer_in_response`), else 0 / 0."""
    r = normalise_response(response, prompt)
    if not r or not answers:
        return 0.0, 0.0
    counts = list(counts) if counts else [1] * len(answers)
    top = max(counts) or 1
    for group, c in sorted(zip(answers, counts), key=lambda t: -t[1]):
        if any(answer_in_response(a, r) for a in group):
            return 1.0, float(c) / top
    return 0.0, 0.0


def neutral_question(q: str, stem: str) -> str | None:
    """The question with its region replaced by "your country" / "your region"; None when the
    region is not named in it."""
    names = _ALIASES.get(stem, (REGIONS.get(stem, {}).get("region") or REGIONS.get(stem, {}).get("country") or stem.replace("_", " "),))
    where = "your region" if REGIONS.get(stem, {}).get("region") else "your country"
    for n in names:
        pat = re.compile(rf"\b(?:the\s+)?{re.escape(n)}\b" if not n.lower().startswith("the ") else rf"\b{re.escape(n)}\b")
        if pat.search(q):
            return pat.sub(where, q, count=1)
    return None


# --------------------------------------------------------------------------- loader
def _folder(path: Path) -> Path:
    path = Path(path)
    if path.is_dir() and (path / "annotations").is_dir():
        return path / "annotations"
    if path.is_dir() and (path / "data" / "annotations").is_dir():
        return path / "data" / "annotations"
    return path


def _detect(path: Path) -> bool:
    """A folder of BLEnD annotation files: ``{Region}_data.json`` with a BLEnD region name."""
    try:
        f = _folder(path)
        return f.is_dir() and any(g.name[: -len("_data.json")] in REGIONS for g in f.glob("*_data.json"))
    except OSError:
        return False


def _default_path() -> Path:
    from pluralign.paths import shared_data_dir

    root = shared_data_dir()
    if root is None or not (root / "blend_cultural_knowledge").is_dir():
        raise PluralignError("BLEnD is not shipped; pass the release's data folder, e.g. blend:/data/BLEnD/data", field="data")
    return root / "blend_cultural_knowledge"


def _answers(groups, stem: str, qid: str, file, drop: Dropper, language: str):
    out, counts = [], []
    for g in groups:
        if not isinstance(g, dict):
            raise PluralignError("annotation is not an object", file=file, field=f"{qid}.annotations")
        en = [str(a).strip() for a in (g.get("en_answers") or []) if str(a).strip()]
        loc = [str(a).strip() for a in (g.get("answers") or []) if str(a).strip()]
        variants = tuple(dict.fromkeys((loc + en) if language == "local" else (en + loc)))
        c = g.get("count")
        if not variants:
            drop("annotation group without answers", file=file, field=f"{qid}.annotations")
            continue
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not c >= 1 or c != int(c):
            raise PluralignError(f"annotation count must be a whole number >= 1, got {c!r}", file=file, field=f"{qid}.count")
        out.append(variants)
        counts.append(int(c))
    order = sorted(range(len(out)), key=lambda i: -counts[i])  # stable: file order on ties
    return tuple(out[i] for i in order), tuple(counts[i] for i in order)


@register_preference_loader(
    "blend", detect=_detect,
    help="BLEnD annotations (annotations/{Region}_data.json): region + short-answer question -> annotators' answers; "
    "pairs: the region's top answer over one only other regions gave (or a hedge)",
)
def load_blend(
    path: Path | None = None,
    *,
    regions: Sequence[str] | str | None = None,
    language: str = "en",
    neutral: bool = False,
    hedge: str = HEDGE,
    strict: bool = False,
) -> PreferenceDataset:
    """Load BLEnD (see the module docstring). ``regions``: file stems to keep (``UK``,
    ``South_Korea``, ...); ``language``: ``en`` (English questions, English answer first) or
    ``local``; ``neutral``: replace the region's name in the question by "your country" (the
    profile alone then says where the person is; questions that do not name it are kept as they
    are and counted in ``meta["not_neutralised"]``)."""
    from pluralign.io import read_json

    if language not in ("en", "local"):
        raise PluralignError(f"language must be en or local, got {language!r}", field="language")
    root = _folder(Path(path) if path is not None else _default_path())
    if not root.is_dir():
        raise PluralignError("not a BLEnD data folder (expected annotations/{Region}_data.json)", file=root)
    files = sorted(root.glob("*_data.json"))
    if isinstance(regions, str):
        regions = [r.strip() for r in regions.split(",") if r.strip()]
    if regions:
        known = {f.name[: -len("_data.json")] for f in files}
        missing = [r for r in regions if r not in known]
        if missing:
            raise PluralignError(f"unknown BLEnD region(s) {', '.join(missing)} (here: {', '.join(sorted(known))})", file=root, field="regions")
        files = [f for f in files if f.name[: -len("_data.json")] in set(regions)]
    if not files:
        raise PluralignError("no {Region}_data.json annotation file", file=root)
    drop = Dropper(strict)
    by_region: dict[str, dict] = {}
    for f in files:
        data = read_json(f)
        if not isinstance(data, dict):
            raise PluralignError("a BLEnD annotation file must be a JSON object {question_id: {...}}", file=f)
        by_region[f.name[: -len("_data.json")]] = data
    records: list[PromptRecord] = []
    answers_of: dict[tuple[str, str], tuple] = {}
    not_neutral = 0
    for stem, data in by_region.items():
        f = root / f"{stem}_data.json"
        prof = region_profile(stem)
        for row, (qid, q) in enumerate(data.items(), start=1):
            if not isinstance(q, dict):
                raise PluralignError("question entry is not an object", file=f, row=row, field=str(qid))
            text = q.get("en_question") if language == "en" else q.get("question")
            text = str(text or q.get("question") or q.get("en_question") or "").strip()
            if not text:
                drop("question without text", file=f, row=row, field=f"{qid}.en_question")
                continue
            idks = q.get("idks") or {}
            try:
                na = float(idks.get("no-answer", 0) or 0) + float(idks.get("not-applicable", 0) or 0)
                idk = float(idks.get("idk", 0) or 0)
            except (TypeError, ValueError):
                raise PluralignError(f"idks must hold numbers, got {idks!r}", file=f, row=row, field=f"{qid}.idks") from None
            groups = q.get("annotations") or []
            if not isinstance(groups, list):
                raise PluralignError("annotations must be a list", file=f, row=row, field=f"{qid}.annotations")
            ans, counts = _answers(groups, stem, qid, f, drop, language)
            if not ans or na >= 3 or idk >= 5:
                drop("question BLEnD leaves unscored (no answer, >= 3 no-answer/not-applicable or >= 5 idk)", file=f, row=row, field=str(qid))
                continue
            if neutral:
                nq = neutral_question(text, stem)
                if nq is None:
                    not_neutral += 1
                else:
                    text = nq
            rec = PromptRecord(id=f"{stem}:{qid}", unit=str(qid), profile=prof, messages=(("user", INSTRUCTION.format(q=text)),),
                               answers=ans, answer_counts=counts, source_row=row)
            records.append(rec)
            answers_of[(stem, str(qid))] = (ans, counts)
    pairs = []
    for rec in records:
        stem = rec.id.split(":", 1)[0]
        chosen = rec.answers[0][0]  # the top group's first variant (English unless language="local")
        best, best_n = None, 0
        for other in by_region:
            if other == stem or (other, rec.unit) not in answers_of:
                continue
            ans, counts = answers_of[(other, rec.unit)]
            for g, c in zip(ans, counts):  # an answer of another region that none of this region's answers matches
                if c > best_n and not any(blend_match(v, rec.answers, rec.answer_counts)[0] for v in g):
                    best, best_n = g[0], c
        if best is not None:
            add_pair(pairs, drop, rec, chosen, best, "other-region", file=root / f"{stem}_data.json", row=rec.source_row, field=rec.unit)
        else:
            add_pair(pairs, drop, rec, chosen, hedge, "hedge", file=root / f"{stem}_data.json", row=rec.source_row, field=rec.unit)
    if not records:
        raise PluralignError("no usable BLEnD question", file=root)
    meta = {"citation": CITATION, "dropped": drop.counts, "regions": list(by_region), "language": language, "neutral": neutral,
            "not_neutralised": not_neutral, "instruction": INSTRUCTION}
    return PreferenceDataset("blend", records, pairs, str(root), "self", meta)


__all__ = ["load_blend", "blend_match", "normalise_response", "answer_in_response", "match_tokens", "phrase_in", "region_profile",
           "neutral_question", "INSTRUCTION", "HEDGE", "REGIONS"]
