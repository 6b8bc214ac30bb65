"""The CLI matrix of issue 9: every command with every class of bad option or input ends with
exit status 2, exactly one ``error:`` line on stderr, no traceback, and a pre-existing output
folder untouched (checksums). Everything here fails before a model loads, so it is fast.

The parameter ids are ``CLASS/command/N``; ``scripts/reliability_table.py`` counts them into
docs/reliability.md.
"""

from __future__ import annotations

import json
import os

import pytest

from reliability._helpers import assert_one_error, invoke, tree_digest

SP = ["softprompt", "--country", "USA"]
WT = ["wordassoc", "train"]
WE = ["wordassoc", "eval"]

#: (class, args); OUT is replaced by a pre-existing output folder, FILES/x by a fixture file
CASES: list[tuple[str, list[str]]] = [
    # zero or negative counts
    *[("count", a) for a in (
        ["eval", "--max-items", "0"], ["eval", "--max-items", "-1"], ["eval", "--batch-size", "0"],
        ["eval", "--batch-size", "-1"], ["eval", "--k-shot", "-1"],
        ["train", "--steps", "0"], ["train", "--batch-size", "-1"], ["train", "--grad-accum", "0"], ["train", "--rank", "0"],
        ["train", "--save-steps", "-1"], ["train", "--logging-steps", "0"], ["train", "--max-examples", "0"],
        ["train", "--top-layers", "0"], ["train", "--experts", "0"],
        [*SP, "--gens", "-1"], [*SP, "--pop", "1"], [*SP, "--pop", "3"], [*SP, "--tokens", "0"], [*SP, "--batch-size", "0"],
        [*SP, "--knowledge", "-1"],
        [*WT, "--sft-steps", "0"], [*WT, "--lora-r", "0"], [*WT, "--batch-size", "0"], [*WT, "--num-generations", "1"],
        [*WE, "--eval-cues", "0"], [*WE, "--ks", "0"], [*WE, "--ks", "5,x"], [*WE, "--num-samples", "0"],
        ["data", "inspect", "wvs-shares", "--top", "0"],
    )],
    # NaN / inf / out-of-range numbers
    *[("number", a) for a in (
        ["train", "--lr", "nan"], ["train", "--lr", "inf"], ["train", "--lr", "-1"], ["train", "--test-frac", "nan"],
        ["train", "--warmup-ratio", "2"], ["train", "--epochs", "nan"], ["train", "--dpo-beta", "0"],
        ["eval", "--test-frac", "nan"], ["eval", "--test-frac", "1.5"],
        [*SP, "--de-f", "nan"], [*SP, "--init-scale", "inf"], [*SP, "--de-cr", "2"], [*SP, "--cma-sigma", "0"],
        [*WT, "--sft-lr", "nan"], [*WE, "--temperature", "nan"], [*WE, "--temperature", "0"],
    )],
    # unknown choices (the error lists the valid ones)
    *[("choice", a) for a in (
        ["eval", "--labels", "nosuch"], ["eval", "--scoring", "nosuch"], ["eval", "--split", "nosuch"],
        ["eval", "--method", "nosuch"], ["eval", "--dtype", "nosuch"], ["eval", "--device", "nosuch"],
        ["train", "--method", "nosuch"], ["train", "--labels", "nosuch"], ["train", "--task", "nosuch"],
        ["train", "--soft-label-norm", "nosuch"], ["train", "--split", "none"],
        [*SP, "--optimizer", "nosuch"], [*SP, "--reduction", "nosuch"],
        [*WT, "--stage", "nosuch"], [*WT, "--reward", "nosuch"], [*WT, "--sft-tasks", "nosuch"], [*WT, "--on-bad-row", "x"],
        [*WE, "--split", "nosuch"], [*WE, "--tasks", "nosuch"],
        ["compare", "FILES/results-ok.json", "--name", "nosuch"],
    )],
    # a bad --config file of `train`
    *[("config", ["train", "--config", f"FILES/{f}"]) for f in (
        "cfg-steps-many.json", "cfg-unknown.json", "cfg-list.json", "cfg-nan.json", "cfg-broken.json", "cfg-utf16-bad.json",
        "cfg-bool-steps.json", "cfg-lr-string.json", "cfg-labels.json",
    )],
    # unreadable or malformed input files
    *[("input file", a) for a in (
        ["data", "inspect", "wvs-shares:FILES/binary.json"], ["data", "inspect", "wvs-shares:FILES/deep.json"],
        ["data", "inspect", "wvs-shares:FILES/nan-token.json"], ["data", "inspect", "wvs-shares:FILES/culturespa-nan"],
        ["data", "inspect", "wvs-shares:FILES/culturespa-inf"], ["data", "inspect", "globalopinionqa:FILES/latin1.csv"],
        ["data", "inspect", "globalopinionqa:FILES/binary.json"], ["data", "inspect", "wvs-probe:FILES/utf16-nobom.tsv"],
        ["data", "inspect", "wvs-shares:FILES"], ["data", "inspect", "FILES/missing.csv"],
        ["eval", "--data", "wvs-shares:FILES/culturespa-nan"], ["eval", "--data", "wvs-shares:FILES/nan-token.json"],
        [*WE, "--data", "FILES/swow-binary.csv"], [*WE, "--data", "FILES/swow-utf16-bad.csv"], [*WT, "--data", "FILES/swow-huge.csv"],
        [*WE, "--data", "FILES/swow-latin1.csv"],
    )],
    # outputs that cannot be written, found before any work
    *[("output", a) for a in (
        ["eval", "--out", "FILES/a-file"], ["eval", "--out", "FILES/a-file/below"], ["train", "--out", "FILES/a-file"],
        [*SP, "--out", "FILES/a-file"], [*WT, "--out", "FILES/a-file"], [*WE, "--out", "FILES"],
        ["compare", "FILES/results-ok.json", "--out", "FILES"],
    )],
    # results files compare cannot read
    *[("results file", ["compare", f"FILES/{f}"]) for f in (
        "results-no-dataset.json", "results-null-metrics.json", "results-broken.json", "results-list.json",
        "results-no-refs.json",
    )],
]

