"""Property-based fuzz of every dataset loader (issue 9): random bytes, truncated files, wrong
encodings, random JSON shapes, NaN / inf, huge numbers and fields. Each case ends in a
:class:`PluralignError` (one line naming the file) or a valid dataset, never another exception;
a dataset never holds a non-finite share."""

from __future__ import annotations

import itertools
import json
import math
import re
import shutil
import tempfile
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pluralign.errors import PluralignError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "data"
SETTINGS = settings(max_examples=15, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))
_n = itertools.count()


def _probe_tsv() -> bytes:
    rows = ["D_INTERVIEW\tB_COUNTRY\tQ260\tquestion_id\tquestion_text\tanswer"]
    for i, (c, a) in enumerate([("USA", 1), ("DEU", 4), ("THA", 2), ("USA", 3)]):
        rows.append(f"{i}\t{c}\t{('Male', 'Female')[i % 2]}\tQ{1 + i % 2}\tOn a scale of 1 to 4, 1 meaning 'Agree' and 4 meaning 'Disagree', how?\t{a}")
    return ("\n".join(rows) + "\n").encode()


def _shipped_json() -> bytes:
    return json.dumps({"items": [{"id": "Q1", "text": "Q?", "options": ["a", "b", "c"]}],
                       "shares": {"USA": {"Q1": [0.2, 0.3, 0.5]}, "DEU": {"Q1": [1, 0, 0]}}}).encode()


def _culturespa(part: str):
    props = json.dumps({"USA": {"Q1": {"1": 0.2, "2": 0.8}}, "DEU": {"Q1": {"1": 0.5, "2": 0.5}, "Q2": {}}}).encode()
    qs = json.dumps([{"Q_id": "Q1", "question": "Q?", "option_lst": ["a", "b"]}, {"Q_id": "Q2", "question": "Age", "option_lst": []}]).encode()
    return props if part == "props" else qs


def _write_culturespa(d: Path, part: str, data: bytes) -> Path:
    (d / "proportions_group_by_country.json").write_bytes(data if part == "props" else _culturespa("props"))
    (d / "wvs_questions.json").write_bytes(data if part == "questions" else _culturespa("questions"))
    return d / "proportions_group_by_country.json"


def _load(name: str, d: Path, data: bytes):
    from pluralign.data.loaders.drhur import load_drhur
    from pluralign.data.loaders.globalopinionqa import load_globalopinionqa
    from pluralign.data.loaders.swow import load_swow
    from pluralign.data.loaders.wvs_probe import load_wvs_probe
    from pluralign.data.loaders.wvs_shares import load_wvs_shares

    if name == "wvs-shares":
        p = d / "wvs7_country_shares.json"
        p.write_bytes(data)
        return load_wvs_shares(p)
    if name.startswith("culturespa-"):
        return load_wvs_shares(_write_culturespa(d, name.split("-")[1], data))
    if name == "globalopinionqa":
        (d / "g.csv").write_bytes(data)
        return load_globalopinionqa(d / "g.csv")
    if name == "drhur":
        (d / "s.csv").write_bytes(data)
        return load_drhur(d / "s.csv")
    if name == "wvs-probe":
        (d / "a.tsv").write_bytes(data)
        return load_wvs_probe(d / "a.tsv")
    if name == "swow":
        (d / "strength.SWOW-EN.R1.csv").write_bytes(data)
        return load_swow(d / "strength.SWOW-EN.R1.csv", min_responses=1)
    if name.startswith("wvb-"):
        from pluralign.data.loaders.worldvaluesbench import load_worldvaluesbench

        root = d / "wvb"
        shutil.copytree(FIX / "worldvaluesbench", root)
        target = {"wvb-meta": "WorldValuesBench/question_metadata.json", "wvb-codebook": "dataset_construction/codebook.json",
                  "wvb-adjust": "dataset_construction/answer_adjustment.json",
                  "wvb-values": "WorldValuesBench/test/test_value_qa.tsv", "wvb-demo": "WorldValuesBench/test/test_demographic_qa.tsv"}[name]
        (root / target).write_bytes(data)
        return load_worldvaluesbench(root / "WorldValuesBench" / "test")
    if name == "hofstede":
        from pluralign.data.loaders.hofstede import load_hofstede_scores

        p = d / f"scores-{next(_n)}.csv"  # the scores reader is cached by path
        p.write_bytes(data)
        return load_hofstede_scores(p)
    raise AssertionError(name)


