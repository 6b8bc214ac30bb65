"""Bring-your-own questionnaire (YAML): good files, bad files (one clear line per problem), round trip."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from pluralign.data import load_dataset
from pluralign.data.loaders.yaml_survey import check_questionnaire, load_questionnaire, main, save_questionnaire
from pluralign.errors import PluralignError

GROUPS = """\
pluralign: questionnaire/1
name: mini
citation: made up for a test
items:
  - id: family
    text: How important is family in your life?
    options: [Very important, Rather important, Not very important, Not at all important]
  - id: drink
    text: Which do you prefer?
    options: [Tea, Coffee, Water]
    ordinal: false
    category: taste
groups:
  - id: DEU
    profile: {country: Germany}
    n: 1200
    distributions:
      family: [0.78, 0.18, 0.03, 0.01]
      drink: {Tea: 30, Coffee: 60, Water: 10}
  - id: JPN-young
    profile: {country: JPN, age_band: 18-29, extra: {region type: coastal}}
    distributions:
      family: [60, 30, 8, 2]
"""

RESPONDENTS = """\
items:
  - id: family
    text: How important is family in your life?
    options: [Very important, Rather important, Not very important, Not at all important]
    codes: [1, 2, 3, 4]
  - id: drink
    text: Which do you prefer?
    options: [Tea, Coffee, Water]
    ordinal: false
respondents:
  - id: r1
    profile: {country: Germany, age: 34, sex: female}
    answers: {family: Very important, drink: 2}
  - id: r2
    profile: {country: Japan, age: 61, sex: m, education: Upper secondary}
    answers: {family: 3, drink: water}
  - id: r3
    answers: {family: ~}
