"""Routing overlap: the arithmetic (consensus) questions, the overlap measure, a tiny CuMA run, the CLI."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from pluralign.analysis.overlap import arithmetic_items, pair_overlap
from tests.analysis._helpers import error_lines, invoke


def _solve(text: str) -> int:
    n = [int(x) for x in re.findall(r"\d+", text)]
    if "more" in text:
        return n[0] + n[1]
    if "away" in text:
        return n[0] - n[1]
    if "boxes" in text:
        return n[0] * n[1]
    return n[0] // n[1]


def test_arithmetic_items_are_deterministic_and_hold_the_answer():
    items = arithmetic_items(12, seed=3)
    assert [i.text for i in items] == [i.text for i in arithmetic_items(12, seed=3)]
    assert [i.text for i in items] != [i.text for i in arithmetic_items(12, seed=4)]
    for it in items:
        assert len(it.options) == 4 and len(set(it.options)) == 4 and not it.ordinal
        assert str(_solve(it.text)) in it.options


def test_pair_overlap():
    same = np.array([[[0, 1]], [[1, 0]], [[0, 1]]])  # 3 units, 1 layer, top-2
    assert pair_overlap(same, 8, 2).tolist() == pytest.approx([1.0])
    disjoint = np.array([[[0, 1]], [[2, 3]]])
    assert pair_overlap(disjoint, 8, 2).tolist() == pytest.approx([0.0])
    half = np.array([[[0, 1], [4, 5]], [[0, 2], [4, 5]]])  # 2 layers
    assert pair_overlap(half, 8, 2).tolist() == pytest.approx([0.5, 1.0])


def test_cli_overlap(tiny_runs, tmp_path):
    res = invoke("analyze", "overlap", tiny_runs["cuma"], "--max-items", "2", "--n-consensus", "2", "--max-units", "3",
                 "--out", tmp_path / "o")
    assert res.exit_code == 0, res.output
    assert "| mean |" in res.stdout and (tmp_path / "o" / "overlap.png").stat().st_size > 1000
    r = json.loads((tmp_path / "o" / "overlap.json").read_text())
    assert r["layers"] == ["model.layers.0", "model.layers.1"] and r["chance"] == pytest.approx(2 / 8)
    for part in ("value", "consensus"):
        for pos in ("answer", "query"):
            assert len(r[part][pos]) == 2 and all(0.0 <= v <= 1.0 for v in r[part][pos])
        assert all(t > 5 for t in r["settings"]["query_tokens"][part])  # the question's tokens, shared after the persona
    assert len(r["settings"]["units"]) == 3
    res = invoke("analyze", "overlap", tiny_runs["lora"], "--out", tmp_path / "o")
    assert res.exit_code == 2 and len(error_lines(res)) == 1
    res = invoke("analyze", "overlap", tiny_runs["cuma"], "--k", "9", "--max-items", "1", "--n-consensus", "1", "--out", tmp_path / "o")
    assert res.exit_code == 2 and "--k" in error_lines(res)[0]
