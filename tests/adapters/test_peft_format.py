"""LoRA, DoRA and P-tuning v2 adapters are saved in peft's own files (issue 28, item 5):
``PeftModel.from_pretrained(base, RUN/adapter)`` loads them and computes what pluralign's loader
computes; pluralign's record sits beside them in ``pluralign_adapter.json``. Methods peft cannot
represent keep their record in ``adapter_config.json``, and folders saved before (format version 1:
every method under pluralign's parameter names, the record in ``adapter_config.json``) still load
in the Python API, ``eval --adapter``, ``serve``, ``train --init-adapter`` and the analyses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from pluralign.adapters import adapter_config, build_adapted_model, load_adapter, load_adapter_for_eval, read_adapter_config, save_adapter
from pluralign.adapters.checkpoint import CONFIG, RECORD, WEIGHTS, _sha256, adapter_state_dict, record_file
from pluralign.cli.main import app
from tests.conftest import make_tiny_model

PEFT = {"lora": {}, "dora": {}, "ptuning-v2": {"num_virtual_tokens": 4}}


def _trained(method: str, **kw):
    """A tiny Llama with ``method``'s adapter, every trainable tensor moved off its initial value."""
    torch.manual_seed(0)
    m = build_adapted_model(make_tiny_model("llama").float(), method, adapter_config(method, **kw))
    with torch.no_grad():
        for p in m.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return m.eval()


def _logits(model, ids, **kw):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids), **kw).logits


def to_version_1(folder: Path, model) -> None:
    """Rewrite ``folder`` as a version-1 adapter of ``model`` was saved: the weights under
    pluralign's parameter names and the record in adapter_config.json (no pluralign_adapter.json)."""
    meta = json.loads(record_file(folder).read_text())
    for f in (RECORD, CONFIG, WEIGHTS):
        (folder / f).unlink(missing_ok=True)
    save_file(adapter_state_dict(model), str(folder / WEIGHTS), metadata={"format": "pluralign-adapter", "method": meta["method"]})
    meta.pop("weights_format", None)
    meta["version"] = 1
    meta["weights"] = {"bytes": (folder / WEIGHTS).stat().st_size, "sha256": _sha256(folder / WEIGHTS)}
    (folder / CONFIG).write_text(json.dumps(meta))