"""


def _w(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_group_distributions(tmp_path):
    ds = load_dataset(_w(tmp_path, GROUPS))  # detected by the suffix
    assert ds.name == "mini" and ds.kind == "distributional" and ds.meta["citation"] == "made up for a test"
    assert ds.groups() == ["Germany", "Japan"] and len(ds) == 3
    by = {(e.group_id, e.item_id): e for e in ds.examples}
    np.testing.assert_allclose(by[("DEU", "drink")].probs, [0.3, 0.6, 0.1])
    np.testing.assert_allclose(by[("JPN-young", "family")].probs, [0.6, 0.3, 0.08, 0.02])
    assert by[("DEU", "family")].n == 1200 and by[("JPN-young", "family")].n is None
    assert by[("JPN-young", "family")].profile.age_band == "18-29"
    assert dict(by[("JPN-young", "family")].profile.extra) == {"region type": "coastal"}
    assert ds.items["family"].ordinal and not ds.items["drink"].ordinal and ds.items["drink"].category == "taste"


def test_respondent_answers(tmp_path):
    ds = load_dataset(f"questionnaire:{_w(tmp_path, RESPONDENTS, 'r.yml')}")
    assert ds.kind == "individual" and ds.name == "r" and len(ds) == 4  # r3 did not answer
    ans = {(e.respondent_id, e.item_id): e.answer for e in ds.examples}
    assert ans == {("r1", "family"): 0, ("r1", "drink"): 1, ("r2", "family"): 2, ("r2", "drink"): 2}
    r2 = next(e for e in ds.examples if e.respondent_id == "r2")
    assert r2.profile.sex == "male" and r2.profile.age == 61 and r2.group == "Japan"


BAD = [
    ("items: [1, 2]\ngroups: []\n", 1, "item 1 must be a mapping"),
    ("groups: [{id: a, distributions: {q: [1, 1]}}]\n", 1, "no 'items'"),
    ("items:\n  - {id: q, text: Q, options: [a]}\ngroups: [{id: g, distributions: {q: [1]}}]\n", 2, "at least two answer labels"),
    ("items:\n  - {id: q, text: Q, options: [a, a]}\ngroups: [{id: g, distributions: {q: [1, 1]}}]\n", 2, "repeated"),
    ("items:\n  - {id: q, options: [a, b]}\ngroups: [{id: g, distributions: {q: [1, 1]}}]\n", 2, "needs a 'text'"),
    ("items:\n  - {id: q, text: Q, options: [a, b], ordinal: maybe}\ngroups: [{id: g, distributions: {q: [1, 1]}}]\n", 2,
     "'ordinal' must be true or false"),
    ("items:\n  - {id: q, text: Q, options: [a, b]}\n  - {id: q, text: R, options: [a, b]}\ngroups: [{id: g, distributions: {q: [1, 1]}}]\n",
     3, "used twice"),
    ("items:\n  - {id: q, text: Q, options: [a, b]}\n", 1, "no 'groups'"),
    ("items:\n  - {id: q, text: Q, options: [a, b]}\ngroups: [{id: g, distributions: {q: [1, 1]}}]\nrespondents: []\n", 4,
     "not both"),
    ("items:\n  - {id: q, text: Q, options: [a, b]}\ngroups:\n  - id: g\n    distributions:\n      q: [0.5, 0.3, 0.2]\n", 6,
     "3 shares for the 2 options"),
    ("items:\n  - {id: q, text: Q, options: [a, b]}\ngroups:\n  - id: g\n    distributions:\n      q: [0, 0]\n", 6, "all 0"),
    ("items:\n  - {id: q, text: Q, options: [a, b]}\ngroups:\n  - id: g\n    distributions:\n      q: [0.5, -1]\n", 6, ">= 0"),
    ("items:\n  - {id: q, text: Q, options: [a, b]}\ngroups:\n  - id: g\n    distributions:\n      q: {a: 1, c: 2}\n", 6,
     "'c' is not an option"),
    ("items:\n  - {id: q, text: Q, options: [a, b]}\ngroups:\n  - id: g\n    distributions:\n      z: [1, 1]\n", 6, "unknown item id 'z'"),
    ("items:\n  - {id: q, text: Q, options: [a, b]}\ngroups:\n  - id: g\n    profile: {contry: Germany}\n    distributions: {q: [1, 1]}\n",
     5, "unknown profile field 'contry'"),
    ("items:\n  - {id: q, text: Q, options: [a, b]}\ngroups:\n  - id: g\n    profile: {age: old}\n    distributions: {q: [1, 1]}\n",
     5, "age must be a number"),
    ("items:\n  - {id: q, text: Q, options: [a, b]}\ngroups:\n  - {id: g, distributions: {q: [1, 1]}}\n  - {id: g, distributions: {q: [1, 1]}}\n",
     5, "group id 'g' is used twice"),
    ("items:\n  - {id: q, text: Q, options: [a, b]}\nrespondents:\n  - id: r\n    answers:\n      q: c\n", 6, "answer 'c' is not an option"),
    ("items:\n  - {id: q, text: Q, options: [a, b]}\nrespondents:\n  - id: r\n    answers:\n      q: 3\n", 6, "number 1-2"),
    ("items:\n  - {id: q, text: Q, options: [a, b], colour: red}\ngroups: [{id: g, distributions: {q: [1, 1]}}]\n", 2,
     "unknown key 'colour'"),
    ("items:\n  - {id: q, text: Q, options: [a, b]}\ngroups:\n  - id: g\n    distributions:\n      q: [1, 1]\n      q: [1, 2]\n", 7,
     "appears twice"),
    ("items: [\n", 2, "not valid YAML"),
    ("pluralign: questionnaire/9\nitems:\n  - {id: q, text: Q, options: [a, b]}\ngroups: [{id: g, distributions: {q: [1, 1]}}]\n",
     1, "unknown format"),
]


@pytest.mark.parametrize("text, line, needle", BAD)
def test_bad_files_are_one_clear_line(tmp_path, text, line, needle):
    p = _w(tmp_path, text)
    with pytest.raises(PluralignError) as ei:
        load_questionnaire(p)
    msg = str(ei.value)
    assert "\n" not in msg and needle in msg, msg
    assert msg.startswith(f"{p}, row {line}"), msg


def test_every_problem_is_listed_one_per_line(tmp_path, capsys):
    p = _w(tmp_path, "items:\n  - {id: q, text: Q, options: [a]}\n  - {id: r, options: [a, b], ordinal: 2}\n"
                     "groups:\n  - id: g\n    profile: {contry: X}\n    distributions: {r: [1, 1]}\n")
    ds, problems = check_questionnaire(p)
    assert ds is None and len(problems) == 4
    assert [x.row for x in problems] == [2, 3, 3, 6]
    with pytest.raises(PluralignError, match=r"and 3 more problems"):
        load_questionnaire(p)
    assert main([str(p)]) == 2
    out = capsys.readouterr().out.splitlines()
    assert len([line for line in out if line.startswith("error: ")]) == 4


@pytest.mark.parametrize("text", [GROUPS, RESPONDENTS])
def test_round_trip(tmp_path, text):
    a = load_questionnaire(_w(tmp_path, text))
    b = load_questionnaire(save_questionnaire(a, tmp_path / "copy.yaml"))
    assert b.kind == a.kind and b.items == {k: v for k, v in a.items.items()}
    key = (lambda e: (e.group_id, e.item_id)) if a.kind == "distributional" else (lambda e: (e.respondent_id, e.item_id))
    ea, eb = sorted(a.examples, key=key), sorted(b.examples, key=key)
    assert [(key(e), e.profile) for e in ea] == [(key(e), e.profile) for e in eb]
    if a.kind == "distributional":
        for x, y in zip(ea, eb):
            np.testing.assert_allclose(x.probs, y.probs, atol=1e-12)
            assert x.n == y.n
    else:
        assert [e.answer for e in ea] == [e.answer for e in eb]


def test_round_trip_of_shipped_shares(tmp_path):
    ws = load_dataset("wvs-shares").filter(countries=["USA", "DEU"])
    ws = ws.filter(questions=sorted(ws.items)[:5])
    back = load_dataset(save_questionnaire(ws, tmp_path / "wvs.yaml"))
    assert back.groups() == ws.groups() and set(back.items) == set(ws.items) and len(back) == len(ws)
    assert all(back.items[q].options == ws.items[q].options and back.items[q].ordinal == ws.items[q].ordinal for q in ws.items)


def test_data_inspect_reads_a_questionnaire(tmp_path):
    from typer.testing import CliRunner

    from pluralign.cli.main import app

    r = CliRunner().invoke(app, ["data", "inspect", str(_w(tmp_path, GROUPS)), "--json"])
    assert r.exit_code == 0, r.output
    assert '"kind": "distributional"' in r.output
