"""`pluralign eval` end to end on a tiny local model folder: files, table, errors, atomicity."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pluralign.cli.main import app

runner = CliRunner()


def _eval(tiny_model_dir, out, *extra):
    return runner.invoke(
        app,
        [
            "eval", "--model", str(tiny_model_dir), "--data", "wvs-shares", "--split", "country",
            "--test-units", "USA,CHN", "--max-items", "3", "--out", str(out), "--no-progress", *extra,
        ],
    )


def test_eval_writes_results_table_and_plot(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    r = _eval(tiny_model_dir, out, "--method", "vanilla,persona")
    assert r.exit_code == 0, r.output
    for m in ("vanilla", "persona"):
        res = json.loads((out / f"eval-wvs-shares-{m}.json").read_text())
        assert res["schema"] == "pluralign.eval/1"
        assert res["method"] == m
        assert res["dataset"]["kind"] == "distributional"
        assert sorted(res["dataset"]["groups"]) == ["China", "United States"]
        assert res["metrics"]["n"] == len(res["predictions"]) > 0
        assert 0 <= res["metrics"]["emd"] <= 1
        assert {"uniform", "train_mean"} <= set(res["references"])  # + culture_map_knn where the map covers the countries
        for row in res["predictions"]:
            assert abs(sum(row["probs"]) - 1) < 1e-4
    # vanilla prompts are shared across countries: scored once per item
    van = json.loads((out / "eval-wvs-shares-vanilla.json").read_text())
    per = json.loads((out / "eval-wvs-shares-persona.json").read_text())
    assert van["timing"]["prompts"] == 3
    assert per["timing"]["prompts"] == per["metrics"]["n"] > van["timing"]["prompts"]  # one per (country, item)
    assert (out / "summary.png").stat().st_size > 1000
    assert "| vanilla |" in r.stdout and "| ref:train_mean |" in r.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--method", "nope"], "unknown method"),
        (["--data", "does/not/exist.tsv"], "does/not/exist.tsv"),
        (["--test-units", "XXX"], "XXX"),
        (["--scoring", "magic"], "unknown scoring"),
    ],
)
def test_eval_bad_input_is_one_line_and_keeps_earlier_results(tiny_model_dir, tmp_path, args, needle):
    out = tmp_path / "run"
    ok = _eval(tiny_model_dir, out, "--method", "vanilla")
    assert ok.exit_code == 0, ok.output
    before = (out / "eval-wvs-shares-vanilla.json").read_bytes()
    r = _eval(tiny_model_dir, out, *args)
    assert r.exit_code == 2
    err_lines = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(err_lines) == 1 and needle in err_lines[0], r.output
    assert "Traceback" not in r.output
    assert (out / "eval-wvs-shares-vanilla.json").read_bytes() == before


def test_eval_model_without_chat_template_uses_plain_format(tmp_path, tiny_model_dir, monkeypatch):
    """Every prompt the scorer reads is build_chat_prompt's plain format ("System: ...\n\nUser: ...
    \n\nAssistant: "), the persona in the system turn, not the template's turns."""
    import shutil

    from pluralign.evaluation.scoring import OptionScorer

    assert list(tiny_model_dir.glob("chat_template.*"))  # the model itself has a template (its turns: "<s>system")
    d = tmp_path / "plain"
    shutil.copytree(tiny_model_dir, d)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    for f in d.glob("chat_template.*"):
        f.unlink()
    scored: list[str] = []
    real = OptionScorer._encode_prompt

    def spy(self, text, limit=None):
        scored.append(text)
        return real(self, text, limit)

    monkeypatch.setattr(OptionScorer, "_encode_prompt", spy)
    r = _eval(d, tmp_path / "out", "--method", "persona")
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "out" / "eval-wvs-shares-persona.json").read_text())
    assert res["metrics"]["n"] == len(res["predictions"]) > 0
    assert len(set(scored)) == res["timing"]["prompts"] > 0  # one per (country, item), each scored as below
    for p in scored:
        system, _, rest = p.partition("\n\nUser: ")
        assert system.startswith("System: ") and rest and p.endswith("\n\nAssistant: "), repr(p)
        assert ("China" in system) != ("United States" in system), system  # the persona in the system turn
        assert "<s>" not in p and "</s>" not in p, repr(p)
