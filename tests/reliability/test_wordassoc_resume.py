"""`pluralign wordassoc train` into a folder that already holds a stage (issue 27, class 8): it
continues only with the same settings, refusing (one line naming the flags, nothing changed) a
re-run whose settings differ, one asking for fewer steps than were trained, and checkpoints whose
settings were never recorded; a finished stage is not trained again and its adapter is kept."""

from __future__ import annotations

import json
import shutil

import pytest

from reliability._helpers import assert_one_error, invoke, stderr_of, tree_digest

pytestmark = pytest.mark.usefixtures("one_thread")


def _swow(path):
    f = path / "strength.SWOW-EN.R1.csv"
    f.write_text("cue,response,R1,N,R1.Strength\n" + "".join(
        f"cue{i},resp{j},{5 - j},20,{(5 - j) / 20}\n" for i in range(60) for j in range(4)))
    return f


def wa_args(model, data, out, *extra):
    args = ["wordassoc", "train", "--stage", "sft", "--model", model, "--data", data, "--min-responses", "1", "--sft-steps", "2",
            "--batch-size", "2", "--lora-r", "4", "--device", "cpu", "--no-progress", "--out", out]
    for j in range(0, len(extra), 2):  # replace a flag given above, or add it
        if extra[j] in args:
            args[args.index(extra[j]) + 1] = extra[j + 1]
        else:
            args += list(extra[j:j + 2])
    return args


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("wa")
    data = _swow(root)
    out = root / "wa"
    res = invoke(wa_args(tiny_model_dir, data, out))
    assert res.exit_code == 0, (res.output, stderr_of(res))
    assert (out / "sft" / "settings.json").is_file() and (out / "sft" / "adapter").is_dir()
    return data, out


@pytest.mark.parametrize("change, flag", [
    (("--seed", "1"), "--seed"), (("--lora-r", "8"), "--lora-r"), (("--sft-lr", "0.01"), "--sft-lr"),
    (("--train-cues", "20"), "--train-cues"), (("--n-targets", "2"), "--n-targets"), (("--split-seed", "3"), "--split-seed"),
    (("--held-out-pairs", "keep"), "--held-out-pairs"), (("--batch-size", "4"), "--batch-size"),
])
def test_a_rerun_with_other_settings_is_refused_naming_the_flag(trained, tiny_model_dir, change, flag):
    data, out = trained
    before = tree_digest(out)
    line = assert_one_error(invoke(wa_args(tiny_model_dir, data, out, *change)), contains=flag)
    assert "settings" in line
    assert tree_digest(out) == before


def test_a_rerun_with_another_model_is_refused_before_it_loads(trained, tmp_path):
    data, out = trained
    before = tree_digest(out)
    assert_one_error(invoke(wa_args(tmp_path / "other-model", data, out)), contains="--model")
    assert tree_digest(out) == before


def test_a_finished_stage_is_not_trained_again(trained, tiny_model_dir):
    data, out = trained
    before = tree_digest(out)
    res = invoke(wa_args(tiny_model_dir, data, out))
    assert res.exit_code == 0, (res.output, stderr_of(res))
    assert "already finished" in stderr_of(res)
    assert tree_digest(out) == before  # the adapter and its record are the earlier run's


def test_fewer_steps_than_trained_is_refused(trained, tiny_model_dir):
    data, out = trained
    before = tree_digest(out)
    assert_one_error(invoke(wa_args(tiny_model_dir, data, out, "--sft-steps", "1")), contains="already ran 2 steps")
    assert tree_digest(out) == before


def test_checkpoints_without_recorded_settings_are_refused(trained, tiny_model_dir, tmp_path):
    data, out = trained
    other = tmp_path / "old"
    shutil.copytree(out, other)
    (other / "sft" / "settings.json").unlink()
    before = tree_digest(other)
    assert_one_error(invoke(wa_args(tiny_model_dir, data, other)), contains="not recorded")
    assert tree_digest(other) == before


def test_more_steps_continue_the_checkpoint(trained, tiny_model_dir, tmp_path):
    data, out = trained
    more = tmp_path / "more"
    shutil.copytree(out, more)
    res = invoke(wa_args(tiny_model_dir, data, more, "--sft-steps", "3"))
    assert res.exit_code == 0, (res.output, stderr_of(res))
    summary = json.loads((more / "sft" / "summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-2") and summary["config"]["max_steps"] == 3
