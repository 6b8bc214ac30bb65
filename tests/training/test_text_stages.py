"""Text SFT / DPO on preference pairs (tiny models): the profile reaches the router for chosen and
rejected alike, DPO loss falls from log 2; and the CLI round trip train (sft -> grpo) ->
generate-eval on the BLEnD-format fixture, with bad flags as one error line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import make_tiny_model

from pluralign.data.loaders import load_preferences
from pluralign.training import TrainConfig
from pluralign.training.run import make_training_args

pytestmark = pytest.mark.usefixtures("one_thread")
FIX = Path(__file__).resolve().parents[1] / "fixtures" / "data"
DIM = 16


def _cuma(seed=0, lm_scale=1.0):
    from pluralign.adapters import adapter_config, build_adapted_model

    torch.manual_seed(seed)
    base = make_tiny_model("llama", seed=seed)
    with torch.no_grad():  # a sharper output layer than the near-uniform random one: learnable in a few steps
        base.lm_head.weight.mul_(lm_scale)
    return build_adapted_model(base, "cuma", adapter_config("cuma", profile_dim=DIM))


def _table(rows):
    g = torch.Generator().manual_seed(0)
    return {k: torch.randn(DIM, generator=g) for k in sorted({r.profile.key() for r in rows})}


def _args(tmp_path, **kw):
    cfg = TrainConfig(steps=kw.get("steps", 10), batch_size=kw.get("batch_size", 4), lr=kw.get("lr", 1e-2), save_steps=0, logging_steps=1,
                      progress=False, warmup_ratio=0.0, scheduler="constant", out=str(tmp_path), seed=0)
    return make_training_args(cfg, Path(tmp_path), device="cpu", bf16=False)


def test_dpo_on_preference_pairs_loss_falls_and_profiles_reach_both_sides(tmp_path, tiny_tokenizer):
    from pluralign.training.text import ListDataset, TextCollator, TextDPOTrainer, encode_rows, text_reference_logprobs

    ds = load_preferences(FIX / "prism")
    rows = encode_rows(tiny_tokenizer, ds.pairs, role=ds.profile_role, max_completion_tokens=16)
    assert len(rows) == len(ds.pairs) == 8 and all(r.rejected_ids and r.rejected_ids != r.completion_ids for r in rows)
    table = _table(rows)
    model = _cuma()
    col = TextCollator(tiny_tokenizer.pad_token_id, profile_table=table, dpo=True)
    b = col(rows[:3])
    pe = b["profile_embeds"]
    assert pe.shape[0] == 6 and torch.equal(pe[:3], pe[3:])  # chosen and rejected of a pair: the same profile row
    assert torch.equal(pe[0], table[rows[0].profile.key()])
    assert "rows" in b and "ref_chosen" not in b  # reference log-probs: computed when a pair is first trained on
    tr = TextDPOTrainer(model=model, args=_args(tmp_path, steps=10, lr=1e-2), train_dataset=ListDataset(rows), data_collator=col, beta=0.5)
    tr.train()
    logs = [h["dpo_loss"] for h in tr.state.log_history if "dpo_loss" in h]
    assert logs[0] == pytest.approx(math.log(2), abs=1e-3)  # the reference is the model at the start of the stage
    assert logs[-1] < logs[0] - 0.1, logs
    # the lazily cached reference equals an up-front pass of the start-of-stage model
    lazy = [r.ref for r in rows]
    assert all(x is not None for x in lazy)
    for r in rows:
        r.ref = None
    text_reference_logprobs(_cuma(), rows, col, batch_size=4)
    assert all(a == pytest.approx(b, abs=1e-4) for x, y in zip(lazy, (r.ref for r in rows)) for a, b in zip(x, y))


def test_text_sft_targets_and_loss(tmp_path, tiny_tokenizer):
    from pluralign.training.text import ListDataset, TextCollator, TextSFTTrainer, encode_rows, sft_targets

    ds = load_preferences(FIX / "blend")
    items = sft_targets(ds.records, ds.pairs)
    assert [c for r, c in items if r.id == "Mexico:Q-02"] == ["football"]  # BLEnD: the region's top answer
    rows = encode_rows(tiny_tokenizer, items, role="self")
    assert all(r.completion_ids[-1] == tiny_tokenizer.eos_token_id for r in rows)
    from pluralign.training.text import completion_logps

    model = _cuma(lm_scale=10.0)
    col = TextCollator(tiny_tokenizer.pad_token_id, profile_table=_table(rows))

    def nll():
        b = col(rows)
        with torch.no_grad():
            lp, _ = completion_logps(model.eval(), b, {"profile_embeds": b["profile_embeds"]})
        m = b["completion_mask"]
        return float(-(lp * m).sum() / m.sum())

    before = nll()
    tr = TextSFTTrainer(model=model, args=_args(tmp_path, steps=8, lr=2e-2), train_dataset=ListDataset(rows), data_collator=col)
    tr.train()
    assert nll() < before - 0.5, (before, nll())


# ------------------------------------------------------------------ CLI
def _invoke(args):
    from pluralign.cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _errors(res):
    text = getattr(res, "stderr", "") or res.output
    return [l for l in text.splitlines() if l.startswith("error:")]


def test_cli_sft_grpo_generate_eval_round_trip(tmp_path, tiny_model_dir):
    common = ["--model", tiny_model_dir, "--data", f"blend:{FIX / 'blend'}", "--method", "lora", "--test-frac", "0.3",
              "--batch-size", "2", "--save-steps", "0", "--logging-steps", "1", "--no-progress", "--completion-max-length", "8"]
    res = _invoke(["train", *common, "--stage", "sft", "--steps", "2", "--out", tmp_path / "sft"])
    assert res.exit_code == 0, res.output
    split = json.loads((tmp_path / "sft" / "split.json").read_text())
    assert split["by"] == "question" and split["kind"] == "preference" and split["test_unit_list"]
    res = _invoke(["train", *common, "--stage", "grpo", "--steps", "2", "--grpo-num-generations", "2", "--grpo-max-completion-length", "3",
                   "--grpo-reward", "blend-match", "--grpo-beta", "0.1", "--init-adapter", tmp_path / "sft" / "adapter", "--out", tmp_path / "grpo"])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "grpo" / "train_summary.json").read_text())
    assert summary["stage"] == "grpo" and len(summary["rewards"]) == 2 and summary["reward_functions"] == ["blend-match"]
    logs = [json.loads(l) for l in (tmp_path / "grpo" / "log.jsonl").read_text().splitlines()]
    assert any("rewards/blend-match" in l and "kl" in l for l in logs)
    out = tmp_path / "ge.json"
    res = _invoke(["generate-eval", "--adapter", tmp_path / "grpo" / "adapter", "--max-new-tokens", "3", "--batch-size", "4", "--out", out])
    assert res.exit_code == 0, res.output
    rep = json.loads(out.read_text())
    test_units = set(split["test_unit_list"])
    assert {o["unit"] for o in rep["outputs"]} <= test_units  # the held-out questions of the run, all regions
    assert rep["blend_match"]["n"] == len(rep["outputs"]) and 0 <= rep["blend_match"]["adapter_accuracy"] <= 1
    w = rep["win_rate"]
    assert w["wins"] + w["ties"] + w["losses"] + w["off_format"] == 2 * len(rep["outputs"])
    assert "adapter" in rep["diversity"] and "judge_human_agreement" in rep


@pytest.mark.parametrize("args,flag", [
    (["--stage", "grpo", "--grpo-num-generations", "1"], "--grpo-num-generations"),
    (["--stage", "grpo", "--grpo-reward", "nonsense"], "--grpo-reward"),
    (["--stage", "grpo", "--judge-url", "ftp://x"], "--judge-url"),
    (["--stage", "grpo", "--grpo-loss-type", "ppo"], "--grpo-loss-type"),
    (["--stage", "rlhf"], "--stage"),
])
def test_bad_grpo_flags_are_one_error_line(tmp_path, args, flag):
    res = _invoke(["train", "--data", "blend", *args, "--out", tmp_path / "x"])
    assert res.exit_code == 2, res.output
    errs = _errors(res)
    assert len(errs) == 1 and flag in errs[0], res.output
    assert not (tmp_path / "x").exists()


def test_grpo_on_survey_data_is_refused(tmp_path, tiny_model_dir):
    res = _invoke(["train", "--model", tiny_model_dir, "--data", "wvs-shares", "--stage", "grpo", "--method", "lora", "--steps", "1",
                   "--no-progress", "--out", tmp_path / "x"])
    assert res.exit_code == 2 and "preference / prompt data" in _errors(res)[0]
