"""Backbone loading: folders, dtypes, GGUF conversion and cache, clear one-line errors."""

from __future__ import annotations

import os
import time

import pytest
import torch

from pluralign.errors import PluralignError
from pluralign.models import build_chat_prompt, has_chat_template, load_backbone, load_tokenizer, resolve_model
from pluralign.models import loading as L
from tests.conftest import make_tiny_model
from tests.models._gguf import write_llama_gguf, write_unsupported_gguf


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("PLURALIGN_CACHE", str(d))
    return d


def _one_line(e: PluralignError) -> str:
    s = str(e)
    assert "\n" not in s
    return s


# ------------------------------------------------------------------------------------- folders
def test_load_folder_defaults(tiny_model_dir):
    model, tok = load_backbone(tiny_model_dir)
    assert not model.training
    p = next(model.parameters())
    assert p.dtype == torch.float32 and p.device.type == "cpu"
    assert tok.padding_side == "left" and tok.pad_token_id is not None
    # same weights as the saved model
    ref = make_tiny_model("llama")
    ids = torch.tensor([[5, 17, 42, 99]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, ref(ids).logits, atol=1e-6)


def test_load_folder_bf16(tiny_model_dir):
    model, _ = load_backbone(tiny_model_dir, dtype="bf16", device="cpu")
    assert next(model.parameters()).dtype == torch.bfloat16


def test_unknown_dtype(tiny_model_dir):
    with pytest.raises(PluralignError, match="unknown dtype 'int7'") as ei:
        load_backbone(tiny_model_dir, dtype="int7")
    assert "field 'dtype'" in _one_line(ei.value)


def test_default_dtype_by_device():
    assert L.parse_dtype("auto", "cpu") == torch.float32
    assert L.parse_dtype(None, "cuda") == torch.bfloat16
    assert L.parse_dtype(torch.float16, "cpu") == torch.float16


def test_bad_device(tiny_model_dir):
    with pytest.raises(PluralignError, match="unknown device 'gpu0'"):
        load_backbone(tiny_model_dir, device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(PluralignError, match="CUDA is not available") as ei:
            load_backbone(tiny_model_dir, device="cuda")
        assert "field 'device'" in _one_line(ei.value)


def test_missing_folder(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(PluralignError, match="model folder not found") as ei:
        load_backbone(str(missing))
    assert str(missing) in _one_line(ei.value)


def test_missing_gguf_file(tmp_path):
    with pytest.raises(PluralignError, match="GGUF file not found") as ei:
        load_backbone(tmp_path / "model.gguf")
    assert "model.gguf" in _one_line(ei.value)


def test_empty_folder(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    with pytest.raises(PluralignError, match="cannot load") as ei:
        load_backbone(d)
    assert str(d) in _one_line(ei.value)


def test_folder_without_tokenizer(tmp_path):
    d = tmp_path / "weights-only"
    make_tiny_model("llama").save_pretrained(d)
    with pytest.raises(PluralignError, match="cannot load tokenizer"):
        load_backbone(d)


def test_unreachable_hub_id_is_one_line():
    # offline (conftest sets HF_HUB_OFFLINE): a hub id that is not cached fails cleanly
    with pytest.raises(PluralignError, match="cannot load"):
        load_backbone("pluralign-test/definitely-not-a-model")


def test_resolve_short_name_hub_id_and_paths(tiny_model_dir, tmp_path):
    ref = resolve_model("smollm2-135m")
    assert ref.gguf_file and (L.Path(ref.location) / ref.gguf_file).is_file()
    assert resolve_model("Qwen/Qwen2.5-0.5B-Instruct").location == "Qwen/Qwen2.5-0.5B-Instruct"  # hub id as is
    assert resolve_model(tiny_model_dir).location == str(tiny_model_dir.resolve())
    assert resolve_model(str(tiny_model_dir)).gguf_file is None
    with pytest.raises(PluralignError, match="model folder not found"):
        resolve_model("no/such/local/folder")  # three parts: not a hub id


# ------------------------------------------------------------------------------------- GGUF
def test_unsupported_gguf_architecture(tmp_path, cache):
    f = write_unsupported_gguf(tmp_path / "weird.gguf", arch="rwkv6")
    assert L.gguf_architecture(f) == "rwkv6"
    with pytest.raises(PluralignError, match="unsupported GGUF architecture 'rwkv6'") as ei:
        load_backbone(f)
    msg = _one_line(ei.value)
    assert str(f) in msg and "field 'general.architecture'" in msg
    assert not (cache / "models").exists() or not any((cache / "models").iterdir())  # nothing half-written


def test_not_a_gguf_file(tmp_path, cache):
    f = tmp_path / "fake.gguf"
    f.write_bytes(b"this is not a gguf file at all" * 10)
    with pytest.raises(PluralignError, match="not a readable GGUF file") as ei:
        load_backbone(f)
    assert str(f) in _one_line(ei.value)


def test_gguf_llama_converts_once_and_matches(tmp_path, cache, tiny_tokenizer, monkeypatch):
    """A tiny Llama written to GGUF (with llama.cpp's q/k permutation) loads back with the same
    logits and tokenizer; the second load reads the safetensors cache without converting."""
    ref = make_tiny_model("llama", seed=3)
    f = write_llama_gguf(tmp_path / "tiny.gguf", ref, tiny_tokenizer)
    model, tok = load_backbone(f)
    folders = list((cache / "models").iterdir())
    assert len(folders) == 1 and (folders[0] / "config.json").exists()
    assert not [p for p in folders[0].parent.iterdir() if p.name.startswith(".")]  # no temp folder left
    text = "How important is family in your life?"
    assert tok(text, add_special_tokens=False)["input_ids"] == tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert has_chat_template(tok)
    ids = torch.tensor([tiny_tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ref(ids).logits, atol=1e-5, rtol=1e-5)

    def boom(*a, **k):  # the second load must not touch the GGUF
        raise AssertionError("converted twice")

    monkeypatch.setattr(L, "_check_gguf_architecture", boom)
    t0 = time.perf_counter()
    model2, _ = load_backbone(f)
    assert time.perf_counter() - t0 < 10
    with torch.no_grad():
        torch.testing.assert_close(model2(ids).logits, model(ids).logits)


def test_gguf_conversion_race_keeps_first(tmp_path, cache, tiny_tokenizer, monkeypatch):
    """If another process finished the same conversion meanwhile, ours is discarded, not an error."""
    f = write_llama_gguf(tmp_path / "tiny.gguf", make_tiny_model("llama"), tiny_tokenizer)
    ref = resolve_model(f)
    target = L._gguf_cache_path(ref)
    orig = L.os.replace

    def replace_after_other(src, dst):
        # simulate the other process: a complete folder appears at the target first
        os.makedirs(dst, exist_ok=True)
        (L.Path(dst) / "config.json").write_text("{}")
        (L.Path(dst) / "other-process").write_text("x")
        return orig(src, dst)

    monkeypatch.setattr(L.os, "replace", replace_after_other)
    out = L._convert_gguf(ref)
    assert out == target and (target / "other-process").exists()
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]


# ------------------------------------------------------------------------------------- tokenizer / chat
def test_load_tokenizer_only(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    assert tok("Options", add_special_tokens=False)["input_ids"]


def test_chat_template_and_plain_fallback(tiny_tokenizer):
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q?"}]
    t = build_chat_prompt(tiny_tokenizer, msgs)
    assert t == "<s>system\nS</s>\n<s>user\nQ?</s>\n<s>assistant\n"
    assert build_chat_prompt(tiny_tokenizer, msgs, answer_prefix="Answer: ").endswith("assistant\nAnswer: ")
    plain = build_chat_prompt(tiny_tokenizer, msgs, use_chat_template=False)
    assert plain == "System: S\n\nUser: Q?\n\nAssistant: "


def test_model_without_chat_template(tiny_model_dir, tmp_path):
    import shutil

    d = tmp_path / "no-template"
    shutil.copytree(tiny_model_dir, d)
    for name in ("chat_template.jinja", "chat_template.json"):
        if (d / name).exists():
            (d / name).unlink()
    cfg = (d / "tokenizer_config.json").read_text()
    import json

    j = json.loads(cfg)
    j.pop("chat_template", None)
    (d / "tokenizer_config.json").write_text(json.dumps(j))
    _, tok = load_backbone(d)
    assert not has_chat_template(tok)
    msgs = [{"role": "user", "content": "Q?"}]
    assert build_chat_prompt(tok, msgs) == "User: Q?\n\nAssistant: "  # auto: plain fallback
    with pytest.raises(PluralignError, match="has no chat template") as ei:
        build_chat_prompt(tok, msgs, use_chat_template=True)
    assert "field 'chat_template'" in _one_line(ei.value)
