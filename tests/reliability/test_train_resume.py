"""Kill-and-resume of `pluralign train` on a tiny model: no run is ever lost (issue 9, items 1, 2, 9, 12, 13).

* SIGKILL inside a checkpoint write, Ctrl-C after a step: ``--resume`` takes the newest complete
  checkpoint, says which, and ends with the weights of an uninterrupted run bit for bit and the
  same reported train loss (over the whole run, not only the resumed steps);
* ``--resume`` of a finished run changes nothing;
* a checkpoint without trainer_state.json (or an empty one) is passed over, never a traceback.
"""

from __future__ import annotations

import json
import shutil
import stat

import pytest
import torch
from safetensors.torch import load_file

from reliability._helpers import assert_one_error, invoke, run_killed, stderr_of, train_args, tree_digest

pytestmark = pytest.mark.usefixtures("one_thread")


def _weights(run):
    return load_file(str(next((run / "adapter").glob("*.safetensors"))))


def _summary(run):
    return json.loads((run / "train_summary.json").read_text())


def _copy_run(src, dst):
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "train_config.json").read_text())
    cfg["out"] = str(dst)
    (dst / "train_config.json").write_text(json.dumps(cfg))


def _same_weights(a, b):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    return all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_dir):
    """An uninterrupted 4-step run (checkpoints at 2 and 4)."""
    run = tmp_path_factory.mktemp("ref") / "run"
    res = invoke(train_args(tiny_model_dir, run))
    assert res.exit_code == 0, res.output
    return run


def test_resume_of_a_finished_run_changes_nothing(reference, tiny_model_dir):
    before = tree_digest(reference)
    res = invoke(train_args(tiny_model_dir, reference, extra=["--resume"]))
    assert res.exit_code == 0, res.output
    assert "finished" in stderr_of(res) and "4 of 4 steps" in stderr_of(res)
    assert tree_digest(reference) == before
    assert _summary(reference)["steps"] == 4


