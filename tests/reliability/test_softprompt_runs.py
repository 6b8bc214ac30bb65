"""A soft-prompt search's output folder and its resumption (issue 27, classes 6 and 8): a folder
holds one search; a rerun without ``--resume``, a training or evaluation folder, and a folder
another process is writing are refused; ``--resume`` with a setting that changes the search is
refused naming the flag; nothing is deleted by a refusal."""

from __future__ import annotations

import subprocess
import sys

import pytest

from reliability._helpers import assert_one_error, invoke, tree_digest, train_args

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["--tokens", "2", "--pop", "4", "--seed", "0", "--batch-size", "48", "--no-progress", "--wordings", "original",
        "--no-reworded-check", "--calibration-countries", "GBR,DEU", "--subspace-dim", "8"]


def sp_args(model, out, *extra, gens="1"):
    return ["softprompt", "--country", "USA", "--model", model, "--gens", gens, *FAST, *extra, "--out", out]


@pytest.fixture(scope="module")
def search(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sp") / "search"
    res = invoke(sp_args(tiny_model_dir, out))
    assert res.exit_code == 0, res.output
    assert (out / "results.json").is_file() and (out / "checkpoint.pkl").is_file()
    return out


def test_a_rerun_without_resume_is_refused_and_keeps_the_search(search, tiny_model_dir):
    before = tree_digest(search)
    line = assert_one_error(invoke(sp_args(tiny_model_dir, search)), contains="--out")
    assert "--resume" in line
    assert tree_digest(search) == before


@pytest.mark.parametrize("change, flag", [
    (["--pop", "6"], "--pop"), (["--seed", "1"], "--seed"), (["--constants", "PDI=40"], "--constants"),
    (["--init-scale", "0.5"], "--init-scale"), (["--de-f", "0.7"], "--de-f"), (["--reduction", "sum"], "--reduction"),
    (["--no-chat-template"], "--chat-template"), (["--subspace-scale", "2"], "--subspace-scale"),
    (["--objective", "l1-c50"], "--objective"), (["--wordings", "original,reworded"], "--wordings"),
])
def test_resume_with_a_changed_setting_is_refused_naming_it(search, tiny_model_dir, change, flag):
    before = tree_digest(search)
    args = sp_args(tiny_model_dir, search, "--resume")
    i = args.index("--out")
    for j in range(0, len(change), 2):  # replace a flag given in FAST, or add it
        if change[j] in args[:i]:
            args[args.index(change[j]) + 1] = change[j + 1]
        else:
            args[i:i] = change[j:j + 2]
    line = assert_one_error(invoke(args), contains=flag)
    assert "--resume" in line
    assert tree_digest(search) == before


def test_resume_with_another_model_is_refused_before_it_loads(search, tmp_path):
    before = tree_digest(search)
    line = assert_one_error(invoke(sp_args(tmp_path / "no-such-model", search, "--resume")), contains="--model")
    assert "no-such-model" in line
    assert tree_digest(search) == before


def test_resume_without_a_checkpoint_is_one_error(tiny_model_dir, tmp_path):
    assert_one_error(invoke(sp_args(tiny_model_dir, tmp_path / "fresh", "--resume")), contains="nothing to resume")
    assert not (tmp_path / "fresh").exists()


def test_softprompt_into_a_training_folder_is_refused(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_config.json").write_text("{}")
    (run / "log.jsonl").write_text('{"loss": 1.0}\n')
    before = tree_digest(run)
    assert_one_error(invoke(sp_args(tiny_model_dir, run)), contains="pluralign train")
    assert tree_digest(run) == before


def test_train_into_a_softprompt_folder_is_refused(search, tiny_model_dir):
    before = tree_digest(search)
    assert_one_error(invoke(train_args(tiny_model_dir, search)), contains="pluralign softprompt")
    assert tree_digest(search) == before


def test_eval_into_a_softprompt_folder_is_refused(search, tiny_model_dir):
    from reliability._helpers import eval_args

    before = tree_digest(search)
    assert_one_error(invoke(eval_args(tiny_model_dir, search)), contains="pluralign softprompt")
    assert tree_digest(search) == before


_HOLD = """
import sys, time
from pluralign.io import claim_output
claim_output(sys.argv[1], "softprompt")
print("held", flush=True)
time.sleep(30)
"""


def test_a_folder_another_run_is_writing_is_refused(tiny_model_dir, tmp_path):
    out = tmp_path / "busy"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert_one_error(invoke(sp_args(tiny_model_dir, out)), contains="another pluralign run")
    finally:
        holder.kill()
        holder.wait()
    assert list(out.iterdir()) == []
