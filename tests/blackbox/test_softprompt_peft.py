"""A searched soft prompt is also a peft PromptTuning adapter (issue 28, one format): the folder holds
the adapter_config.json + adapter_model.safetensors that ``PeftModel.save_pretrained`` writes, and
``PeftModel.from_pretrained(base, folder)`` computes what our soft-prompt path computes. Folders saved
before (prompt.safetensors + prompt.json only) still load, and so does a PromptTuning adapter alone."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from pluralign.adapters.softprompt import (
    META_FILE,
    PEFT_CONFIG_FILE,
    PEFT_KEY,
    PEFT_WEIGHTS_FILE,
    PROMPT_FILE,
    SoftPromptModel,
    load_soft_prompt,
    load_soft_prompt_model,
    save_soft_prompt,
)
from pluralign.blackbox import country_target
from pluralign.blackbox.search import SearchConfig, run_search
from pluralign.errors import PluralignError
from tests.conftest import make_tiny_model

T = 4


def _prompt(seed: int = 0) -> torch.Tensor:
    return torch.randn(T, 64, generator=torch.Generator().manual_seed(seed)) * 0.3


def _ids():
    return torch.randint(5, 590, (3, 9), generator=torch.Generator().manual_seed(1))


def test_the_peft_files_are_those_peft_writes(tmp_path):
    from peft import PromptTuningConfig, get_peft_model

    prompt = _prompt()
    base = make_tiny_model("llama")
    save_soft_prompt(tmp_path / "sp", prompt, {"country": "USA"}, model_config=base.config)
    assert sorted(p.name for p in (tmp_path / "sp").iterdir()) == sorted([PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE, PROMPT_FILE, META_FILE])
    pm = get_peft_model(base, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=T))
    with torch.no_grad():
        pm.prompt_encoder["default"].embedding.weight.copy_(prompt)
    pm.save_pretrained(str(tmp_path / "peft"))
    ours, theirs = (json.loads((tmp_path / d / PEFT_CONFIG_FILE).read_text()) for d in ("sp", "peft"))
    assert ours == theirs and ours["peft_type"] == "PROMPT_TUNING" and ours["num_layers"] == 2 and ours["token_dim"] == 64
    ours_t, theirs_t = (load_file(str(tmp_path / d / PEFT_WEIGHTS_FILE)) for d in ("sp", "peft"))
    assert list(ours_t) == list(theirs_t) == [PEFT_KEY]
    assert ours_t[PEFT_KEY].dtype == theirs_t[PEFT_KEY].dtype and torch.equal(ours_t[PEFT_KEY], theirs_t[PEFT_KEY])
    # the model name is recorded as peft's base model
    save_soft_prompt(tmp_path / "named", prompt, {"model": "HuggingFaceTB/SmolLM2-135M"})
    cfg = json.loads((tmp_path / "named" / PEFT_CONFIG_FILE).read_text())
    assert cfg["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M" and cfg["num_virtual_tokens"] == T


@torch.no_grad()
def test_peft_from_pretrained_computes_what_our_soft_prompt_computes(tmp_path):
    from peft import PeftModel

    save_soft_prompt(tmp_path / "sp", _prompt(), {"model": "tiny"}, model_config=make_tiny_model("llama").config)
    ids = _ids()
    att = torch.ones_like(ids)
    peft_model = PeftModel.from_pretrained(make_tiny_model("llama"), str(tmp_path / "sp")).eval()
    theirs = peft_model(input_ids=ids, attention_mask=att, labels=ids)
    ours_model = load_soft_prompt_model(make_tiny_model("llama"), tmp_path / "sp")
    ours = ours_model(input_ids=ids, attention_mask=att, labels=ids)
    assert theirs.logits.shape == (3, T + 9, 600)  # peft's logits start with the virtual positions
    torch.testing.assert_close(theirs.logits[:, T:], ours.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(theirs.loss, ours.loss, rtol=0, atol=1e-5)
    base = make_tiny_model("llama")(input_ids=ids, attention_mask=att).logits
    assert not torch.allclose(ours.logits, base, atol=1e-3)  # not vacuous
    # a folder with the peft files only (e.g. a PromptTuning adapter trained with peft) loads the same prompt
    for f in (PROMPT_FILE, META_FILE):
        (tmp_path / "sp" / f).unlink()
    t, meta = load_soft_prompt(tmp_path / "sp")
    assert torch.equal(t, _prompt()) and meta == {"model": "tiny"}
    again = load_soft_prompt_model(make_tiny_model("llama"), tmp_path / "sp")(input_ids=ids, attention_mask=att).logits
    torch.testing.assert_close(again, ours.logits, rtol=0, atol=0)


def test_a_folder_saved_before_the_peft_files_still_loads(tmp_path, tiny_llama):
    save_soft_prompt(tmp_path / "old", _prompt(2), {"model": "tiny", "loss": 1.5})
    for f in (PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE):
        (tmp_path / "old" / f).unlink()
    t, meta = load_soft_prompt(tmp_path / "old")
    assert torch.equal(t, _prompt(2)) and meta["loss"] == 1.5 and meta["tokens"] == T
    assert isinstance(load_soft_prompt_model(tiny_llama, tmp_path / "old"), SoftPromptModel)


def test_bad_peft_prompt_folders_are_clear_errors(tmp_path):
    save_soft_prompt(tmp_path / "sp", _prompt(), {})
    for f in (PROMPT_FILE, META_FILE):
        (tmp_path / "sp" / f).unlink()
    cfg_file = tmp_path / "sp" / PEFT_CONFIG_FILE
    cfg = json.loads(cfg_file.read_text())
    cfg_file.write_text(json.dumps({**cfg, "num_virtual_tokens": T + 1}))
    with pytest.raises(PluralignError, match="5 virtual tokens but the tensor has 4 rows"):
        load_soft_prompt(tmp_path / "sp")
    cfg_file.write_text(json.dumps({**cfg, "peft_type": "LORA"}))
    with pytest.raises(PluralignError, match="not a soft prompt: a LORA adapter config"):
        load_soft_prompt(tmp_path / "sp")
    cfg_file.write_text(json.dumps(cfg))
    (tmp_path / "sp" / PEFT_WEIGHTS_FILE).unlink()
    with pytest.raises(PluralignError, match="has no adapter_model.safetensors"):
        load_soft_prompt(tmp_path / "sp")


def test_the_search_writes_a_peft_adapter_of_its_best_prompt(tiny_evaluator, tmp_path):
    from peft import PeftModel

    run_search(tiny_evaluator, country_target("USA"), SearchConfig(optimizer="de", pop=4, gens=1, seed=0), out_dir=tmp_path,
               progress=False, plot=False, meta={"model": "tiny"})
    t, meta = load_soft_prompt(tmp_path)
    cfg = json.loads((tmp_path / PEFT_CONFIG_FILE).read_text())
    assert cfg["num_virtual_tokens"] == t.shape[0] == 3 and cfg["num_layers"] == 2 and cfg["num_attention_heads"] == 4
    assert cfg["base_model_name_or_path"] == "tiny" and torch.equal(load_file(str(tmp_path / PEFT_WEIGHTS_FILE))[PEFT_KEY], t)
    ids = _ids()
    with torch.no_grad():
        theirs = PeftModel.from_pretrained(make_tiny_model("llama"), str(tmp_path)).eval()(input_ids=ids).logits[:, 3:]
        ours = SoftPromptModel(make_tiny_model("llama"), t)(input_ids=ids).logits
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)


def test_a_soft_prompt_given_as_an_adapter_is_named_as_such(tmp_path):
    from pluralign.adapters import read_adapter_config

    save_soft_prompt(tmp_path / "sp", _prompt(), {"model": "tiny"})
    with pytest.raises(PluralignError, match=r"a soft prompt \(a peft PromptTuning adapter.*--soft-prompt"):
        read_adapter_config(tmp_path / "sp")
