"""One `pluralign eval` run: every metric with intervals for each read-out, paired differences in
`pluralign compare`, a questionnaire YAML as --data, and --reference-data (issue 12)."""

from __future__ import annotations

import json
import re

from typer.testing import CliRunner

from pluralign.cli.main import app

runner = CliRunner()
CI = re.compile(r"-?\d\.\d{3} \[-?\d\.\d{3}, -?\d\.\d{3}\]")

SURVEY = """\
pluralign: questionnaire/1
name: mysurvey
items:
  - id: fam
    text: "How important is family in your life?"
    options: [Very important, Rather important, Not very important, Not at all important]
  - id: resp
    text: "Do you consider a feeling of responsibility to be especially important for children to learn at home?"
    options: ["Yes", "No"]
  - id: own
    text: "A question only this survey asks"
    options: [a, b, c]
    ordinal: false
groups:
  - id: FRA
    profile: {country: France}
    distributions: {fam: [0.8, 0.15, 0.04, 0.01], resp: [0.7, 0.3], own: [0.2, 0.3, 0.5]}
  - id: ITA
    profile: {country: Italy}
    distributions: {fam: [0.85, 0.1, 0.04, 0.01], resp: [0.6, 0.4], own: [0.1, 0.1, 0.8]}
"""


def _err_lines(r):
    return [line for line in r.output.splitlines() if line.startswith("error:")]


def test_one_run_reports_every_metric_with_intervals_per_readout(tiny_model_dir, tmp_path):
    out = tmp_path / "ev"
    r = runner.invoke(app, [
        "eval", "--model", str(tiny_model_dir), "--data", "wvs-shares", "--split", "country", "--test-units", "USA,CHN,DEU",
        "--max-items", "3", "--method", "persona", "--readout", "logprob,verbalized,sampled", "--samples", "2",
        "--bootstrap", "200", "--out", str(out), "--no-progress", "--no-plot",
    ])
    assert r.exit_code == 0, r.output
    files = {p.name for p in out.glob("eval-*.json")}
    assert files == {"eval-wvs-shares-persona.json", "eval-wvs-shares-persona-verbalized.json", "eval-wvs-shares-persona-sampled.json"}
    res = json.loads((out / "eval-wvs-shares-persona.json").read_text())
    for m in ("opinionqa_rep", "goqa_sim", "tv", "wvb_w1", "emd", "jsd", "accuracy"):
        assert m in res["metrics"]
        iv = res["intervals"]["metrics"][m]
        assert iv["lo"] <= res["metrics"][m] <= iv["hi"]
    assert res["intervals"]["n_boot"] == 200 and res["intervals"]["unit"] == "both" and res["intervals"]["n_groups"] == 3
    assert "tv" in res["per_group"]["China"] and res["cells"]["values"]["tv"]
    assert res["references"]["train_mean"]["intervals"]["metrics"]["tv"]["lo"] is not None
    verb = json.loads((out / "eval-wvs-shares-persona-verbalized.json").read_text())
    n = len(verb["predictions"])  # persona: one prompt per (country, item)
    assert verb["readout"]["name"] == "verbalized" and verb["readout"]["replies"] == verb["timing"]["prompts"] == n
    assert verb["readout"]["unparseable"] + sum(v for k, v in verb["readout"]["status"].items() if k in ("ok", "partial")) == n
    samp = json.loads((out / "eval-wvs-shares-persona-sampled.json").read_text())
    assert samp["readout"]["samples"] == 2 and samp["config"]["samples"] == 2
    # the table: values with intervals; the paired differences after it
    table = r.stdout
    assert "| persona |" in table and "| persona (verbalized) |" in table and "| persona (sampled) |" in table
    row = next(line for line in table.splitlines() if line.startswith("| persona |"))
    assert len(CI.findall(row)) >= 7
    assert "| difference (A - B) |" in table and "| persona - ref:train_mean |" in table
    summary = json.loads((out / "summary.json").read_text())
    assert summary["differences"]["rows"] and len(summary["results"]) == 3

    # compare: the same table and paired differences between the read-outs
    r2 = runner.invoke(app, ["compare", str(out), "--name", "method", "--diff-out", str(tmp_path / "diff.md"), "--bootstrap", "100"])
    assert r2.exit_code == 0, r2.output
    diff = (tmp_path / "diff.md").read_text()
    assert "persona (verbalized) - persona" in diff or "persona - persona (sampled)" in diff or " - " in diff
    assert CI.search(diff)


