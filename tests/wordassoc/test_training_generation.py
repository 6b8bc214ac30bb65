"""Tiny-model checks: batched generation equals one-at-a-time, the evaluation runs end to end, SFT
loss falls and resumes from its checkpoint, GRPO raises a toy reward, the CLI reports bad input."""

from __future__ import annotations

from pathlib import Path

import json

import numpy as np
import pytest
import torch

from pluralign.data.loaders.swow import load_swow
from pluralign.models.chat import build_chat_prompt
from pluralign.wordassoc.stats import cue_interval
from pluralign.wordassoc.generate import GenConfig, evaluate_generation, evaluate_ranking, generate_texts
from tests.conftest import make_tiny_model

FIX = Path(__file__).parent / "fixtures"


def test_batched_generation_matches_one_at_a_time(tiny_tokenizer):
    model = make_tiny_model("llama", seed=1)
    prompts = [build_chat_prompt(tiny_tokenizer, [{"role": "user", "content": t}]) for t in
               ["dog", "a much longer cue word prompt for padding", "sun"]]
    cfg = GenConfig(batch_size=3, max_new_tokens=6)
    batched = generate_texts(model, tiny_tokenizer, prompts, cfg, progress=False)
    single = generate_texts(model, tiny_tokenizer, prompts, GenConfig(batch_size=1, max_new_tokens=6), progress=False)
    assert batched == single and all(len(x) == 1 for x in batched)
    assert tiny_tokenizer.padding_side == "left"
    sampled = generate_texts(model, tiny_tokenizer, prompts[:1], GenConfig(num_samples=3, max_new_tokens=6), progress=False)
    assert len(sampled[0]) == 3


def test_evaluation_end_to_end_on_tiny_model(tiny_tokenizer):
    d = load_swow(FIX / "strength.SWOW-EN.R1.csv")
    model = make_tiny_model("llama")
    g = evaluate_generation(model, tiny_tokenizer, d, GenConfig(max_new_tokens=4), ks=(1, 5), progress=False)
    assert g["n_cues"] == 4 and 0 <= g["P@5"] <= g["P@1"] * 5 + 1e-9 and len(g["examples"]) == 4
    r = evaluate_ranking(model, tiny_tokenizer, d, GenConfig(max_new_tokens=4), n_candidates=4, progress=False)
    assert r["n_cues"] == 3 and -1 <= r["spearman"] <= 1  # "tea" has only 3 responses
    # per-cue values are kept (for paired comparisons) and their mean is the reported metric
    assert set(g["per_cue"]["P@5"]) == set(d.cues) and np.mean(list(g["per_cue"]["P@5"].values())) == pytest.approx(g["P@5"])
    assert g["intervals"]["P@5"]["mean"] == pytest.approx(g["P@5"]) and g["intervals"]["P@5"]["n"] == 4
    assert np.mean(list(r["per_cue"]["spearman"].values())) == pytest.approx(r["spearman"])


