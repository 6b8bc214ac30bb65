"""A second audit (issue 27, "done when"): command-line cases not in the other reliability tests,
tried as a new user would: bad flags, bad or empty files, odd output folders, resume mismatches,
for eval, train, softprompt, wordassoc, compare, report and generate-eval. Each case ends with exit
status 2 and one ``error:`` line (or exit 0 and the right output), no traceback, and every earlier
file (the pre-existing output folder, the input files) unchanged.

The parameter ids are ``audit2/command/N``; ``scripts/reliability_table.py`` counts them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from reliability._helpers import QUESTIONS, assert_one_error, invoke, stderr_of, tree_digest

SHIPPED = Path(__file__).resolve().parents[2] / "src" / "pluralign" / "data" / "resources" / "wvs7_country_shares.json"
SP = ["softprompt", "--country", "USA"]
WT = ["wordassoc", "train", "--min-responses", "1", "--device", "cpu", "--no-progress"]
WE = ["wordassoc", "eval", "--min-responses", "1", "--device", "cpu", "--no-transfer", "--no-progress"]
EV = ["eval", "--no-plot", "--no-progress"]
TR = ["train", "--no-progress"]

#: (args, needle in the error line). FILES/x is a fixture file, OUT a pre-existing output folder, MODEL the tiny model
CASES: list[tuple[list[str], str]] = [
    # eval: data selections naming nothing that exists
    ([*EV, "--countries", "ZZZ", "--out", "OUT"], "ZZZ"),
    ([*EV, "--questions", "Q99999", "--out", "OUT"], "Q99999"),
    ([*EV, "--split", "country", "--test-units", "ATLANTIS", "--out", "OUT"], "ATLANTIS"),
    ([*EV, "--data", "no-such-dataset", "--out", "OUT"], "no-such-dataset"),
    ([*EV, "--data", "FILES/empty.json", "--out", "OUT"], "empty.json"),
    ([*EV, "--data", "FILES/empty-folder", "--out", "OUT"], "empty-folder"),
    ([*EV, "--data", "FILES/no-items.yaml", "--out", "OUT"], "no-items.yaml"),
    ([*EV, "--reference-data", "no-such-dataset", "--out", "OUT"], "no-such-dataset"),
    ([*EV, "--split-from", "FILES/empty-folder", "--out", "OUT"], "empty-folder"),
    ([*EV, "--soft-prompt", "FILES/empty-folder", "--out", "OUT"], "empty-folder"),
    ([*EV, "--adapter", "FILES/a-file.txt", "--out", "OUT"], "a-file.txt"),
    ([*EV, "--out", "FILES/results.json"], "--out"),
    # train
    ([*TR, "--data", "FILES/empty.json", "--out", "OUT"], "empty.json"),
    ([*TR, "--test-frac", "0", "--split", "country", "--data", "wvs-shares", "--out", "OUT"], "test"),
    ([*TR, "--test-frac", "1", "--split", "country", "--data", "wvs-shares", "--out", "OUT"], "test"),
    ([*TR, "--init-adapter", "FILES/empty-folder", "--out", "OUT"], "empty-folder"),
    ([*TR, "--config", "FILES/empty.json", "--out", "OUT"], "empty.json"),
    ([*TR, "--resume", "--out", "FILES/never-made"], "resume"),
    ([*TR, "--out", ""], "--out"),
    ([*TR, "--countries", "ZZZ", "--data", "wvs-shares", "--task", "distributional", "--out", "OUT"], "ZZZ"),
    # softprompt
    (["softprompt", "--country", "ATLANTIS", "--out", "OUT"], "ATLANTIS"),
    (["softprompt", "--country", "", "--out", "OUT"], "--country"),
    ([*SP, "--wordings", "nosuch", "--out", "OUT"], "nosuch"),
    ([*SP, "--objective", "nosuch", "--out", "OUT"], "nosuch"),
    ([*SP, "--calibration-countries", "USA", "--out", "OUT"], "--calibration-countries"),
    ([*SP, "--calibration-countries", "ATLANTIS", "--out", "OUT"], "ATLANTIS"),
    ([*SP, "--out", ""], "--out"),
    ([*SP, "--resume", "--out", "OUT"], "resume"),
    # wordassoc
    ([*WT, "--data", "FILES/swow-header-only.csv", "--out", "OUT"], "swow-header-only.csv"),
    ([*WT, "--data", "FILES/swow-no-strength.csv", "--out", "OUT"], "swow-no-strength.csv"),
    ([*WT, "--stage", "rl", "--adapter", "FILES/empty-folder", "--data", "FILES/swow.csv", "--model", "MODEL", "--out", "OUT"], "empty-folder"),
    ([*WE, "--adapter", "FILES/empty-folder", "--data", "FILES/swow.csv", "--model", "MODEL", "--out", "OUT/e.json"], "empty-folder"),
    (["wordassoc", "report", "FILES/never-made.json"], "never-made.json"),
    (["wordassoc", "report", "FILES/results.json"], "results.json"),
    # compare
    (["compare", "FILES/never-made.json"], "never-made.json"),
    (["compare", "FILES/empty-folder"], "empty-folder"),
    (["compare", "FILES/empty.json"], "empty.json"),
    (["compare", "FILES/softprompt-results.json"], "softprompt-results.json"),
    (["compare", "FILES/results.json", "--out", "FILES/a-file.txt/t.md"], "a-file.txt"),
    # outputs that would replace another command's file or an input
    ([*WE, "--data", "FILES/swow.csv", "--eval-cues", "2", "--model", "MODEL", "--out", "FILES/results.json"], "results.json"),
    (["wordassoc", "report", "FILES/wa-result.json", "--out", "FILES/wa-result.json"], "wa-result.json"),
    (["wordassoc", "report", "FILES/wa-result.json", "--out", "FILES/results.json"], "results.json"),
    (["softprompt", "--country", "USA", "--out", "FILES/results-folder"], "pluralign eval"),
    ([*TR, "--out", "FILES/results-folder"], "pluralign eval"),
    ([*EV, "--out", "FILES/results-folder/eval-wvs-shares-vanilla.json"], "--out"),
    # report
    (["report", "FILES/empty-folder", "--out", "OUT"], "empty-folder"),
    (["report", "FILES/results-folder", "--analysis", "FILES/results.json", "--out", "OUT"], "results.json"),
    (["report", "FILES/results-folder", "--out", "FILES/a-file.txt"], "a-file.txt"),
    # generate-eval
    (["generate-eval", "--adapter", "FILES/empty-folder", "--out", "OUT/g.json"], "empty-folder"),
    (["generate-eval", "--adapter", "FILES/a-file.txt", "--model", "MODEL", "--out", "OUT/g.json"], "a-file.txt"),
]


def _ids():
    seen: dict[str, int] = {}
    out = []
    for a, _ in CASES:
        cmd = " ".join(a[:2]) if a[0] == "wordassoc" else a[0]
        seen[cmd] = seen.get(cmd, 0) + 1
        out.append(f"audit2/{cmd}/{seen[cmd]}")
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("audit2")
    (d / "empty.json").write_bytes(b"")
    (d / "empty-folder").mkdir()
    (d / "a-file.txt").write_text("not a folder")
    (d / "no-items.yaml").write_text("name: s\nitems: []\ngroups:\n  France:\n    profile: {country: France}\n")
    (d / "swow-header-only.csv").write_text("cue,response,R1,N,R1.Strength\n")
    (d / "swow-no-strength.csv").write_text("cue,response\n" + "".join(f"c{i},r{i}\n" for i in range(20)))
    (d / "swow.csv").write_text("cue,response,R1,N,R1.Strength\n" + "".join(
        f"cue{i},resp{j},{8 - j},40,{(8 - j) / 40}\n" for i in range(60) for j in range(7)))
    res = {"schema": "pluralign.softprompt/1", "model": "x", "country": {"code": "USA"}, "naive": {"loss": 1.0}}
    (d / "softprompt-results.json").write_text(json.dumps(res))
    return d


@pytest.fixture(scope="module")
def results(files, tiny_model_dir):
    """A real evaluation result (one question) for the cases that need one."""
    out = files / "results-folder"
    r = invoke([*EV, "--model", tiny_model_dir, "--countries", "USA,DEU,THA", "--questions", "Q1,Q2,Q3", "--split", "question",
                "--test-frac", "0.34", "--method", "vanilla", "--out", out])
    assert r.exit_code == 0, (r.output, stderr_of(r))
    shutil.copyfile(next(out.glob("eval-*.json")), files / "results.json")
    r = invoke([*WE, "--model", tiny_model_dir, "--data", files / "swow.csv", "--eval-cues", "2", "--out", files / "wa-result.json"])
    assert r.exit_code == 0, (r.output, stderr_of(r))
    return out


def _fill(args, files, out, model):
    rep = []
    for a in args:
        a = str(a)
        if a.startswith("FILES/"):
            a = str(files / a[len("FILES/"):])
        elif a == "FILES":
            a = str(files)
        elif a.startswith("OUT"):
            a = str(out) + a[3:]
        elif a == "MODEL":
            a = str(model)
        rep.append(a)
    return rep


@pytest.mark.parametrize("args, needle", CASES, ids=_ids())
def test_new_bad_input_gives_one_error_line_and_loses_nothing(args, needle, files, results, tmp_path, tiny_model_dir, one_thread):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier file")
    argv = _fill(args, files, out, tiny_model_dir)
    if "--model" not in argv and (argv[0] in ("eval", "train", "softprompt", "generate-eval") or argv[:2] == ["wordassoc", "train"]):
        at = 2 if argv[0] == "wordassoc" else 1
        argv[at:at] = ["--model", str(tiny_model_dir)]
    before_out, before_files = tree_digest(out), tree_digest(files)
    line = assert_one_error(invoke(argv))
    assert needle in line, line
    assert tree_digest(out) == before_out
    assert tree_digest(files) == before_files


# ------------------------------------------------------------------------------------------ cases that succeed
def test_eval_of_one_question_writes_one_question(files, results, tiny_model_dir, tmp_path, one_thread):
    out = tmp_path / "one"
    r = invoke([*EV, "--model", tiny_model_dir, "--countries", "USA,DEU,THA", "--questions", "Q1", "--split", "country",
                "--test-units", "USA", "--method", "vanilla", "--out", out])
    assert r.exit_code == 0, (r.output, stderr_of(r))
    res = json.loads((out / "eval-wvs-shares-vanilla.json").read_text())
    assert {p["item_id"] for p in res["predictions"]} == {"Q1"}


def test_eval_into_a_folder_with_notes_keeps_them(results, tiny_model_dir, tmp_path, one_thread):
    out = tmp_path / "ev"
    shutil.copytree(results, out)
    (out / "notes.md").write_text("mine")
    r = invoke([*EV, "--model", tiny_model_dir, "--countries", "USA,DEU,THA", "--questions", "Q1,Q2,Q3", "--split", "question",
                "--test-frac", "0.34", "--method", "persona", "--out", out])
    assert r.exit_code == 0, (r.output, stderr_of(r))
    assert (out / "notes.md").read_text() == "mine"
    assert (out / "eval-wvs-shares-vanilla.json").is_file() and (out / "eval-wvs-shares-persona.json").is_file()


def test_compare_of_one_result_prints_a_table(results, tmp_path):
    r = invoke(["compare", results, "--out", tmp_path / "t.md"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "t.md").read_text().startswith("|") and "vanilla" in r.output


def test_compare_of_the_same_file_twice_shows_it_once(results, files):
    f = files / "results.json"
    r = invoke(["compare", f, f])
    assert r.exit_code == 0, r.output
    assert sum(1 for line in r.output.splitlines() if ":vanilla |" in line) == 1, r.output
