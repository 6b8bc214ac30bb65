"""Conditional SFT / DPO on tiny random models (no download, a few seconds each)."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch

from pluralign.data import IndividualExample, GroupExample, Profile, SurveyDataset, SurveyItem
from pluralign.training import TrainConfig
from pluralign.training.data import IGNORE_INDEX, ConditionalCollator, encode_dataset, training_prompt
from pluralign.training.losses import option_logprobs, soft_cross_entropy

ITEMS = {
    "Q1": SurveyItem("Q1", "How important is family in your life?", ("Very important", "Rather important", "Not very important", "Not at all important")),
    "Q2": SurveyItem("Q2", "How important is work in your life?", ("Very important", "Rather important", "Not very important", "Not at all important")),
    "Q3": SurveyItem("Q3", "Do you agree or disagree?", ("agree", "neither", "disagree")),
}
PROFILES = [
    Profile(country="Thailand", sex="female", age=55, settlement="rural"),
    Profile(country="Germany", sex="male", age=23, settlement="urban"),
]


def individual_ds(n_resp: int = 6) -> SurveyDataset:
    """Two kinds of respondents who answer opposite ends of every scale (a task only the profile solves)."""
    exs = []
    for r in range(n_resp):
        prof = PROFILES[r % 2]
        for q, it in ITEMS.items():
            exs.append(IndividualExample(f"r{r}", prof, q, 0 if r % 2 == 0 else it.n_options - 1))
    return SurveyDataset("tiny-ind", "individual", dict(ITEMS), exs, source="<test>")


def group_ds() -> SurveyDataset:
    exs = [
        GroupExample("THA", Profile(country="Thailand"), "Q1", (0.7, 0.2, 0.05, 0.05)),
        GroupExample("DEU", Profile(country="Germany"), "Q1", (0.1, 0.2, 0.3, 0.4)),
        GroupExample("THA", Profile(country="Thailand"), "Q3", (0.5, 0.3, 0.2)),
        GroupExample("DEU", Profile(country="Germany"), "Q3", (0.2, 0.2, 0.6)),
    ]
    return SurveyDataset("tiny-grp", "distributional", {k: ITEMS[k] for k in ("Q1", "Q3")}, exs, source="<test>")


pytestmark = pytest.mark.usefixtures("one_thread")


class HashEncoder:
    """A deterministic stand-in for the sentence encoder (dim 384, one vector per profile)."""

    dim = 384

    def __init__(self):
        self.calls = 0

    def encode(self, profiles):
        self.calls += 1
        out = []
        for p in profiles:
            g = torch.Generator().manual_seed(int(hashlib.sha256(p.key().encode()).hexdigest()[:8], 16))
            out.append(torch.randn(self.dim, generator=g))
        return torch.stack(out)


def _cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(
        method="lora", task="individual", steps=8, batch_size=6, lr=5e-3, warmup_ratio=0.0, scheduler="constant",
        save_steps=0, logging_steps=1, progress=False, out=str(tmp_path), seed=0,
    )
    base.update(kw)
    return TrainConfig(**base).validate()


def _build(tmp_path, tok, *, method="lora", task="individual", stage="sft", seed=0, rows=None, **kw):
    """(trainer, model, rows) on a fresh tiny Llama."""
    from conftest import make_tiny_model

    from pluralign.adapters import adapter_config, build_adapted_model, uses_profile
    from pluralign.training.run import build_trainer

    cfg = _cfg(tmp_path, method=method, task=task, stage=stage, seed=seed, **kw)
    torch.manual_seed(seed)
    base = make_tiny_model("llama", seed=seed)
    over = {"profile_dim": 384} if method in ("cuma", "mixlora", "hydralora") else {}
    model = build_adapted_model(base, method, adapter_config(method, **over))
    ds = individual_ds() if task == "individual" else group_ds()
    if rows is None:
        rows = encode_dataset(tok, ds, dpo_reference=ds if stage == "dpo" else None)
    enc = HashEncoder() if uses_profile(model) else None
    return build_trainer(model, tok, rows, cfg, tmp_path, profile_encoder=enc), model, rows


def _mean_loss(trainer, model) -> float:
    """Loss of the model on its whole training set (eval mode, no dropout)."""
    model.eval()
    batch = trainer.data_collator(list(trainer.train_dataset.rows))
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch)
    model.train()
    trainer._acc.clear()
    return float(loss)


# ------------------------------------------------------------------------- prompts and masking
def test_training_prompt_is_the_evaluation_prompt(tiny_tokenizer):
    from pluralign.evaluation.runner import EvalConfig, build_prompts

    ds = individual_ds(2)
    prompts, *_ = build_prompts(tiny_tokenizer, ds, EvalConfig(method="persona"))
    for ex in ds.examples:
        labs = [str(i + 1) for i in range(ds.items[ex.item_id].n_options)]
        assert training_prompt(tiny_tokenizer, ex, ds.items[ex.item_id], labs) in prompts
    vanilla, *_ = build_prompts(tiny_tokenizer, ds, EvalConfig(method="vanilla"))
    ex = ds.examples[0]
    assert training_prompt(tiny_tokenizer, ex, ds.items[ex.item_id], ["1", "2", "3", "4"], profile_prompt=False) in vanilla


def test_labels_mask_everything_but_the_answer_token(tiny_tokenizer, tiny_llama):
    from pluralign.evaluation.scoring import OptionScorer

    ds = individual_ds(2)
    rows = encode_dataset(tiny_tokenizer, ds)
    batch = ConditionalCollator(tiny_tokenizer.pad_token_id, hard_labels=True)(rows)
    labels, ids = batch["labels"], batch["input_ids"]
    assert (labels[:, :-1] == IGNORE_INDEX).all()
    scorer = OptionScorer(None, tiny_tokenizer)
    for b, (ex, r) in enumerate(zip(ds.examples, rows)):
        item = ds.items[ex.item_id]
        prompt = training_prompt(tiny_tokenizer, ex, item, [str(i + 1) for i in range(item.n_options)])
        want = scorer.label_token_ids(prompt, [str(i + 1) for i in range(item.n_options)])[ex.answer]
        assert labels[b, -1].item() == want == ids[b, -1].item()
        assert r.input_ids[:-1] == scorer._encode_prompt(prompt)  # the prompt exactly as evaluation tokenises it
    # left padding: the attention mask ends every row, padding only at the start
    assert (batch["attention_mask"][:, -1] == 1).all()
    # our answer-token loss equals the causal-LM loss with these labels
    from pluralign.training.losses import answer_logits

    with torch.no_grad():
        logits, _ = answer_logits(tiny_llama, batch)
        ours = soft_cross_entropy(option_logprobs(logits, batch["option_ids"], batch["option_mask"]), batch["target_probs"])
        pos = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        hf = tiny_llama(input_ids=ids, attention_mask=batch["attention_mask"], position_ids=pos, labels=labels).loss
    assert abs(ours.item() - hf.item()) < 1e-4


def test_soft_label_loss_matches_hand_computation():
    torch.manual_seed(0)
    V = 11
    logits = torch.randn(2, V)
    option_ids = torch.tensor([[3, 5, 7, 3], [1, 2, 9, 4]])
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    target = torch.tensor([[0.2, 0.5, 0.3, 0.0], [0.1, 0.2, 0.3, 0.4]])
    for norm in ("vocab", "options"):
        got = soft_cross_entropy(option_logprobs(logits, option_ids, mask, norm), target).item()
        L = logits.double().numpy()
        want = 0.0
        for b in range(2):
            k = int(mask[b].sum())
            ids = option_ids[b, :k].numpy()
            if norm == "vocab":
                logz = math.log(np.exp(L[b]).sum())
            else:
                logz = math.log(np.exp(L[b, ids]).sum())
            want += -sum(float(target[b, j]) * (L[b, ids[j]] - logz) for j in range(k))
        assert abs(got - want / 2) < 1e-5, norm


def test_group_rows_carry_the_human_distribution(tiny_tokenizer):
    ds = group_ds()
    rows = encode_dataset(tiny_tokenizer, ds)
    batch = ConditionalCollator(tiny_tokenizer.pad_token_id, hard_labels=False)(rows)
    assert (batch["labels"] == IGNORE_INDEX).all()  # soft targets: no hard label anywhere
    assert torch.allclose(batch["target_probs"][0, :4], torch.tensor([0.7, 0.2, 0.05, 0.05]))
    assert batch["option_mask"][2].tolist() == [True, True, True, False]
    assert torch.allclose(batch["target_probs"].sum(-1), torch.ones(4))


def test_profile_embeddings_are_computed_once_per_profile(tiny_tokenizer):
    from pluralign.training.data import profile_table

    rows = encode_dataset(tiny_tokenizer, individual_ds(6))
    enc = HashEncoder()
    table = profile_table(enc, rows)
    assert enc.calls == 1 and len(table) == 2
    batch = ConditionalCollator(tiny_tokenizer.pad_token_id, hard_labels=True, profile_table=table)(rows[:4])
    assert batch["profile_embeds"].shape == (4, 384)
    assert torch.equal(batch["profile_embeds"][0], enc.encode([rows[0].profile])[0])


# ------------------------------------------------------------------------- learning
@pytest.mark.parametrize("method", ["lora", "cuma"])
def test_loss_falls(tmp_path, tiny_tokenizer, method):
    trainer, model, _ = _build(tmp_path, tiny_tokenizer, method=method, steps=12)
    before = _mean_loss(trainer, model)
    trainer.train()
    after = _mean_loss(trainer, model)
    assert after < before - 0.3, (before, after)
    logs = [l for l in trainer.state.log_history if "ce" in l]
    assert logs and (method != "cuma" or any("aux_loss" in l for l in logs))
    assert (tmp_path / "log.jsonl").exists()


def test_distributional_loss_falls(tmp_path, tiny_tokenizer):
    trainer, model, _ = _build(tmp_path, tiny_tokenizer, method="lora", task="distributional", steps=10, batch_size=4)
    before = _mean_loss(trainer, model)
    trainer.train()
    assert _mean_loss(trainer, model) < before - 0.2


def test_resume_continues_from_the_saved_step_with_identical_state(tmp_path, tiny_tokenizer):
    from pluralign.training.trainer import trainable_state

    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    tr_a, model_a, rows = _build(a_dir, tiny_tokenizer, steps=6, save_steps=3, batch_size=4)
    tr_a.train()
    assert (a_dir / "checkpoints" / "checkpoint-3" / "trainable.safetensors").exists()
    full = trainable_state(model_a)
    # a fresh model, resumed from the step-3 checkpoint of run A, must end exactly where A ended
    tr_b, model_b, _ = _build(b_dir, tiny_tokenizer, steps=6, save_steps=3, batch_size=4, seed=0)
    tr_b.train(resume_from_checkpoint=str(a_dir / "checkpoints" / "checkpoint-3"))
    assert tr_b.state.global_step == 6
    resumed = trainable_state(model_b)
    assert resumed.keys() == full.keys()
    for k in full:
        assert torch.allclose(full[k], resumed[k], atol=1e-6), k
    # and the checkpoint really was loaded: it differs from step 6 and from a fresh init
    assert any(not torch.equal(full[k], trainable_state(_build(tmp_path / "c", tiny_tokenizer, steps=6)[1])[k]) for k in full)


def test_dpo_loss_falls(tmp_path, tiny_tokenizer):
    trainer, model, rows = _build(tmp_path, tiny_tokenizer, stage="dpo", steps=10, lr=1e-2, dpo_beta=0.5)
    assert all(r.rejected is not None and r.rejected != r.answer for r in rows)
    assert all(r.ref is not None for r in rows)
    trainer.train()
    logs = [l["dpo_loss"] for l in trainer.state.log_history if "dpo_loss" in l]
    assert logs[0] == pytest.approx(math.log(2), abs=1e-3)  # policy == reference at step 0
    assert logs[-1] < logs[0] - 0.1, logs
    assert any(l.get("rewards/accuracy", 0) > 0.5 for l in trainer.state.log_history)


@pytest.mark.parametrize("method", ["mixlora", "hydralora", "dora", "ptuning-v2", "full"])  # lora, cuma: test_loss_falls
def test_every_method_trains_and_saves(tmp_path, tiny_tokenizer, method):
    from pluralign.adapters import load_adapter, save_adapter
    from pluralign.training.trainer import trainable_state

    from conftest import make_tiny_model

    trainer, model, _ = _build(tmp_path, tiny_tokenizer, method=method, steps=2, batch_size=4)
    before = trainable_state(model)
    trainer.train()
    after = trainable_state(model)
    assert before and any(not torch.equal(before[k], after[k]) for k in before), "no parameter moved"
    save_adapter(model, tmp_path / "adapter", base_model="tiny")
    again = load_adapter(make_tiny_model("llama"), tmp_path / "adapter")
    got = trainable_state(again)
    for k in after:
        assert torch.allclose(after[k], got[k]), k


def test_ablation_flags_map_onto_the_adapter_config(tmp_path):
    from pluralign.errors import PluralignError
    from pluralign.training.methods import make_adapter_config

    c = make_adapter_config(_cfg(tmp_path, method="cuma"))
    assert c.router_input == "hidden+profile" and c.balance_coef > 0 and c.top_k < c.n_experts
    c = make_adapter_config(_cfg(tmp_path, method="cuma", demographic_routing=False, balance_loss=False, soft_routing=True, experts=4))
    assert c.router_input == "hidden" and c.balance_coef == 0.0 and c.top_k == c.n_experts == 4
    c = make_adapter_config(_cfg(tmp_path, method="lora", rank=4, target_modules=["q_proj", "o_proj"]))
    assert c.r == 4 and tuple(c.target_modules) == ("q_proj", "o_proj")
    with pytest.raises(PluralignError, match="soft"):
        make_adapter_config(_cfg(tmp_path, method="lora", soft_routing=True))
    with pytest.raises(PluralignError, match="demographic"):
        make_adapter_config(_cfg(tmp_path, method="lora", demographic_routing=False))