HAS_OUT = ("eval", "train", "softprompt", "wordassoc")


def _ids():
    seen: dict[str, int] = {}
    out = []
    for cls, a in CASES:
        cmd = " ".join(a[:2]) if a[0] in ("wordassoc", "data") else a[0]
        k = f"{cls}/{cmd}"
        seen[k] = seen.get(k, 0) + 1
        out.append(f"{k}/{seen[k]}")
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad-inputs")
    w = lambda name, data: (d / name).write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    w("cfg-steps-many.json", '{"steps": "many"}')
    w("cfg-unknown.json", '{"nosuch": 1}')
    w("cfg-list.json", "[1, 2]")
    w("cfg-nan.json", '{"lr": NaN}')
    w("cfg-broken.json", '{"steps": 4')
    w("cfg-utf16-bad.json", '{"steps": "x"}'.encode("utf-16"))
    w("cfg-bool-steps.json", '{"steps": true}')
    w("cfg-lr-string.json", '{"lr": "fast"}')
    w("cfg-labels.json", '{"labels": "nosuch"}')
    w("binary.json", bytes(range(256)) * 8)
    w("deep.json", "[" * 100_000 + "]" * 100_000)
    w("nan-token.json", '{"items": [], "shares": {"USA": {"Q1": [NaN, 1]}}}')
    for name, share in (("culturespa-nan", '"NaN"'), ("culturespa-inf", "Infinity")):
        (d / name).mkdir()
        (d / name / "wvs_questions.json").write_text(json.dumps([{"Q_id": "Q1", "question": "Q?", "option_lst": ["a", "b"]}]))
        (d / name / "proportions_group_by_country.json").write_text('{"USA": {"Q1": {"1": %s, "2": 0.5}}}' % share)
    w("latin1.csv", "question,selections,options\nCaf\xe9?,\"{'France': [0.5, 0.5]}\",\"['Oui', 'Non']\"\n".encode("latin-1"))
    w("utf16-nobom.tsv", "question_id\tquestion_text\n".encode("utf-16-le"))
    w("swow-binary.csv", bytes(range(256)) * 4)
    w("swow-utf16-bad.csv", b"\xff\xfe" + b"\x00\xd8" * 10)  # BOM, then unpaired surrogates
    w("swow-huge.csv", "cue,response,R1,N,R1.Strength\n" + '"' + "x" * 200_000 + '",b,1,2,0.5\n')
    w("swow-latin1.csv", "cue,response,R1,N,R1.Strength\ncaf\xe9,b,1,2,0.5\n".encode("latin-1"))
    w("a-file", "not a folder")
    ok = {"dataset": {"kind": "distributional", "name": "x"}, "method": "vanilla",
          "metrics": {"n": 1, "emd": 0.1, "emd_by_group": {"std": 0.0}}, "references": {}}
    w("results-ok.json", json.dumps(ok))
    w("results-no-dataset.json", json.dumps({k: v for k, v in ok.items() if k != "dataset"}))
    w("results-null-metrics.json", json.dumps(dict(ok, metrics=None)))
    w("results-broken.json", '{"metrics": ')
    w("results-list.json", "[]")
    w("results-no-refs.json", json.dumps({k: v for k, v in ok.items() if k != "references"}))
    return d


def _expand(args, files, out):
    if args[0] not in HAS_OUT or "--out" in args:
        extra = []
    else:  # wordassoc eval writes one file, the others a folder
        extra = ["--out", str(out / "eval-wordassoc.json" if args[:2] == WE else out)]
    return [str(a).replace("FILES", str(files)) for a in args] + extra


@pytest.mark.parametrize("cls, args", CASES, ids=_ids())
def test_bad_input_gives_one_error_line_and_changes_nothing(cls, args, files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "earlier-run"
    out.mkdir()
    (out / "eval-wvs-shares-vanilla.json").write_text('{"earlier": true}\n')
    (out / "summary.json").write_text('{"earlier": true}\n')
    before, files_before = tree_digest(out), tree_digest(files)
    res = invoke(_expand(args, files, out))
    line = assert_one_error(res)
    assert tree_digest(out) == before, line
    assert tree_digest(files) == files_before, line
    assert sorted(os.listdir(tmp_path)) == ["earlier-run"], line  # no half-made output folder anywhere
    if cls == "choice":
        assert "valid" in line or "available" in line or "use one of" in line or "(" in line, line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_is_refused_before_work(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert_one_error(invoke(["eval", "--out", ro / "eval"]), contains="cannot write")
    finally:
        ro.chmod(0o755)
