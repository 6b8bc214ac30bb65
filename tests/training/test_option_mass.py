"""The option-mass term: the model keeps saying one of the labels."""

from __future__ import annotations

import pytest
import torch

from pluralign.training.losses import option_logprobs, option_mass_nll, soft_cross_entropy

from training.test_training import _build  # the tiny-model training helpers

pytestmark = pytest.mark.usefixtures("one_thread")


def test_options_loss_plus_mass_term_is_the_vocab_loss():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 50, generator=g) * 3
    ids = torch.tensor([[3, 7, 9, 0], [1, 2, 4, 5], [10, 11, 12, 0], [20, 30, 40, 0], [6, 8, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    t = torch.rand(5, 4, generator=g).masked_fill(~mask, 0.0)
    t = t / t.sum(-1, keepdim=True)
    vocab = soft_cross_entropy(option_logprobs(logits, ids, mask, "vocab"), t)
    options = soft_cross_entropy(option_logprobs(logits, ids, mask, "options"), t)
    assert float(options + option_mass_nll(logits, ids, mask)) == pytest.approx(float(vocab), abs=1e-5)
    # the term is -log of the label mass
    mass = torch.softmax(logits, -1).gather(1, ids).masked_fill(~mask, 0).sum(-1)
    assert float(option_mass_nll(logits, ids, mask)) == pytest.approx(float((-mass.log()).mean()), abs=1e-5)


def _mass(trainer, model) -> float:
    model.eval()
    batch = trainer.data_collator(list(trainer.train_dataset.rows))
    with torch.no_grad():
        from pluralign.training.losses import answer_logits

        logits, _ = answer_logits(model, batch, trainer.forward_extra(batch))
    model.train()
    return float(torch.exp(-option_mass_nll(logits, batch["option_ids"], batch["option_mask"])))


def test_mass_term_raises_the_option_mass(tmp_path, tiny_tokenizer):
    common = dict(method="full", task="distributional", steps=12, batch_size=4, soft_label_norm="options", lr=2e-2)
    t0, m0, _ = _build(tmp_path / "a", tiny_tokenizer, option_mass_weight=0.0, **common)
    t1, m1, _ = _build(tmp_path / "b", tiny_tokenizer, option_mass_weight=1.0, **common)
    start = _mass(t1, m1)
    assert start == pytest.approx(_mass(t0, m0), rel=1e-4)  # same initial model
    t0.train()
    t1.train()
    without, with_term = _mass(t0, m0), _mass(t1, m1)
    assert with_term > 0.9 and with_term > start + 0.3, (start, with_term)
    assert with_term > without + 0.2, (without, with_term)
    assert any("option_mass" in log for log in t1.state.log_history)
