"""Fixtures of the adapter tests: fresh tiny backbones, a tiny sentence encoder, helpers."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import make_tiny_model
from tests.adapters.adapter_helpers import PROFILE_DIM

@pytest.fixture
def fresh_llama():
    return make_tiny_model("llama").float()


@pytest.fixture
def fresh_qwen2():
    return make_tiny_model("qwen2").float()


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory):
    """A tiny sentence-transformers model (random 2-layer BERT, WordPiece vocab, mean pooling)."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    root = tmp_path_factory.mktemp("tiny-encoder")
    words = ("a an the man woman person living in with of and no religion education income decile speaking "
             "rural urban year old thailand germany united states mexico india japan brazil , . - 1 2 3 4 5 6 7 8 9 0").split()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(words)) + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + list("abcdefghijklmnopqrstuvwxyz")
    bert_dir = root / "bert"
    bert_dir.mkdir()
    (bert_dir / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    tok = BertTokenizerFast(vocab_file=str(bert_dir / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=len(tok), hidden_size=PROFILE_DIM, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32, max_position_embeddings=64))
    bert.save_pretrained(bert_dir)
    tok.save_pretrained(bert_dir)
    st = SentenceTransformer(modules=[models.Transformer(str(bert_dir), max_seq_length=64), models.Pooling(PROFILE_DIM, "mean")], device="cpu")
    out = root / "st"
    st.save(str(out))
    return out
