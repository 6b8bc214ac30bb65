"""YAML questionnaires (issue 27, class 11): a hostile or careless file is one ``error:`` line
naming file, row and field, never a traceback, never unbounded memory, never a silent change.

* alias bombs (and recursive aliases) are refused after a bounded number of expanded values;
* YAML 1.2 core scalars: ``Yes`` / ``No`` / ``NO`` / ``on`` / ``off`` stay text, ``012`` and
  ``1.10`` keep their digits where a label is meant;
* repeated keys anywhere, groups named alike in results, options (or shares) that differ only in
  case are refused;
* deep nesting, huge numbers, huge files and values hit a limit with one line;
* a random mutation of a valid file ends in a dataset or a ``PluralignError`` (hypothesis).
"""

from __future__ import annotations

import textwrap
import tracemalloc
from pathlib import Path

import pytest

from pluralign.data.loaders import yaml_survey as Y
from pluralign.data.loaders.yaml_survey import load_questionnaire
from pluralign.errors import PluralignError
from reliability._helpers import assert_one_error, invoke

HEAD = "items:\n  - {id: q, text: Q, options: [a, b]}\n"


def _w(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def _refused(p: Path) -> str:
    with pytest.raises(PluralignError) as ei:
        load_questionnaire(p)
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith(str(p)), msg
    return msg


# ------------------------------------------------------------------------------------ alias bombs
def _bomb(levels: int, width: int, where: str = "items") -> str:
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    lines.append(f"{where}: *l{levels - 1}")
    return "\n".join(lines) + "\n"


BOMBS = {
    "billion-laughs-9x9": _bomb(9, 9),
    "wide-10x12": _bomb(10, 12, "groups"),
    "mapping-bomb": "a: &a {x: 1, y: 1, z: 1, w: 1}\n" + "".join(
        f"b{i}: &b{i} {{p: *{'a' if i == 0 else f'b{i - 1}'}, q: *{'a' if i == 0 else f'b{i - 1}'}, "
        f"r: *{'a' if i == 0 else f'b{i - 1}'}, s: *{'a' if i == 0 else f'b{i - 1}'}}}\n" for i in range(14)) + "items: [*b13]\n",
    "bomb-in-options": "x: &x [a, b, c, d, e, f, g, h]\n" + "".join(
        f"x{i}: &x{i} [{', '.join([f'*x{i - 1}' if i else '*x'] * 8)}]\n" for i in range(8))
        + "items:\n  - {id: q, text: Q, options: *x7}\ngroups: [{id: g, distributions: {q: [1, 1]}}]\n",
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_alias_bombs_are_refused_with_bounded_memory(tmp_path, name):
    p = _w(tmp_path, BOMBS[name])
    assert p.stat().st_size < 2048  # kilobyte-sized files
    tracemalloc.start()
    try:
        msg = _refused(p)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "values" in msg and "aliases" in msg, msg
    assert peak < 200 * 2**20, peak  # far below what the expansion would take


@pytest.mark.parametrize("text", [
    "items: &a [*a]\n",
    "items: &a {x: *a}\n",
    "a: &a [1, [2, *a]]\nitems: *a\n",
])
def test_recursive_aliases_are_refused(tmp_path, text):
    assert "recursive" in _refused(_w(tmp_path, text))


def test_small_aliases_still_work(tmp_path):
    ds = load_questionnaire(_w(tmp_path, """\
        items:
          - {id: q1, text: One, options: &agree [Agree, Neither, Disagree]}
          - {id: q2, text: Two, options: *agree}
        groups: [{id: g, profile: {country: DEU}, distributions: {q1: [1, 1, 1], q2: [2, 1, 1]}}]
    """))
    assert ds.items["q2"].options == ("Agree", "Neither", "Disagree")


# ------------------------------------------------------------------------------------ YAML 1.1 scalars
@pytest.mark.parametrize("labels", [
    ["Yes", "No"], ["yes", "no"], ["YES", "NO"], ["On", "Off"], ["y", "n"], ["Y", "N"], ["Yes", "No", "Don't know"],
    ["01", "02", "10"], ["1.10", "1.1"], ["0o17", "017"], ["1_000", "1000"], ["2001-12-14", "2002-01-01"], ["12:30", "1:30"],
])
def test_option_labels_are_kept_as_written(tmp_path, labels):
    opts = ", ".join(labels)
    ds = load_questionnaire(_w(tmp_path, f"items:\n  - {{id: q, text: Q, options: [{opts}]}}\n"
                                         f"groups: [{{id: g, distributions: {{q: [{', '.join(['1'] * len(labels))}]}}}}]\n"))
    assert ds.items["q"].options == tuple(labels)


@pytest.mark.parametrize("country, name", [("NO", "NO"), ("NOR", "Norway"), ("Norway", "Norway"), ("ON", "ON"), ("Y", "Y")])
def test_country_codes_are_not_booleans(tmp_path, country, name):
    ds = load_questionnaire(_w(tmp_path, HEAD + f"groups: [{{id: g, profile: {{country: {country}}}, distributions: {{q: [1, 1]}}}}]\n"))
    assert ds.examples[0].profile.country == name


def test_answers_and_shares_by_yes_no_labels(tmp_path):
    ds = load_questionnaire(_w(tmp_path, """\
        items:
          - {id: q, text: Q, options: [Yes, No], codes: [01, 02]}
        respondents:
          - {id: r1, profile: {country: NO, extra: {member: yes}}, answers: {q: No}}
          - {id: r2, answers: {q: 01}}
          - {id: r3, answers: {q: YES}}
    """))
    ans = {e.respondent_id: e.answer for e in ds.examples}
    assert ans == {"r1": 1, "r2": 0, "r3": 0}
    assert dict(ds.examples[0].profile.extra) == {"member": "yes"} and ds.items["q"].codes == ("01", "02")
    ds = load_questionnaire(_w(tmp_path, HEAD.replace("[a, b]", "[Yes, No]") + "groups: [{id: g, distributions: {q: {Yes: 3, No: 1}}}]\n"))
    assert ds.examples[0].probs == (0.75, 0.25)


@pytest.mark.parametrize("value, ok", [("true", True), ("false", False), ("yes", True), ("No", False), ("True", True),
                                       ("maybe", None), ("1", None), ("on", None)])
def test_ordinal_takes_true_false_or_yes_no(tmp_path, value, ok):
    p = _w(tmp_path, HEAD.replace("[a, b]}", f"[a, b], ordinal: {value}}}") + "groups: [{id: g, distributions: {q: [1, 1]}}]\n")
    if ok is None:
        assert "'ordinal' must be true or false" in _refused(p)
    else:
        assert load_questionnaire(p).items["q"].ordinal is ok


# ------------------------------------------------------------------------------------ duplicates
DUPLICATES = [
    ("profile key", HEAD + "groups:\n  - id: g\n    profile: {country: DEU, country: FRA}\n    distributions: {q: [1, 1]}\n", 5,
     "given twice"),
    ("profile key (block)", HEAD + "groups:\n  - id: g\n    profile:\n      country: DEU\n      age_band: 18-29\n      country: FRA\n"
     "    distributions: {q: [1, 1]}\n", 8, "given twice"),
    ("extra key", HEAD + "groups:\n  - id: g\n    profile: {country: DEU, extra: {party: A, party: B}}\n    distributions: {q: [1, 1]}\n",
     5, "given twice"),
    ("extra keys differing in case", HEAD + "groups:\n  - id: g\n    profile: {country: DEU, extra: {Party: A, party: B}}\n"
     "    distributions: {q: [1, 1]}\n", 5, "differ only in case"),
    ("respondent profile key", HEAD + "respondents:\n  - id: r\n    profile: {age: 30, sex: male, age: 40}\n    answers: {q: a}\n", 5,
     "given twice"),
    ("groups sharing a country", HEAD + "groups:\n  - {id: DEU-young, profile: {country: DEU, age_band: 18-29}, distributions: {q: [1, 1]}}\n"
     "  - {id: DEU-old, profile: {country: Germany, age_band: 60+}, distributions: {q: [1, 3]}}\n", 5, "both named 'Germany'"),
    ("group id equal to another group's country", HEAD + "groups:\n  - {id: Germany, distributions: {q: [1, 1]}}\n"
     "  - {id: g2, profile: {country: DEU}, distributions: {q: [1, 3]}}\n", 5, "both named 'Germany'"),
    ("options differing in case", "items:\n  - {id: q, text: Q, options: [Yes, yes]}\ngroups: [{id: g, distributions: {q: [1, 1]}}]\n", 2,
     "differ only in case"),
    ("options differing in spacing", "items:\n  - {id: q, text: Q, options: [Very good, Very  GOOD]}\n"
     "groups: [{id: g, distributions: {q: [1, 1]}}]\n", 2, "differ only in case"),
    ("share keys naming one option", HEAD + "groups:\n  - id: g\n    distributions:\n      q: {a: 1, A: 2}\n", 6, "both name option 'a'"),
    ("share keys: label and number", HEAD + "groups:\n  - id: g\n    distributions:\n      q: {a: 1, 1: 2}\n", 6, "both name option 'a'"),
    ("share key twice", HEAD + "groups:\n  - id: g\n    distributions:\n      q: {a: 1, a: 2}\n", 6, "given twice"),
    ("item key twice in a mapping of shares", HEAD + "groups:\n  - id: g\n    distributions: {q: [1, 1], q: [2, 1]}\n", 5,
     "appears twice"),
    ("item ids 1 and '1'", "items:\n  - {id: '1', text: Q, options: [a, b]}\ngroups:\n  - id: g\n    distributions: {1: [1, 1], '1': [2, 1]}\n",
     5, "appears twice"),
    ("answers twice", HEAD + "respondents:\n  - id: r\n    answers: {q: a, q: b}\n", 5, "answered twice"),
    ("top-level key twice", HEAD + "groups: [{id: g, distributions: {q: [1, 1]}}]\nname: a\nname: b\n", 5, "appears twice"),
    ("key twice in the citation mapping", HEAD + "groups: [{id: g, distributions: {q: [1, 1]}}]\ncitation: {a: 1, a: 2}\n", 4,
     "appears twice"),
]


@pytest.mark.parametrize("text, line, needle", [c[1:] for c in DUPLICATES], ids=[c[0] for c in DUPLICATES])
def test_repeated_or_ambiguous_keys_are_refused(tmp_path, text, line, needle):
    p = _w(tmp_path, text)
    msg = _refused(p)
    assert needle in msg and msg.startswith(f"{p}, row {line}"), msg


def test_subgroups_of_one_country_in_separate_files_are_fine(tmp_path):
    ds = load_questionnaire(_w(tmp_path, HEAD + "groups:\n  - {id: DEU-young, profile: {country: DEU, age_band: 18-29}, "
                                               "distributions: {q: [1, 1]}}\n"))
    assert ds.groups() == ["Germany"]


# ------------------------------------------------------------------------------------ limits
LIMITS = [
    ("5000-digit integer share", HEAD + "groups:\n  - id: g\n    distributions: {q: [" + "9" * 5000 + ", 1]}\n", 5, "5000 characters"),
    ("5000-digit n", HEAD + "groups:\n  - id: g\n    n: " + "7" * 5000 + "\n    distributions: {q: [1, 1]}\n", 5, "5000 characters"),
    ("5000-digit float", HEAD + "groups:\n  - id: g\n    distributions: {q: [0." + "1" * 5000 + ", 1]}\n", 5, "characters"),
    ("5000-digit age", HEAD + "respondents:\n  - id: r\n    profile: {age: " + "3" * 5000 + "}\n    answers: {q: a}\n", 5, "characters"),
    ("5000-digit answer", HEAD + "respondents:\n  - id: r\n    answers: {q: " + "1" * 5000 + "}\n", 5, "characters"),
    ("explicit !!int of 5000 digits", HEAD + "groups:\n  - id: g\n    distributions: {q: [!!int '" + "9" * 5000 + "', 1]}\n", 5,
     "characters"),
    ("shares that overflow", HEAD + "groups:\n  - id: g\n    distributions: {q: [1e308, 1e308]}\n", 5, "too large"),
    ("inf share", HEAD + "groups:\n  - id: g\n    distributions: {q: [.inf, 1]}\n", 5, "numbers >= 0"),
    ("nan share", HEAD + "groups:\n  - id: g\n    distributions:\n      q: {a: .nan, b: 1}\n", 6, "number >= 0"),
    ("deep flow nesting", "items: " + "[" * 5000 + "]" * 5000 + "\n", 1, "levels deep"),
    ("deep block nesting", "items:\n" + "".join("  " * i + "- \n" for i in range(1, 60)), None, "levels deep"),
    ("deep mappings", "items: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n", 1, "levels deep"),
    ("deep inside a profile", HEAD + "groups:\n  - id: g\n    profile: {extra: " + "{a: " * 40 + "1" + "}" * 40
     + "}\n    distributions: {q: [1, 1]}\n", 5, "levels deep"),
    ("a value of 200 000 characters", HEAD.replace("text: Q", "text: " + "x" * 200_000) + "groups: [{id: g, distributions: {q: [1, 1]}}]\n",
     2, "characters"),
    ("nested profile value", HEAD + "groups:\n  - id: g\n    profile: {country: [DEU, FRA]}\n    distributions: {q: [1, 1]}\n", 5,
     "single value"),
    ("python tag", HEAD + "groups: !!python/object:os.system {}\n", 3, "not valid YAML"),
    ("binary tag as an option", "items:\n  - {id: q, text: Q, options: [!!binary aGVsbG8=, b]}\ngroups: [{id: g, distributions: {q: [1, 1]}}]\n",
     2, "non-empty label"),
    ("merge key", HEAD + "citation: &b {id: g}\ngroups:\n  - <<: *b\n    distributions: {q: [1, 1]}\n", 5, "unknown key '<<'"),
]


@pytest.mark.parametrize("text, line, needle", [c[1:] for c in LIMITS], ids=[c[0] for c in LIMITS])
def test_deep_huge_or_foreign_values_are_one_line(tmp_path, text, line, needle):
    p = _w(tmp_path, text)
    msg = _refused(p)
    assert needle in msg, msg
    if line is not None:
        assert msg.startswith(f"{p}, row {line}"), msg


def test_file_size_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(Y, "MAX_BYTES", 1000)
    p = _w(tmp_path, HEAD + "groups: [{id: g, distributions: {q: [1, 1]}}]\n" + "# padding\n" * 200)
    assert "at most" in _refused(p)


def test_value_count_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(Y, "MAX_NODES", 500)
    rows = "".join(f"  - {{id: g{i}, distributions: {{q: [1, 1]}}}}\n" for i in range(100))
    assert "more than 500 values" in _refused(_w(tmp_path, HEAD + "groups:\n" + rows))


@pytest.mark.parametrize("name", ["bomb", "deep", "digits", "dup-profile"])
def test_cli_prints_one_error_line(tmp_path, name):
    text = {"bomb": BOMBS["billion-laughs-9x9"], "deep": "items: " + "[" * 3000 + "]" * 3000 + "\n",
            "digits": LIMITS[0][1], "dup-profile": DUPLICATES[0][1]}[name]
    p = _w(tmp_path, text)
    line = assert_one_error(invoke(["data", "inspect", p]))
    assert str(p) in line
    res = invoke(["eval", "--data", p, "--split", "none", "--out", tmp_path / "out"])
    assert_one_error(res)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------ fuzz
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SEED = """\
pluralign: questionnaire/1
name: fuzz
items:
  - id: q1
    text: "Is family important?"
    options: [Yes, No, Don't know]
  - {id: q2, text: Tea or coffee, options: [Tea, Coffee], ordinal: false, codes: [01, 02]}
groups:
  - id: NOR
    profile: {country: NO, age_band: 18-29, extra: {region type: coastal}}
    n: 1200
    distributions:
      q1: [0.5, 0.3, 0.2]
      q2: {Tea: 1, Coffee: 3}
  - id: DEU
    profile: {country: DEU}
    distributions: {q1: [1, 1, 1]}
"""

TOKENS = ["&a ", "*a", "[", "]", "{", "}", ": ", ", ", "- ", "\n", "  ", "Yes", "NO", "~", "!!int ", "!!str ", "'", '"', "9" * 80,
          "1e999", ".nan", "country: ", "<<: ", "? ", "|", ">", "#", "\t", "\x00", "\ud800", "é", "0o7", "0x1F", "1_0"]


@settings(max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.integers(0, len(SEED)), st.integers(0, 12), st.sampled_from(TOKENS)), min_size=1, max_size=6))
def test_mutated_files_load_or_fail_with_one_line(edits):
    import tempfile

    text = SEED
    for pos, cut, tok in edits:
        pos = min(pos, len(text))
        text = text[:pos] + tok + text[pos + cut:]
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "f.yaml"
        p.write_bytes(text.encode("utf-8", "surrogatepass"))
        try:
            ds = load_questionnaire(p)
        except PluralignError as e:
            assert "\n" not in str(e) and str(e).startswith(str(p))
            return
        for e in ds.examples:
            assert all(isinstance(x, float) and 0 <= x <= 1 for x in getattr(e, "probs", ()))
        for it in ds.items.values():
            assert all(isinstance(o, str) and o for o in it.options)
            assert len({o.lower() for o in it.options}) == len(it.options)
