"""``pluralign data inspect`` / ``data list`` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from pluralign.cli.main import app

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "data"
runner = CliRunner()


def _run(*args):
    return runner.invoke(app, ["data", *map(str, args)])


def test_inspect_shipped_shares_text():
    r = _run("inspect", "wvs-shares")
    assert r.exit_code == 0, r.output
    out = r.output
    assert "dataset      wvs-shares (distributional)" in out
    assert "examples     4,861" in out and "items        259" in out and "groups       19" in out
    assert "top groups   " in out and "sample item  Q1 [ordinal]: How important is family in your life?" in out
    assert "  1. Very important" in out and "sample profile  A person living in " in out


def test_inspect_worldvaluesbench_json():
    r = _run("inspect", FIX / "worldvaluesbench" / "WorldValuesBench" / "test", "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    assert s["kind"] == "individual" and s["examples"] == 17 and s["respondents"] == 5 and s["groups"] == 3
    assert s["options_per_item"] == {"2": 1, "3": 1, "4": 1, "5": 1}
    assert s["top_groups"][0] == ["Australia", 7]
    assert s["sample_item"]["id"] == "Q1" and s["sample_answer"] == {"respondent": "36000001", "item": "Q1", "answer": "Very important"}
    assert s["sample_profile"]["description"].startswith("A 55-year-old Buddhist woman living in urban Australia")
    assert "WorldValuesBench" in s["citation"]


def test_inspect_with_loader_options():
    r = _run("inspect", FIX / "globalopinionqa" / "global_opinions.csv", "-o", "sources=WVS", "--json", "--top", "2")
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    assert s["items"] == 1 and s["kind"] == "distributional" and len(s["top_groups"]) == 2
    assert abs(sum(s["sample_distribution"]["probs"]) - 1) < 1e-3
    r = _run("inspect", FIX / "worldvaluesbench", "-o", "questions=Q1,Q56", "-o", "max_respondents=2", "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    assert s["items"] == 2 and s["respondents"] == 2


def _one_error_line(r) -> str:
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert "Traceback" not in r.output
    return lines[0]


def test_inspect_bad_path_is_one_error_line(tmp_path):
    line = _one_error_line(_run("inspect", tmp_path / "nope.tsv"))
    assert "nope.tsv: no such dataset file or registered name" in line


def test_inspect_bad_file_is_one_error_line(tmp_path):
    bad = tmp_path / "global_opinions.csv"
    bad.write_text("question,selections,options\nQ?,\"defaultdict(<class 'list'>, {'X': [1, 2, 3]})\",\"['a', 'b']\"\n")
    line = _one_error_line(_run("inspect", bad, "--strict"))
    assert line == f"error: {bad}, row 1, field 'selections': X has 3 shares for 2 options"
    line = _one_error_line(_run("inspect", bad))  # unusable cells are skipped and counted; then nothing is left
    assert line.startswith(f"error: {bad}: no (country, question) distributions (dropped: 1 cells whose shares do not match")
    line = _one_error_line(_run("inspect", FIX / "globalopinionqa" / "global_opinions.csv", "-o", "colour=red"))
    assert "does not take that option" in line
    line = _one_error_line(_run("inspect", "wvs-shares", "-o", "novalue"))
    assert "expected KEY=VALUE" in line


def test_list_loaders():
    r = _run("list")
    assert r.exit_code == 0
    names = [ln.split()[0] for ln in r.output.splitlines() if ln.strip()]
    assert {"globalopinionqa", "worldvaluesbench", "wvs-probe", "wvs-shares"} <= set(names)
    assert json.loads(_run("list", "--json").output)["worldvaluesbench"].startswith("WorldValuesBench")