def test_report_shows_intervals_and_paired_relative_change(tmp_path):
    """`wordassoc report`: every metric with its interval, and each model's change vs the baseline
    (paired over cues, relative as the paper reports P@5)."""
    from typer.testing import CliRunner

    from pluralign.cli.main import app

    rng = np.random.default_rng(0)
    cues = [f"cue{i}" for i in range(60)]

    def result(shift):
        p5 = {c: float(np.clip(rng.binomial(5, 0.2) / 5 + shift, 0, 1)) for c in cues}
        rho = {c: float(rng.uniform(-1, 1)) for c in cues}
        return {"schema": "pluralign.wordassoc.eval/1", "n_eval_cues": len(cues), "adapter": None,
                "generation": {"P@5": float(np.mean(list(p5.values()))), "per_cue": {"P@5": p5},
                               "intervals": {"P@5": cue_interval(list(p5.values()))}},
                "ranking": {"spearman": float(np.mean(list(rho.values()))), "per_cue": {"spearman": rho},
                            "intervals": {"spearman": cue_interval(list(rho.values()))}, "listed_a_candidate": 1.0}}

    paths = []
    for i, shift in enumerate((0.0, 0.2)):
        paths.append(tmp_path / f"e{i}.json")
        paths[-1].write_text(json.dumps(result(shift)))
    out = tmp_path / "report.md"
    res = CliRunner().invoke(app, ["wordassoc", "report", *map(str, paths), "--labels", "vanilla,SFT", "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "vanilla → SFT" in text and "bootstrap" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("| vanilla → SFT"))
    assert "[+" in line and " %" in line  # a positive paired change, with its interval and relative change


def test_sft_loss_falls_and_resumes(tmp_path, tiny_tokenizer):
    from pluralign.wordassoc.train import SFTStage, align_lora, read_meta, train_sft

    d = load_swow(FIX / "strength.SWOW-EN.R1.csv")
    torch.manual_seed(0)
    st = SFTStage(output_dir=str(tmp_path / "sft"), tasks="generation,ranking", n_candidates=4, max_steps=4, batch_size=4,
                  learning_rate=1e-2, logging_steps=1, save_steps=2, lora=align_lora(r=8, alpha=16, dropout=0.0))
    r = train_sft(make_tiny_model("llama"), tiny_tokenizer, d, st, progress=False)
    losses = r["losses"]
    assert len(losses) == 4 and losses[-1] < losses[0] - 0.1, losses
    adapter = Path(r["adapter"])
    assert (adapter / "adapter_config.json").exists() and read_meta(adapter)["stage"] == "sft"
    assert (tmp_path / "sft" / "checkpoint-4").is_dir()
    # re-running with more steps resumes from the newest checkpoint instead of starting over
    st.max_steps = 5
    r2 = train_sft(make_tiny_model("llama"), tiny_tokenizer, d, st, progress=False)
    assert r2["resumed_from"] and r2["resumed_from"].endswith("checkpoint-4")


def test_grpo_raises_a_toy_reward(tmp_path, tiny_tokenizer):
    """Reward = fraction of completion tokens in a target set (60 of 600 ids). After a few GRPO
    steps with a fixed seed the policy puts more probability on the target set."""
    from pluralign.training.config import GRPOSettings
    from pluralign.wordassoc.train import RLStage, train_rl

    target = list(range(100, 160))
    tset = set(target)

    def toy(prompts, completions, completion_ids, **_):
        return [sum(t in tset for t in ids) / max(1, len(ids)) for ids in completion_ids]

    recs = [{"prompt": [{"role": "user", "content": f"word {i}"}]} for i in range(8)]
    prompts = [build_chat_prompt(tiny_tokenizer, r["prompt"]) for r in recs]

    def target_mass(model) -> float:
        with torch.no_grad():
            out = []
            for p in prompts:
                ids = tiny_tokenizer(p, return_tensors="pt", add_special_tokens=False)
                out.append(model(**ids).logits[0, -1].float().softmax(-1)[target].sum().item())
        return sum(out) / len(out)

    model = make_tiny_model("llama")
    before = target_mass(model)
    st = RLStage(output_dir=str(tmp_path / "rl"), max_steps=8, batch_size=8, grpo=GRPOSettings(num_generations=4, max_completion_length=4),
                 learning_rate=3e-3, logging_steps=1, save_steps=100, lora=None, seed=0)
    r = train_rl(model, tiny_tokenizer, records=recs, reward_fn=toy, stage=st, progress=False)
    after = target_mass(model.eval())
    assert len(r["rewards"]) == 8
    assert after > before * 1.03, (before, after)
    assert (Path(r["adapter"]) / "pluralign_wordassoc.json").exists()


def test_cli_bad_input_is_one_error_line(tmp_path):
    from typer.testing import CliRunner

    from pluralign.cli.main import app

    bad = tmp_path / "strength.SWOW-EN.R1.csv"
    bad.write_text("cue,response,R1,N,R1.Strength\napple,fruit,5,10,0.5\napple,red,three,10,0.3\n")
    res = CliRunner().invoke(app, ["wordassoc", "eval", "--data", str(bad), "--no-transfer", "--out", str(tmp_path / "e.json")])
    assert res.exit_code == 2
    assert "error:" in res.output and "row 2" in res.output and "'count'" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "e.json").exists()
    res = CliRunner().invoke(app, ["wordassoc", "train", "--help"])
    assert res.exit_code == 0 and "GRPO" in res.output


def test_sft_max_length_too_small_is_a_clear_error(tmp_path, tiny_tokenizer):
    from pluralign.errors import PluralignError
    from pluralign.wordassoc.train import SFTStage, train_sft

    d = load_swow(FIX / "strength.SWOW-EN.R1.csv")
    with pytest.raises(PluralignError, match="max_length=16"):
        train_sft(make_tiny_model("llama"), tiny_tokenizer, d, SFTStage(output_dir=str(tmp_path / "s"), max_length=16), progress=False)
