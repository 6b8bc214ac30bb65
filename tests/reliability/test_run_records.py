"""Run records and result files (issue 27, classes 6, 7 and 9): ``compare`` never writes over an
input or a file that is not its own table; an interrupted ``report`` leaves the earlier page with its
own plots; a training run records its data by absolute path and content hash and refuses a resume
after the data changed; an evaluation's files are named after the data, not the loader."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from reliability._helpers import QUESTIONS, assert_one_error, eval_args, invoke, stderr_of, tree_digest, train_args

pytestmark = pytest.mark.usefixtures("one_thread")
SHIPPED = Path(__file__).resolve().parents[2] / "src" / "pluralign" / "data" / "resources" / "wvs7_country_shares.json"


@pytest.fixture(scope="module")
def evals(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ev") / "ev"
    res = invoke(eval_args(tiny_model_dir, out, methods="vanilla,persona"))
    assert res.exit_code == 0, (res.output, stderr_of(res))
    return out


# ------------------------------------------------------------------------------------------ compare
def test_compare_refuses_to_write_over_an_input(evals):
    f = evals / "eval-wvs-shares-vanilla.json"
    before = tree_digest(evals)
    assert_one_error(invoke(["compare", f, evals / "eval-wvs-shares-persona.json", "--out", f]), contains="--out")
    assert_one_error(invoke(["compare", evals, "--diff-out", f]), contains="--diff-out")
    assert tree_digest(evals) == before
    json.loads(f.read_text())  # still the results


def test_compare_refuses_a_file_that_is_not_its_table_and_rewrites_its_own(evals, tmp_path):
    notes = tmp_path / "notes.md"
    notes.write_text("# my notes\n\nkeep me\n")
    assert_one_error(invoke(["compare", evals, "--out", notes]), contains="not a table")
    assert notes.read_text() == "# my notes\n\nkeep me\n"
    table = tmp_path / "table.md"
    res = invoke(["compare", evals, "--out", table])
    assert res.exit_code == 0, res.output
    first = table.read_text()
    assert first.startswith("|")
    res = invoke(["compare", evals, "--out", table])  # its own earlier table: replaced
    assert res.exit_code == 0, res.output
    assert table.read_text() == first


def test_compare_refuses_one_file_for_both_tables(evals, tmp_path):
    assert_one_error(invoke(["compare", evals, "--out", tmp_path / "t.md", "--diff-out", tmp_path / "t.md"]), contains="--diff-out")
    assert not (tmp_path / "t.md").exists()


# ------------------------------------------------------------------------------------------ report
def test_an_interrupted_report_leaves_the_earlier_page_and_its_plots(evals, tmp_path, monkeypatch):
    import pluralign.analysis.report as report

    out = tmp_path / "rep"
    res = invoke(["report", evals, "--out", out])
    assert res.exit_code == 0, res.output
    (out / "notes.txt").write_text("mine")
    before = tree_digest(out)
    assert any(n.endswith(".png") for n in before) and "index.html" in before

    def killed(runs, out, **kw):  # the plots of the metric sections are written; the page is not
        assert any(Path(out).glob("*.png"))
        (Path(out) / "group-emd-distributional.png").write_bytes(b"a new plot")
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "_training_section", lambda runs, out: killed(runs, out))
    with pytest.raises(KeyboardInterrupt):
        report.build_report([evals], out, title="new title")
    assert tree_digest(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["rep"]  # no staging folder left
    monkeypatch.undo()
    report.build_report([evals], out, title="new title")
    assert "new title" in (out / "index.html").read_text() and (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("where", [".", "train-run"])
def test_report_refuses_the_working_folder_and_a_runs_folder(evals, tmp_path, monkeypatch, where):
    run = tmp_path / "train-run"
    run.mkdir()
    (run / "train_config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    before = tree_digest(tmp_path)
    assert_one_error(invoke(["report", evals, "--out", where]), contains="--out")
    assert tree_digest(tmp_path) == before


# ------------------------------------------------------------------------------------------ data records
def _train(model, out, data, *extra):
    args = train_args(model, out, steps=1, save_steps=1, extra=list(extra))
    args[args.index("--data") + 1] = data
    return args


def test_a_run_records_its_data_absolute_with_hashes_and_refuses_edited_data(tiny_model_dir, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    shutil.copyfile(SHIPPED, work / "wvs7_country_shares.json")
    monkeypatch.chdir(work)
    res = invoke(_train(tiny_model_dir, tmp_path / "run", "wvs7_country_shares.json"))
    assert res.exit_code == 0, (res.output, stderr_of(res))
    full = str((work / "wvs7_country_shares.json").resolve())
    cfg = json.loads((tmp_path / "run" / "train_config.json").read_text())
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert cfg["data"] == split["data"] == full
    assert list(split["data_files"]) == [full] and len(split["data_files"][full]) == 64
    # the same data from another folder, named relatively from there: the run resumes (it is finished)
    monkeypatch.chdir(tmp_path)
    res = invoke(_train(tiny_model_dir, tmp_path / "run", "work/wvs7_country_shares.json", "--resume"))
    assert res.exit_code == 0, (res.output, stderr_of(res))
    # the data edited (still valid): refused, naming the file
    (work / "wvs7_country_shares.json").write_text(SHIPPED.read_text() + "\n")
    before = tree_digest(tmp_path / "run")
    line = assert_one_error(invoke(_train(tiny_model_dir, tmp_path / "run", full, "--resume")), contains=full)
    assert "changed" in line
    (work / "wvs7_country_shares.json").unlink()
    line = assert_one_error(invoke(_train(tiny_model_dir, tmp_path / "run", full, "--resume")), contains=full)
    assert tree_digest(tmp_path / "run") == before


# ------------------------------------------------------------------------------------------ result names
def test_an_eval_of_a_culturespa_folder_is_named_after_the_folder(tiny_model_dir, tmp_path):
    spa = tmp_path / "spa-2025"
    spa.mkdir()
    shutil.copyfile(SHIPPED, spa / "proportions_group_by_country.json")
    out = tmp_path / "ev"
    args = eval_args(tiny_model_dir, out, methods="vanilla")
    args[args.index("--data") + 1] = spa
    res = invoke(args)
    assert res.exit_code == 0, (res.output, stderr_of(res))
    names = sorted(p.name for p in out.glob("eval-*.json"))
    assert names == ["eval-spa-2025-vanilla.json"], names
    # a named dataset keeps its name
    from pluralign.data.fingerprint import data_label

    assert data_label("wvs-shares", "wvs-shares") == "wvs-shares"
    assert data_label(f"wvs-shares:{spa / 'proportions_group_by_country.json'}", "wvs-shares") == "proportions_group_by_country"
    assert data_label(str(spa), "mysurvey") == "mysurvey"  # data that names itself (a YAML questionnaire) keeps its name


def test_a_run_records_its_base_model_files_and_refuses_a_replaced_model(tiny_model_dir, tmp_path):
    """A local base model's weights, configuration and tokenizer files are recorded (size and a
    digest of both ends); a resume after one was replaced at the same path is refused, naming it."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    run = tmp_path / "run"
    res = invoke(train_args(model, run))
    assert res.exit_code == 0, (res.output, stderr_of(res))
    rec = json.loads((run / "split.json").read_text())["model_files"]
    weights = [f for f in rec if f.endswith(".safetensors")]
    assert weights and str((model / "config.json").resolve()) in rec
    res = invoke(train_args(model, run, extra=("--resume",)))  # unchanged: resumes (finished: nothing to do)
    assert res.exit_code == 0, (res.output, stderr_of(res))
    before = tree_digest(run)
    w = Path(weights[0])
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF  # the same size, another last byte: a re-saved model
    w.write_bytes(bytes(data))
    line = assert_one_error(invoke(train_args(model, run, extra=("--resume",))), contains=str(w))
    assert "changed" in line and "--model" in line
    w.unlink()
    assert "gone" in assert_one_error(invoke(train_args(model, run, extra=("--resume",))), contains=str(w))
    assert tree_digest(run) == before


def test_model_files_of_a_hub_id_are_not_recorded():
    from pluralign.models.loading import model_files

    assert model_files("Qwen/Qwen3-8B") == {}
