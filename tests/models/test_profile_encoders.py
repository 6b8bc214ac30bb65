"""Profile encoders behind one interface; the router's input size comes from the encoder."""

from __future__ import annotations

import pytest
import torch

from pluralign.data import Profile

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny_sentence_encoder(folder, dim=1024):
    """A tiny 1024-d sentence encoder (BERT, mean pooling) saved as a sentence-transformers folder."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set("abcdefghijklmnopqrstuvwxyz0123456789.,-"))
    (folder / "bert").mkdir(parents=True)
    (folder / "bert" / "vocab.txt").write_text("\n".join(vocab))
    tok = BertTokenizerFast(str(folder / "bert" / "vocab.txt"))
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=len(vocab), hidden_size=dim, num_hidden_layers=1, num_attention_heads=4,
                                intermediate_size=64, max_position_embeddings=256))
    bert.save_pretrained(folder / "bert")
    tok.save_pretrained(folder / "bert")
    word = models.Transformer(str(folder / "bert"), max_seq_length=128)
    st = SentenceTransformer(modules=[word, models.Pooling(dim, pooling_mode="mean")])
    st.save(str(folder / "st"))
    return folder / "st"


def test_a_1024d_encoder_sets_the_router_input_end_to_end(tmp_path, tiny_tokenizer, tiny_model_dir):
    """The paper's encoder is 1024-d (Qwen3-Embedding-0.6B): train and evaluate with one."""
    import json

    from pluralign.adapters import load_adapter_for_eval
    from pluralign.models import load_backbone
    from pluralign.training import TrainConfig, train

    enc_dir = _tiny_sentence_encoder(tmp_path / "enc")
    cfg = TrainConfig(
        method="cuma", task="distributional", model=str(tiny_model_dir), data="wvs-shares", split="country",
        test_units=["USA"], countries=["USA", "CHN", "DEU"], questions=["Q1", "Q2"], steps=2, batch_size=4,
        profile_encoder=str(enc_dir), save_steps=0, progress=False, out=str(tmp_path / "run"),
    )
    s = train(cfg)
    assert s["profile_encoder"]
    meta = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert meta["config"]["profile_dim"] == 1024 and meta["profile_encoder"]["dim"] == 1024
    base, tok = load_backbone(str(tiny_model_dir))
    model, kw = load_adapter_for_eval(base, tmp_path / "run" / "adapter", tokenizer=tok)
    emb = kw([Profile(country="United States"), Profile(country="China")])["profile_embeds"]
    assert emb.shape == (2, 1024)
    ids = tok(["hello there", "hello there"], return_tensors="pt")
    out = model(**ids, **kw([Profile(country="United States"), Profile(country="China")]))
    assert torch.isfinite(out.logits).all()


def test_culture_map_and_concat_encoders():
    from pluralign.data.culture import feature_dim
    from pluralign.models.profile_encoder import make_profile_encoder

    enc = make_profile_encoder("culture-map")
    e = enc.encode([Profile(country="Sweden"), Profile(country="Nigeria"), Profile(country="Sweden")])
    assert e.shape == (3, feature_dim()) and torch.equal(e[0], e[2]) and not torch.equal(e[0], e[1])
    assert len(enc) == 2  # one computation per unique profile


def test_backbone_encoder_reads_the_frozen_llm_even_after_adapters(tiny_tokenizer):
    from conftest import make_tiny_model

    from pluralign.adapters import adapter_config, build_adapted_model
    from pluralign.models.profile_encoder import make_profile_encoder

    base = make_tiny_model("llama")
    enc = make_profile_encoder("backbone", backbone=(base, tiny_tokenizer))
    profs = [Profile(country="Thailand", age=55), Profile(country="Germany", age=23)]
    before = enc._embed(profs)
    assert before.shape == (2, 64) and not torch.allclose(before[0], before[1])
    cat = make_profile_encoder("backbone+culture-map", backbone=(base, tiny_tokenizer))
    model = build_adapted_model(base, "cuma", adapter_config("cuma", profile_dim=cat.dim))
    for p in model.parameters():
        if p.requires_grad:
            p.data.normal_(0, 0.5)
    cat.bind(model)
    after = cat.encode(profs)
    assert after.shape == (2, 64 + cat.parts[1].dim)
    assert torch.allclose(after[:, :64], before, atol=1e-5)  # adapters off while encoding


def test_enrichment_changes_the_router_input(tiny_tokenizer):
    """With enrichment and the culture-map encoder, the router's profile input depends on where the
    country sits on the map; without enrichment the persona text does not carry it."""
    from pluralign.data.culture import enrich_profile
    from pluralign.models.profile_encoder import make_profile_encoder

    enc = make_profile_encoder("culture-map")
    a, b = enc.encode([Profile(country="Sweden"), Profile(country="Ghana")])
    assert not torch.equal(a, b)
    p = Profile(country="Sweden")
    assert enrich_profile(p).describe() != p.describe()
    assert enrich_profile(p).key() != p.key()  # a new embedding, not a cached one


def test_dpo_stage_reuses_the_encoder_recorded_in_the_init_adapter(tmp_path):
    """Defect: the DPO stage built its encoder from the default, not from --init-adapter's."""
    import json

    from pluralign.errors import PluralignError
    from pluralign.training import TrainConfig
    from pluralign.training.methods import encoder_spec

    ad = tmp_path / "adapter"
    ad.mkdir()
    (ad / "adapter_model.safetensors").write_bytes(b"")
    (ad / "adapter_config.json").write_text(json.dumps({
        "format": "pluralign-adapter", "version": 1, "method": "cuma",
        "config": {"profile_encoder": "culture-map", "profile_dim": 11},
        "profile_encoder": {"name": "culture-map", "dim": 11}, "extra": {},
    }))
    cfg = TrainConfig(method="cuma", stage="dpo", init_adapter=str(ad))
    assert encoder_spec(cfg) == "culture-map"  # not the default minilm-l6
    cfg.profile_encoder = "backbone"
    with pytest.raises(PluralignError, match="differs from 'culture-map'"):
        encoder_spec(cfg)