def test_bad_readout_flags_are_one_error_line(tiny_model_dir, tmp_path):
    for args, needle in ((["--readout", "telepathy"], "--readout"), (["--readout", "sampled", "--samples", "0"], "--samples"),
                         (["--bootstrap", "-1"], "--bootstrap")):
        r = runner.invoke(app, ["eval", "--model", str(tiny_model_dir), "--out", str(tmp_path / "x"), "--no-progress", *args])
        assert r.exit_code == 2, r.output
        errs = _err_lines(r)
        assert len(errs) == 1 and needle in errs[0] and "Traceback" not in r.output
    r = runner.invoke(app, ["compare", str(tmp_path), "--bootstrap-unit", "people"])
    assert r.exit_code == 2 and "--bootstrap-unit" in _err_lines(r)[0]


def test_questionnaire_data_with_reference_data(tiny_model_dir, tmp_path):
    survey = tmp_path / "my_survey.yaml"
    survey.write_text(SURVEY)
    out = tmp_path / "ev"
    base = ["eval", "--model", str(tiny_model_dir), "--data", str(survey), "--method", "vanilla", "--bootstrap", "50",
            "--no-progress", "--no-plot"]
    # no split, no reference: the references are uniform only (what --split none gives)
    r = runner.invoke(app, [*base, "--split", "none", "--out", str(out / "plain")])
    assert r.exit_code == 0, r.output
    plain = json.loads((out / "plain" / "eval-mysurvey-vanilla.json").read_text())
    assert plain["dataset"]["groups"] == ["France", "Italy"] and "train_mean" not in plain["references"]
    # zero-shot: train_mean from the shipped WVS shares, items matched by question text
    r = runner.invoke(app, [*base, "--split", "none", "--reference-data", "wvs-shares", "--out", str(out / "ref")])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "ref" / "eval-mysurvey-vanilla.json").read_text())
    tm = res["references"]["train_mean"]["metrics"]
    assert tm["n"] == 4 and tm["coverage"] == 4 / 6  # fam and resp for both groups; 'own' has no reference
    info = res["split"]["reference_data"]
    assert info["matched_items"] == 2 and info["matched_by_text"] == 2 and info["data"] == "wvs-shares"
    assert "matched" in r.output
    r = runner.invoke(app, [*base, "--split", "none", "--reference-data", str(survey.parent / "nope.yaml"), "--out", str(out / "bad")])
    assert r.exit_code == 2 and len(_err_lines(r)) == 1


def test_train_reads_a_questionnaire(tiny_model_dir, tmp_path):
    survey = tmp_path / "my_survey.yaml"
    survey.write_text(SURVEY)
    r = runner.invoke(app, [
        "train", "--method", "lora", "--task", "distributional", "--model", str(tiny_model_dir), "--data", str(survey),
        "--split", "country", "--test-units", "ITA", "--steps", "1", "--batch-size", "2", "--no-progress", "--out", str(tmp_path / "run"),
    ])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "run" / "adapter").exists()
    run = tmp_path / "run"
    summary = json.loads((run / "train_summary.json").read_text())
    # trained on the questionnaire's own rows: France's three items ('own' exists nowhere else), Italy held out
    assert summary["dataset"]["name"] == "mysurvey" and summary["task"] == "distributional"
    assert summary["rows"] == 3 and summary["profiles"] == 1 and summary["steps"] == 1
    assert summary["split"]["train"] == 3 and summary["split"]["test"] == 3
    split = json.loads((run / "split.json").read_text())
    assert split["data"] == str(survey) and split["test_unit_list"] == ["Italy"]
    meta = json.loads((run / "adapter" / "pluralign_adapter.json").read_text())
    assert meta["method"] == "lora" and meta["n_parameters"] == summary["trainable_parameters"] > 0
    assert list((run / "adapter").glob("*.safetensors"))