def _seed(name: str) -> bytes:
    from pluralign.data.loaders import hofstede

    if name == "wvs-shares":
        return _shipped_json()
    if name.startswith("culturespa-"):
        return _culturespa(name.split("-")[1])
    if name == "wvb-meta":
        return (FIX / "worldvaluesbench/WorldValuesBench/question_metadata.json").read_bytes()
    if name == "wvb-codebook":
        return (FIX / "worldvaluesbench/dataset_construction/codebook.json").read_bytes()
    if name == "wvb-adjust":
        return (FIX / "worldvaluesbench/dataset_construction/answer_adjustment.json").read_bytes()
    if name == "wvb-values":
        raw = (FIX / "worldvaluesbench/WorldValuesBench/test/test_value_qa.tsv").read_bytes()[:6000]
        return raw[: raw.rindex(b"\n") + 1]
    if name == "wvb-demo":
        raw = (FIX / "worldvaluesbench/WorldValuesBench/test/test_demographic_qa.tsv").read_bytes()[:6000]
        return raw[: raw.rindex(b"\n") + 1]
    if name == "hofstede":
        src = getattr(hofstede, "SCORES", None) or next(Path(hofstede.__file__).parents[1].glob("resources/hofstede*.csv"))
        raw = Path(src).read_bytes()[:3000]
        return raw[: raw.rindex(b"\n") + 1]
    return {
        "globalopinionqa": (FIX / "globalopinionqa/global_opinions.csv").read_bytes(),
        "drhur": (FIX / "drhur/wvs7_sample.csv").read_bytes(),
        "wvs-probe": _probe_tsv(),
        "swow": (ROOT / "tests/wordassoc/fixtures/strength.SWOW-EN.R1.csv").read_bytes(),
    }[name]


LOADERS = ["wvs-shares", "culturespa-props", "culturespa-questions", "globalopinionqa", "drhur", "wvs-probe", "swow",
           "wvb-meta", "wvb-codebook", "wvb-adjust", "wvb-values", "wvb-demo", "hofstede"]
JSON_LOADERS = {"wvs-shares", "culturespa-props", "culturespa-questions", "wvb-meta", "wvb-codebook", "wvb-adjust"}


def _check(name: str, data: bytes) -> str:
    """Load; 'ok' or 'error' — anything else fails the test."""
    d = Path(tempfile.mkdtemp(prefix="fuzz-"))
    try:
        try:
            ds = _load(name, d, data)
        except PluralignError as e:
            assert "\n" not in str(e)
            return "error"
        for e in getattr(ds, "examples", []):
            probs = getattr(e, "probs", None)
            if probs is not None:
                assert all(math.isfinite(p) and p >= 0 for p in probs), (name, probs)
        return "ok"
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------- strategies
NUMBER = re.compile(rb"(?<![\w.])\d+(?:\.\d+)?(?![\w.])")
BAD_NUMBERS = [b"nan", b"NaN", b"inf", b"-inf", b"Infinity", b"-Infinity", b"1e309", b"-1", b"99999999999999999999",
               b"", b"1e-400", b"0", b"\"\"", b"null", b"true"]


@st.composite
def number_swapped(draw, seed: bytes):
    spans = [m.span() for m in NUMBER.finditer(seed)]
    if not spans:
        return seed
    picks = draw(st.lists(st.sampled_from(spans), min_size=1, max_size=3, unique=True))
    out = seed
    for a, b in sorted(picks, reverse=True):
        out = out[:a] + draw(st.sampled_from(BAD_NUMBERS)) + out[b:]
    return out


def _json_values():
    scalars = st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8)
    return st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4), max_leaves=20)


def _encodings(seed: bytes):
    text = seed.decode("utf-8")
    return st.sampled_from(["utf-16", "utf-16-le", "utf-16-be", "utf-32", "latin-1", "cp1252", "utf-8-sig"]).map(
        lambda enc: text.encode(enc, errors="replace"))


def _huge(seed: bytes):
    return st.integers(0, max(0, len(seed) - 1)).map(lambda i: seed[:i] + b"x" * 300_000 + seed[i:])


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("name", LOADERS)
def test_seed_file_loads(name):
    assert _check(name, _seed(name)) == "ok"


@pytest.mark.parametrize("name", LOADERS)
@SETTINGS
@given(data=st.data())
def test_random_bytes_and_truncation(name, data):
    seed = _seed(name)
    blob = data.draw(st.one_of(st.binary(max_size=600), st.integers(0, len(seed)).map(lambda k: seed[:k])))
    _check(name, blob)


@pytest.mark.parametrize("name", LOADERS)
@SETTINGS
@given(data=st.data())
def test_wrong_encodings_and_huge_fields(name, data):
    seed = _seed(name)
    _check(name, data.draw(st.one_of(_encodings(seed), _huge(seed))))


@pytest.mark.parametrize("name", LOADERS)
@SETTINGS
@given(data=st.data())
def test_nan_inf_and_bad_numbers(name, data):
    _check(name, data.draw(number_swapped(_seed(name))))


@pytest.mark.parametrize("name", sorted(JSON_LOADERS))
@SETTINGS
@given(value=_json_values())
def test_random_json_shapes(name, value):
    _check(name, json.dumps(value, allow_nan=True).encode())
