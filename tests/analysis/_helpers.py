"""Helpers of the analysis tests (imported by the tests and by conftest.py)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from pluralign.cli.main import app

#: 6 countries in 5 Inglehart-Welzel zones, 4 questions, 2 held-out countries
COUNTRIES = "USA,DEU,THA,NGA,KEN,MEX"
QUESTIONS = "Q1,Q2,Q3,Q4"


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def error_lines(res) -> list[str]:
    text = getattr(res, "stderr", "") or res.output
    return [line for line in text.splitlines() if line.startswith("error:")]


def write_result(path, kind: str, rows: list[dict], *, split: dict | None = None) -> None:
    """A minimal results file (``pluralign.eval/1``) holding ``rows`` as its predictions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    r = {"schema": "pluralign.eval/1", "model": "synthetic", "adapter": None, "method": "persona",
         "dataset": {"name": "synthetic", "kind": kind, "source": "", "groups": sorted({x["group"] for x in rows})},
         "split": split or {}, "metrics": {"n": len(rows), "emd_by_group": {"mean": 0.0, "std": 0.0}}, "per_group": {},
         "references": {}, "predictions": rows}
    path.write_text(json.dumps(r))
