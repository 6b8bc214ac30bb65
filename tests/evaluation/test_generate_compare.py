"""`pluralign compare` on generate-eval reports: the table's means equal the reports' own numbers,
intervals come from the profiles x questions bootstrap, a real difference is flagged and a null one
is not, and mixed inputs get one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import make_tiny_model

from pluralign.cli.main import app
from pluralign.data.loaders import load_preferences
from pluralign.evaluation.generate import GenEvalConfig, Judge, evaluate_generation
from pluralign.evaluation.generate_compare import compare_generation, generation_cells, load_generation_report, run_label

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "data"
pytestmark = pytest.mark.usefixtures("one_thread")


class HalfJudge(Judge):
    """Prefers A when A contains a human answer of the record's region, else B."""

    name = "half"

    def __init__(self, good):
        self.good = good

    def prefer(self, items):
        return [0.9 if a in self.good else 0.2 if b in self.good else 0.5 for _, a, b, _ in items]


def _report(tmp: Path, name: str, answers_of, tiny_tokenizer) -> Path:
    import pluralign.evaluation.generate as G

    records = load_preferences(FIX / "blend").records
    base, adapted = make_tiny_model("llama", seed=0), make_tiny_model("llama", seed=1)
    ad = [answers_of(r) for r in records]
    bs = ["no idea"] * len(records)
    real = G._generate
    G._generate = lambda model, tok, recs, cfg, *, role, profile_kwargs=None: (ad if model is adapted else bs)[: len(recs)]
    try:
        rep = evaluate_generation(adapted, base, tiny_tokenizer, records, role="self",
                                  judge=HalfJudge({r.answers[0][0] for r in records}), cfg=GenEvalConfig())
    finally:
        G._generate = real
    rep["adapter"] = str(tmp / name / "adapter")
    f = tmp / f"eval-{name}.json"
    f.write_text(json.dumps(rep))
    return f


def test_compare_generation_table_matches_reports(tmp_path, tiny_tokenizer):
    good = _report(tmp_path, "good", lambda r: r.answers[0][0], tiny_tokenizer)  # every answer a human top answer
    bad = _report(tmp_path, "bad", lambda r: "no idea at all", tiny_tokenizer)  # never
    reps = [json.loads(good.read_text()), json.loads(bad.read_text())]
    t = generation_cells(reps[0])
    assert t.mean("match") == pytest.approx(reps[0]["blend_match"]["adapter_accuracy"])
    assert t.mean("match_weighted") == pytest.approx(reps[0]["blend_match"]["adapter_weighted"])
    assert t.mean("win") == pytest.approx(reps[0]["win_rate"]["win_rate"])
    assert generation_cells(reps[1]).mean("win") == pytest.approx(reps[1]["win_rate"]["win_rate"])
    loaded = [load_generation_report(f) for f in (good, bad)]
    header, rows, dh, drows, warnings = compare_generation(loaded, [run_label(f, r) for f, r in zip((good, bad), loaded)], n_boot=200)
    assert [r[0] for r in rows][:3] == ["good", "bad", "base model (no adapter)"] and not warnings
    ref = generation_cells(reps[0], "ref_other_groups")  # the model-free reference, a row of its own
    assert rows[3][0].startswith("ref: other regions") and ref.mean("match") == pytest.approx(reps[0]["references"]["other_groups_top"]["accuracy"])
    assert rows[0][1].startswith("1.000") and rows[1][1].startswith("0.000") and rows[2][1].startswith("0.000")
    by = {r[0]: r for r in drows}
    assert by["good − base"][1].endswith("*")  # +1.000, interval excludes 0
    assert not by["bad − base"][1].endswith("*")  # 0 difference: no star
    assert by["bad − good"][1].startswith("-1.000") and by["bad − good"][3].endswith("*")


def test_compare_cli_generation_and_mixed_inputs(tmp_path, tiny_tokenizer):
    good = _report(tmp_path, "good", lambda r: r.answers[0][0], tiny_tokenizer)
    bad = _report(tmp_path, "bad", lambda r: "no idea at all", tiny_tokenizer)
    res = CliRunner().invoke(app, ["compare", str(good), str(bad), "--bootstrap", "100", "--out", str(tmp_path / "t.md"),
                                   "--diff-out", str(tmp_path / "d.md")])
    assert res.exit_code == 0, res.output
    assert "win rate vs base" in (tmp_path / "t.md").read_text() and "good − base" in (tmp_path / "d.md").read_text()
    assert "agreement" in res.output
    survey = tmp_path / "eval-survey.json"
    survey.write_text(json.dumps({"metrics": {"n": 1, "emd_by_group": {}}, "dataset": {"kind": "individual"}, "references": {}}))
    res = CliRunner().invoke(app, ["compare", str(good), str(survey)])
    assert res.exit_code == 2 and "error:" in res.output and "generate-eval" in res.output