@pytest.mark.parametrize("method", sorted(PEFT))
def test_peft_methods_are_saved_as_peft_saves_them(method, tmp_path):
    m = _trained(method, **PEFT[method])
    path = save_adapter(m, tmp_path / "a", base_model="tiny")
    assert sorted(p.name for p in path.iterdir()) == [CONFIG, WEIGHTS, RECORD]
    rec = json.loads((path / RECORD).read_text())
    assert rec["format"] == "pluralign-adapter" and rec["method"] == method and rec["weights_format"] == "peft"
    assert read_adapter_config(path, check_weights=True) == rec
    # the very files PeftModel.save_pretrained writes: config and tensor names and values
    m.model.save_pretrained(str(tmp_path / "peft"), save_embedding_layers=False)
    assert json.loads((path / CONFIG).read_text()) == json.loads((tmp_path / "peft" / CONFIG).read_text())
    ours, theirs = load_file(str(path / WEIGHTS)), load_file(str(tmp_path / "peft" / WEIGHTS))
    assert sorted(ours) == sorted(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


@pytest.mark.parametrize("method", sorted(PEFT))
def test_peft_from_pretrained_computes_what_our_loader_computes(method, tmp_path):
    from peft import PeftModel

    m = _trained(method, **PEFT[method])
    path = save_adapter(m, tmp_path / "a", base_model="tiny")
    ids = torch.randint(5, 590, (3, 9), generator=torch.Generator().manual_seed(1))
    ref = _logits(m, ids)
    theirs = _logits(PeftModel.from_pretrained(make_tiny_model("llama").float(), str(path)).eval(), ids)
    ours, kw = load_adapter_for_eval(make_tiny_model("llama").float(), path)
    assert kw is None and ours.method == method
    torch.testing.assert_close(theirs, _logits(ours, ids), rtol=0, atol=1e-5)
    torch.testing.assert_close(theirs, ref, rtol=0, atol=1e-5)
    assert not torch.allclose(ref, _logits(make_tiny_model("llama").float().eval(), ids), atol=1e-3)  # not vacuous


@pytest.mark.parametrize("method,kw", [("cuma", {"profile_dim": 8, "n_experts": 4}),
                                       ("ptuning-v2", {"num_virtual_tokens": 4, "prefix_projection": True})])
def test_methods_peft_cannot_represent_keep_their_record_in_adapter_config(method, kw, tmp_path):
    m = _trained(method, **kw)
    path = save_adapter(m, tmp_path / "a", base_model="tiny")
    assert sorted(p.name for p in path.iterdir()) == [CONFIG, WEIGHTS]
    meta = json.loads((path / CONFIG).read_text())
    assert meta["format"] == "pluralign-adapter" and meta["weights_format"] == "pluralign" and record_file(path) == path / CONFIG
    assert set(load_file(str(path / WEIGHTS))) == set(adapter_state_dict(m))
    ids = torch.randint(5, 590, (2, 7), generator=torch.Generator().manual_seed(2))
    prof = {"profile_embeds": torch.randn(2, 8)} if method == "cuma" else {}
    torch.testing.assert_close(_logits(load_adapter(make_tiny_model("llama").float(), path).eval(), ids, **prof),
                               _logits(m, ids, **prof), rtol=0, atol=0)


@pytest.mark.parametrize("method", sorted(PEFT))
def test_an_adapter_saved_before_version_2_still_loads(method, tmp_path):
    m = _trained(method, **PEFT[method])
    path = save_adapter(m, tmp_path / "a", base_model="tiny")
    to_version_1(path, m)
    assert record_file(path) == path / CONFIG and not (path / RECORD).exists()
    assert read_adapter_config(path, check_weights=True)["version"] == 1
    ids = torch.randint(5, 590, (2, 7), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(_logits(load_adapter(make_tiny_model("llama").float(), path).eval(), ids), _logits(m, ids),
                               rtol=0, atol=0)


def test_a_peft_folder_without_our_record_is_named_as_such(tmp_path):
    from pluralign.errors import PluralignError

    m = _trained("lora")
    m.model.save_pretrained(str(tmp_path / "peft"), save_embedding_layers=False)
    with pytest.raises(PluralignError, match="peft adapter without pluralign's record") as e:
        read_adapter_config(tmp_path / "peft")
    assert CONFIG in str(e.value)


def test_record_names_weights_peft_cannot_hold(tmp_path):
    """A record that says peft weights for a method peft cannot represent is one error naming the field."""
    from pluralign.errors import PluralignError

    m = _trained("cuma", profile_dim=8, n_experts=4)
    path = save_adapter(m, tmp_path / "a", base_model="tiny")
    meta = json.loads((path / CONFIG).read_text())
    meta["weights_format"] = "peft"
    (path / CONFIG).write_text(json.dumps(meta))
    with pytest.raises(PluralignError, match="weights_format"):
        load_adapter(make_tiny_model("llama").float(), path)
    meta["weights_format"] = "onnx"
    (path / CONFIG).write_text(json.dumps(meta))
    with pytest.raises(PluralignError, match="weights_format"):
        read_adapter_config(path)


# ------------------------------------------------------------------------------------ through the CLI
QUESTIONS = "Q1,Q2,Q3,Q4,Q5,Q6"
COMMON = ["--task", "distributional", "--data", "wvs-shares", "--countries", "USA,DEU,THA", "--questions", QUESTIONS,
          "--split", "question", "--test-frac", "0.34", "--batch-size", "4", "--save-steps", "0", "--no-progress"]


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir, one_thread):
    """A 2-step LoRA and DoRA run of `pluralign train`, and a version-1 copy of each."""
    from pluralign.models import load_backbone

    root = tmp_path_factory.mktemp("runs")
    out = {}
    for method in ("lora", "dora"):
        run = root / method
        res = _invoke("train", "--method", method, "--model", tiny_model_dir, *COMMON, "--steps", "2", "--lr", "1e-2", "--out", run)
        assert res.exit_code == 0, res.output
        old = root / f"{method}-v1"
        shutil.copytree(run, old)
        base, _ = load_backbone(str(tiny_model_dir), dtype="fp32", device="cpu")
        to_version_1(old / "adapter", load_adapter(base, run / "adapter"))
        out[method], out[f"{method}-v1"] = run, old
    return out


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_a_trained_run_loads_with_peft_from_pretrained(runs, method, tiny_model_dir):
    from peft import PeftModel

    from pluralign.models import load_backbone

    ad = runs[method] / "adapter"
    assert (ad / CONFIG).exists() and read_adapter_config(ad)["extra"]["split"]["by"] == "question"
    ids = torch.randint(5, 590, (2, 11), generator=torch.Generator().manual_seed(4))
    base, _ = load_backbone(str(tiny_model_dir), dtype="fp32", device="cpu")
    theirs = _logits(PeftModel.from_pretrained(base, str(ad)).eval(), ids)
    base, _ = load_backbone(str(tiny_model_dir), dtype="fp32", device="cpu")
    ours, _ = load_adapter_for_eval(base, ad)
    torch.testing.assert_close(theirs, _logits(ours, ids), rtol=0, atol=1e-5)
    base, _ = load_backbone(str(tiny_model_dir), dtype="fp32", device="cpu")
    old, _ = load_adapter_for_eval(base, runs[f"{method}-v1"] / "adapter")
    torch.testing.assert_close(theirs, _logits(old, ids), rtol=0, atol=1e-5)


@pytest.mark.parametrize("method", ["lora", "lora-v1", "dora"])
def test_eval_adapter_scores_the_runs_held_out_part(runs, method, tiny_model_dir, tmp_path):
    ad = runs[method] / "adapter"
    res = _invoke("eval", "--model", tiny_model_dir, "--adapter", ad, "--no-plot", "--no-progress", "--bootstrap", "0",
                  "--out", tmp_path / "ev")
    assert res.exit_code == 0, res.output
    (f,) = (tmp_path / "ev").glob("eval-*.json")
    r = json.loads(f.read_text())
    split = json.loads((runs[method] / "split.json").read_text())
    assert r["split"]["from"] == "adapter" and r["split"]["trained_rows_in_test"] == 0
    assert {p["item_id"] for p in r["predictions"]} == set(split["test_unit_list"])


def test_the_old_and_new_layouts_score_alike(runs, tiny_model_dir, tmp_path):
    preds = []
    for name in ("lora", "lora-v1"):
        out = tmp_path / name
        res = _invoke("eval", "--model", tiny_model_dir, "--adapter", runs[name] / "adapter", "--no-plot", "--no-progress",
                      "--bootstrap", "0", "--out", out)
        assert res.exit_code == 0, res.output
        (f,) = out.glob("eval-*.json")
        preds.append(json.loads(f.read_text())["predictions"])
    assert len(preds[0]) == len(preds[1]) > 0
    for a, b in zip(*preds):
        assert a["item_id"] == b["item_id"]
        assert a["probs"] == pytest.approx(b["probs"], abs=1e-6)


def test_dpo_init_adapter_reads_an_old_folder(runs, tiny_model_dir, tmp_path):
    res = _invoke("train", "--method", "lora", "--stage", "dpo", "--model", tiny_model_dir, *COMMON, "--steps", "1",
                  "--init-adapter", runs["lora-v1"] / "adapter", "--out", tmp_path / "dpo")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "dpo" / "adapter" / RECORD).exists() and (tmp_path / "dpo" / "adapter" / CONFIG).exists()


@pytest.mark.parametrize("name", ["lora", "lora-v1"])
def test_serve_and_the_analyses_read_both_layouts(runs, name, tiny_model_dir):
    from pluralign.analysis.runs import open_run
    from pluralign.serve.engine import load_engine

    eng = load_engine(str(tiny_model_dir), adapter=runs[name] / "adapter", dtype="fp32", device="cpu")
    assert eng.info.adapter_method == "lora"
    run = open_run(runs[name], need_eval=False)
    assert run.adapter == runs[name] / "adapter" and run.method == "lora" and run.adapter_meta()["method"] == "lora"