def test_sigkill_during_a_checkpoint_write_then_resume_is_bit_exact(reference, tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    p = run_killed("save", 4, "SIGKILL", train_args(tiny_model_dir, run))
    assert p.returncode == -9, p.stderr[-2000:]
    assert (run / "checkpoints" / "checkpoint-2" / "trainer_state.json").exists()
    assert not (run / "checkpoints" / "checkpoint-4").exists()  # the half-written one is only in the staging folder
    assert not (run / "adapter").exists()
    res = invoke(train_args(tiny_model_dir, run, extra=["--resume"]))
    assert res.exit_code == 0, res.output
    assert "resuming from" in stderr_of(res) and "checkpoint-2" in stderr_of(res)
    assert _same_weights(run, reference)
    s, r = _summary(run), _summary(reference)
    assert s["steps"] == r["steps"] == 4
    assert s["train_loss"] == pytest.approx(r["train_loss"], rel=1e-6)  # the whole run's loss, not steps 3-4 only
    assert s["seconds"] > 0 and s["resumed_from"].endswith("checkpoint-2")
    assert not (run / "checkpoints" / ".staging").exists()
    steps = [json.loads(l)["step"] for l in (run / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)  # one uninterrupted log, no records from the killed attempt past its checkpoint


def test_interrupt_after_a_step_then_resume_is_bit_exact(reference, tiny_model_dir, tmp_path, monkeypatch):
    """Ctrl-C (KeyboardInterrupt, in-process) after step 3; SIGTERM / SIGKILL end the process
    with no clean-up at all, which the subprocess test above covers."""
    from transformers import TrainerCallback

    from pluralign.training.trainer import ConditionalTrainer

    class Interrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                raise KeyboardInterrupt

    real_init = ConditionalTrainer.__init__

    def init(self, *a, **kw):
        real_init(self, *a, **kw)
        self.add_callback(Interrupt())

    run = tmp_path / "run"
    monkeypatch.setattr(ConditionalTrainer, "__init__", init)
    res = invoke(train_args(tiny_model_dir, run))
    assert res.exit_code != 0 and not (run / "adapter").exists()
    monkeypatch.setattr(ConditionalTrainer, "__init__", real_init)
    res = invoke(train_args(tiny_model_dir, run, extra=["--resume"]))
    assert res.exit_code == 0, res.output
    assert _same_weights(run, reference)
    assert _summary(run)["train_loss"] == pytest.approx(_summary(reference)["train_loss"], rel=1e-6)


def test_incomplete_checkpoints_are_passed_over(reference, tiny_model_dir, tmp_path):
    """A newer checkpoint without trainer_state.json, and an empty one, left by a crash of older
    versions: --resume takes the newest complete one and names it; no traceback."""
    run = tmp_path / "run"
    _copy_run(reference, run)
    shutil.rmtree(run / "adapter")
    (run / "train_summary.json").unlink()
    ck = run / "checkpoints"
    shutil.copytree(ck / "checkpoint-2", ck / "checkpoint-3")
    (ck / "checkpoint-3" / "trainer_state.json").unlink()
    (ck / "checkpoint-6").mkdir()
    shutil.rmtree(ck / "checkpoint-4")
    res = invoke(train_args(tiny_model_dir, run, extra=["--resume"]))
    assert res.exit_code == 0, res.output
    err = stderr_of(res)
    assert "checkpoint-2" in err and "checkpoint-3" in err and "checkpoint-6" in err
    assert _same_weights(run, reference)


def test_only_incomplete_checkpoints_resume_says_so_and_a_fresh_start_works(reference, tiny_model_dir, tmp_path):
    """A run killed in its first checkpoint write by older versions (checkpoint-2 written in place,
    left empty), with the run's own configuration: --resume says there is nothing complete to
    resume and names the incomplete folder; a fresh start is allowed."""
    run = tmp_path / "run"
    _copy_run(reference, run)  # train_config.json of these very flags: the configuration check passes
    shutil.rmtree(run / "adapter")
    (run / "train_summary.json").unlink()
    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints" / "checkpoint-2").mkdir(parents=True)  # SIGKILL during an in-place write (old code)
    res = invoke(train_args(tiny_model_dir, run, extra=["--resume"]))
    line = assert_one_error(res, contains="nothing to resume")
    assert "no complete checkpoint" in line and "checkpoint-2" in line and "start afresh" in line, line
    assert not (run / "adapter").exists() and not (run / "train_summary.json").exists()
    (run / "train_config.json").write_text("{}")
    res = invoke(train_args(tiny_model_dir, run, extra=["--resume"]))
    # the config differs first ({} vs the flags): still one clear line
    assert_one_error(res, contains="different configuration")
    res = invoke(train_args(tiny_model_dir, run, steps=2, save_steps=0))
    assert res.exit_code == 0, res.output  # nothing resumable there: a fresh start is allowed
    assert _summary(run)["steps"] == 2 and _summary(run)["resumed_from"] is None and (run / "adapter").is_dir()


def test_a_checkpoint_at_the_last_step_without_adapter_is_restored_not_trained_on(reference, tiny_model_dir, tmp_path):
    """A crash between the last checkpoint and the adapter save: resume restores the final
    checkpoint (the Trainer alone would run a step past --steps)."""
    run = tmp_path / "run"
    _copy_run(reference, run)
    shutil.rmtree(run / "adapter")
    (run / "train_summary.json").unlink()
    res = invoke(train_args(tiny_model_dir, run, extra=["--resume"]))
    assert res.exit_code == 0, res.output
    assert _summary(run)["steps"] == 4 and _same_weights(run, reference)
    assert _summary(run)["train_loss"] == pytest.approx(_summary(reference)["train_loss"], rel=1e-6)


def test_files_follow_the_umask_and_logs_go_to_stderr(reference, tiny_model_dir, tmp_path):
    for f in [reference / "train_summary.json", reference / "split.json", *reference.glob("checkpoints/checkpoint-4/*"),
              reference / "adapter", *reference.glob("adapter/*")]:
        assert stat.S_IMODE(f.stat().st_mode) & 0o044, f  # group/other readable under the usual 022 umask
    run = tmp_path / "run"
    res = invoke(train_args(tiny_model_dir, run, steps=2, save_steps=0))
    assert res.exit_code == 0
    assert "{'loss'" not in res.stdout and "training: 2 steps" in stderr_of(res)


def test_a_bad_setting_is_named_by_its_flag_not_the_internal_field(tiny_model_dir, tmp_path):
    """The rank reaches the adapter config as ``r``; the error names ``--rank``, the option the user typed."""
    res = invoke(train_args(tiny_model_dir, tmp_path / "run", extra=["--rank", "100000"]))
    line = assert_one_error(res, contains="--rank")
    assert "field 'r'" not in line


def test_a_run_recorded_with_flat_grpo_fields_still_resumes(reference, tiny_model_dir, tmp_path):
    """train_config.json written before the GRPO settings nested (flat grpo_* keys): --resume reads
    it as the same configuration; a changed GRPO setting in it is still named (issue 28)."""
    from pluralign._fields import flatten
    from pluralign.training import TrainConfig

    run = tmp_path / "run"
    _copy_run(reference, run)
    rec = json.loads((run / "train_config.json").read_text())
    assert isinstance(rec["grpo"], dict)
    flat = flatten(TrainConfig, rec)
    (run / "train_config.json").write_text(json.dumps(flat))
    res = invoke(train_args(tiny_model_dir, run, extra=["--resume"]))
    assert res.exit_code == 0, res.output
    assert "finished" in stderr_of(res)
    (run / "train_config.json").write_text(json.dumps({**flat, "grpo_beta": 0.5}))
    res = invoke(train_args(tiny_model_dir, run, extra=["--resume"]))
    assert res.exit_code != 0 and "grpo_beta" in stderr_of(res), res.output
