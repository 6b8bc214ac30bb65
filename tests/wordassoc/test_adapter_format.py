"""Word-association adapters are saved through :func:`pluralign.adapters.save_adapter` (issue 28,
item 5): peft's files and pluralign's record, so ``pluralign eval --adapter`` (and ``serve``) load
them as well as the word-association commands; the folder is replaced whole (``io.replace_dir``)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from pluralign.cli.main import app
from tests.conftest import make_tiny_model


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _swow(tmp_path):
    f = tmp_path / "strength.SWOW-EN.R1.csv"
    f.write_text("cue,response,R1,N,R1.Strength\n" + "".join(
        f"cue{i},resp{j},{5 - j},20,{(5 - j) / 20}\n" for i in range(60) for j in range(4)))
    return f


def test_save_replaces_the_folder_whole_with_the_lora_it_holds(tmp_path, tiny_tokenizer):
    from peft import LoraConfig, get_peft_model

    from pluralign.adapters import load_adapter, read_adapter_config
    from pluralign.wordassoc.train import _save_adapter, read_meta

    torch.manual_seed(0)
    model = get_peft_model(make_tiny_model("llama").float(), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                                          lora_dropout=0.0, task_type="CAUSAL_LM"))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    target = tmp_path / "sft" / "adapter"
    for stage in ("first", "second"):
        _save_adapter(model, tiny_tokenizer, target, {"stage": stage})
    assert [p.name for p in target.parent.iterdir()] == ["adapter"]  # nothing left aside
    assert read_meta(target)["stage"] == "second"
    rec = read_adapter_config(target, check_weights=True)
    assert rec["method"] == "lora" and rec["weights_format"] == "peft" and rec["extra"]["wordassoc_stage"] == "second"
    assert set(rec["config"]["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    ids = torch.randint(5, 590, (2, 8), generator=torch.Generator().manual_seed(0))
    ours = load_adapter(make_tiny_model("llama").float(), target).eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=ids).logits, model.eval()(input_ids=ids).logits, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def wa_run(tmp_path_factory, tiny_model_dir, one_thread):
    tmp = tmp_path_factory.mktemp("wa")
    out = tmp / "wa"
    res = _invoke("wordassoc", "train", "--stage", "sft", "--model", tiny_model_dir, "--data", _swow(tmp), "--min-responses", "1",
                  "--sft-steps", "2", "--batch-size", "2", "--lora-r", "4", "--device", "cpu", "--no-progress", "--out", out)
    assert res.exit_code == 0, res.output
    return out


def test_a_wordassoc_adapter_loads_in_pluralign_eval(wa_run, tiny_model_dir, tmp_path):
    ad = wa_run / "sft" / "adapter"
    names = {p.name for p in ad.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "pluralign_adapter.json", "pluralign_wordassoc.json"} <= names
    assert json.loads((ad / "adapter_config.json").read_text())["peft_type"] == "LORA"
    out = tmp_path / "ev"
    res = _invoke("eval", "--model", tiny_model_dir, "--adapter", ad, "--data", "wvs-shares", "--max-items", "2", "--no-plot",
                  "--no-progress", "--bootstrap", "0", "--out", out)
    assert res.exit_code == 0, res.output
    files = sorted(out.glob("eval-*.json"))
    assert files
    for f in files:
        r = json.loads(f.read_text())
        assert r["metrics"]["n"] == len(r["predictions"]) > 0 and r["adapter"], f


def test_pluralign_and_wordassoc_loaders_compute_alike(wa_run, tiny_model_dir):
    from pluralign.adapters import load_adapter_for_eval
    from pluralign.models import load_backbone
    from pluralign.wordassoc.train import load_with_adapter

    ad = wa_run / "sft" / "adapter"
    ids = torch.randint(5, 590, (2, 9), generator=torch.Generator().manual_seed(1))
    base, _ = load_backbone(str(tiny_model_dir), dtype="fp32", device="cpu")
    theirs = load_with_adapter(base, ad).eval()
    base, _ = load_backbone(str(tiny_model_dir), dtype="fp32", device="cpu")
    ours, _ = load_adapter_for_eval(base, ad)
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=ids).logits, theirs(input_ids=ids).logits, rtol=0, atol=1e-5)


def test_serve_loads_a_wordassoc_adapter(wa_run, tiny_model_dir):
    from pluralign.serve.engine import load_engine

    eng = load_engine(str(tiny_model_dir), adapter=wa_run / "sft" / "adapter", dtype="fp32", device="cpu")
    assert eng.info.adapter_method == "lora"
