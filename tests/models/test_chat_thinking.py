"""Hybrid-reasoning chat templates (Qwen3): prompts are rendered with thinking off by default.

The tokenizer's template is a minimal copy of Qwen3's ``enable_thinking`` logic: with
``enable_thinking`` defined and false, an empty ``<think>\\n\\n</think>\\n\\n`` block follows the
generation prompt, so the next token is the answer, not ``<think>``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pluralign.blackbox.population import vsm_prompts
from pluralign.data import GroupExample, Profile, SurveyDataset, SurveyItem
from pluralign.evaluation.runner import EvalConfig, build_prompts, evaluate
from pluralign.evaluation.scoring import OptionScorer
from pluralign.models.chat import build_chat_prompt

QWEN3_LIKE_TEMPLATE = (
    "{%- for m in messages %}"
    "{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)
EMPTY_THINK = "<|im_start|>assistant\n<think>\n\n</think>\n\n"
MSGS = [{"role": "system", "content": "You are taking part in a survey."},
        {"role": "user", "content": "How important is family in your life? Options: 1. 2. 3. Answer with the number of one option only."}]


@pytest.fixture(scope="module")
def qwen3_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    corpus = [
        "How important is family in your life? Very important Rather important Not very important",
        "Options: 1. 2. 3. 4. 5. A. B. C. D. Answer with the number of one option only.",
        "You are taking part in a survey. system user assistant 0 1 2 3 4 5 6 7 8 9",
    ] * 20
    specials = ["<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(corpus, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", unk_token="<unk>", pad_token="<|endoftext|>")
    tok.chat_template = QWEN3_LIKE_TEMPLATE
    tok.padding_side = "left"
    return tok


@pytest.fixture(scope="module")
def tiny_qwen3(qwen3_tokenizer):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen3Config(
        vocab_size=len(qwen3_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=512, pad_token_id=qwen3_tokenizer.pad_token_id,
        eos_token_id=qwen3_tokenizer.eos_token_id, bos_token_id=None,
    )
    return Qwen3ForCausalLM(cfg).eval()


def test_prompt_has_empty_think_block(qwen3_tokenizer):
    text = build_chat_prompt(qwen3_tokenizer, MSGS)
    assert text.endswith(EMPTY_THINK)
    # thinking can still be asked for explicitly
    assert build_chat_prompt(qwen3_tokenizer, MSGS, enable_thinking=True).endswith("<|im_start|>assistant\n")
    assert build_chat_prompt(qwen3_tokenizer, MSGS, answer_prefix="Answer: ").endswith(EMPTY_THINK + "Answer: ")


def test_templates_without_the_variable_are_unchanged(tiny_tokenizer):
    want = tiny_tokenizer.apply_chat_template(MSGS, tokenize=False, add_generation_prompt=True)
    assert build_chat_prompt(tiny_tokenizer, MSGS) == want
    assert build_chat_prompt(tiny_tokenizer, MSGS, enable_thinking=True) == want
    # the plain fallback is untouched too
    assert build_chat_prompt(tiny_tokenizer, MSGS, use_chat_template=False).endswith("\n\nAssistant: ")


def test_eval_and_blackbox_prompts_are_non_thinking(qwen3_tokenizer):
    item = SurveyItem("q1", "How important is family in your life?", ("Very important", "Rather important", "Not very important"))
    ds = SurveyDataset("t", "distributional", {"q1": item},
                       [GroupExample("Germany", Profile(country="Germany"), "q1", (0.2, 0.5, 0.3))], source="hand")
    for method in ("vanilla", "persona"):
        prompts, *_ = build_prompts(qwen3_tokenizer, ds, EvalConfig(method=method))
        assert prompts and all(p.endswith(EMPTY_THINK) for p in prompts)
    prompts, _ = vsm_prompts(qwen3_tokenizer)
    assert all(p.endswith(EMPTY_THINK) for p in prompts)


@torch.no_grad()
def test_tiny_qwen3_reads_the_answer_after_the_think_block(qwen3_tokenizer, tiny_qwen3):
    tok = qwen3_tokenizer
    prompt = build_chat_prompt(tok, MSGS)
    scorer = OptionScorer(tiny_qwen3, tok, batch_size=2)
    ids = scorer._encode_prompt(prompt)
    think_close = tok.convert_tokens_to_ids("</think>")
    assert think_close in ids[-3:]  # the scored position comes after the closed, empty think block
    assert tok.convert_tokens_to_ids("<think>") in ids
    assert tok.decode(ids[ids.index(think_close):]) == "</think>\n\n"
    labels = ["1", "2", "3"]
    (score,) = scorer.next_token([prompt], [labels])
    logp = torch.log_softmax(tiny_qwen3(input_ids=torch.tensor([ids])).logits[0, -1].double(), -1)
    lp = logp[scorer.label_token_ids(prompt, labels)].numpy()
    np.testing.assert_allclose(score.probs, np.exp(lp) / np.exp(lp).sum(), atol=1e-5)
    # and evaluate() runs end to end on the Qwen3 architecture
    item = SurveyItem("q1", "How important is family in your life?", ("Very important", "Rather important", "Not very important"))
    ds = SurveyDataset("t", "distributional", {"q1": item},
                       [GroupExample("Germany", Profile(country="Germany"), "q1", (0.2, 0.5, 0.3))], source="hand")
    res = evaluate(tiny_qwen3, tok, ds, EvalConfig(method="persona"), progress=False)
    assert res["metrics"]["n"] == 1 and 0 <= res["metrics"]["emd"] <= 1
