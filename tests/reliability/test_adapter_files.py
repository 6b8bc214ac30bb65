"""Damaged adapters and checkpoints (issue 27, class 12): a truncated, corrupted or non-finite
adapter, or a malformed record (pluralign_adapter.json), is one ``error:`` line naming the file (and field or
tensor), exit status 2, in every command that reads adapters -- ``eval --adapter``, ``serve
--adapter``, ``train --stage dpo --init-adapter`` -- and in the Python API they share
(:func:`pluralign.adapters.load_adapter`). Nothing is scored with NaN weights, no output folder is
left behind. A truncated optimizer or scheduler state is named by
:func:`pluralign.adapters.torch_file_problem`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pluralign.adapters import load_adapter, read_adapter_config, torch_file_problem, weights_problem
from pluralign.errors import PluralignError
from reliability._helpers import QUESTIONS, assert_one_error, invoke, train_args

pytestmark = pytest.mark.usefixtures("one_thread")

W, C = "adapter_model.safetensors", "pluralign_adapter.json"  # a LoRA adapter: its record beside peft's files
COMMON = ["--data", "wvs-shares", "--countries", "USA,DEU,THA", "--questions", QUESTIONS, "--split", "question",
          "--test-frac", "0.34", "--task", "distributional", "--batch-size", "4", "--logging-steps", "1", "--no-progress"]


@pytest.fixture(scope="module")
def sft(tmp_path_factory, tiny_model_dir):
    """A 2-step LoRA run: a real adapter (with its weights' size and SHA-256 recorded) and its run folder."""
    run = tmp_path_factory.mktemp("sft") / "run"
    res = invoke(["train", "--method", "lora", "--model", tiny_model_dir, *COMMON, "--steps", "2", "--save-steps", "0", "--out", run])
    assert res.exit_code == 0, res.output
    meta = json.loads((run / "adapter" / C).read_text())
    assert set(meta["weights"]) == {"bytes", "sha256"}
    return run


def _rewrite(ad: Path, value: float, *, keep_record: bool) -> str:
    sd = load_file(str(ad / W))
    k = sorted(sd)[0]
    sd[k] = sd[k].clone()
    sd[k].view(-1)[0] = value
    save_file(sd, str(ad / W), metadata={"format": "pluralign-adapter", "method": "lora"})
    meta = json.loads((ad / C).read_text())
    if keep_record:  # as if saved by a version that did not refuse non-finite weights
        from pluralign.adapters.checkpoint import _sha256

        meta["weights"] = {"bytes": (ad / W).stat().st_size, "sha256": _sha256(ad / W)}
    else:  # an adapter saved before sizes and checksums were recorded
        meta.pop("weights")
    (ad / C).write_text(json.dumps(meta))
    return k


def _cfg(ad: Path, change) -> None:
    meta = json.loads((ad / C).read_text())
    change(meta)
    (ad / C).write_text(json.dumps(meta))


def _bytes(ad: Path, f: str, fn) -> None:
    (ad / f).write_bytes(fn((ad / f).read_bytes()))


#: name -> (damage(adapter folder) -> tensor name or None, the file the error must name, a word of the message)
DAMAGE = {
    "weights cut in half": (lambda ad: _bytes(ad, W, lambda b: b[: len(b) // 2]), W, "truncated"),
    "weights cut to 5 bytes": (lambda ad: _bytes(ad, W, lambda b: b[:5]), W, "truncated"),
    "weights empty": (lambda ad: _bytes(ad, W, lambda b: b""), W, "truncated"),
    "weights random bytes": (lambda ad: _bytes(ad, W, lambda b: os.urandom(len(b))), W, "damaged"),
    "weights header garbled": (lambda ad: _bytes(ad, W, lambda b: b[:8] + b"#" * 12 + b[20:]), W, "header"),
    "weights padded": (lambda ad: _bytes(ad, W, lambda b: b + b"\0" * 64), W, "damaged"),
    "weights one byte flipped": (lambda ad: _bytes(ad, W, lambda b: b[:-1] + bytes([b[-1] ^ 0xFF])), W, "SHA-256"),
    "weights missing": (lambda ad: (ad / W).unlink(), "adapter", "missing"),
    "NaN weight (no checksum)": (lambda ad: _rewrite(ad, float("nan"), keep_record=False), W, "NaN"),
    "inf weight (checksum matches)": (lambda ad: _rewrite(ad, float("inf"), keep_record=True), W, "inf"),
    "-inf weight": (lambda ad: _rewrite(ad, float("-inf"), keep_record=False), W, "inf"),
    "config not JSON": (lambda ad: (ad / C).write_text("{ not json"), C, "JSON"),
    "config binary": (lambda ad: (ad / C).write_bytes(bytes(range(256))), C, ""),
    "config a list": (lambda ad: (ad / C).write_text("[1, 2]"), C, "JSON object"),
    "config truncated": (lambda ad: _bytes(ad, C, lambda b: b[: len(b) // 2]), C, "JSON"),
    "config empty": (lambda ad: (ad / C).write_text(""), C, ""),
    "method unknown": (lambda ad: _cfg(ad, lambda m: m.update(method="nosuch")), C, "nosuch"),
    "method missing": (lambda ad: _cfg(ad, lambda m: m.pop("method")), C, "method"),
    "method a number": (lambda ad: _cfg(ad, lambda m: m.update(method=3)), C, "method"),
    "format other": (lambda ad: _cfg(ad, lambda m: m.update(format="peft")), C, "format"),
    "config settings not an object": (lambda ad: _cfg(ad, lambda m: m.update(config=[1])), C, "config"),
    "rank a string": (lambda ad: _cfg(ad, lambda m: m["config"].update(r="x")), C, "config.r"),
    "rank a float": (lambda ad: _cfg(ad, lambda m: m["config"].update(r=2.5)), C, "config.r"),
    "rank zero": (lambda ad: _cfg(ad, lambda m: m["config"].update(r=0)), C, "config.r"),
    "alpha NaN": (lambda ad: (ad / C).write_text((ad / C).read_text().replace('"alpha": ', '"alpha": NaN, "x_alpha": ')), C, ""),
    "target modules a number": (lambda ad: _cfg(ad, lambda m: m["config"].update(target_modules=5)), C, "config.target_modules"),
    "layers a string list": (lambda ad: _cfg(ad, lambda m: m["config"].update(layers_to_transform=["a"])), C, "config.layers_to_transform"),
    "unknown setting": (lambda ad: _cfg(ad, lambda m: m["config"].update(nosuch=1)), C, "config.nosuch"),
    "extra a list": (lambda ad: _cfg(ad, lambda m: m.update(extra=[1])), C, "extra"),
    "backbone a list": (lambda ad: _cfg(ad, lambda m: m.update(backbone=[1])), C, "backbone"),
    "backbone nested": (lambda ad: _cfg(ad, lambda m: m["backbone"].update(hidden_size=[64])), C, "backbone"),
    "profile encoder a string": (lambda ad: _cfg(ad, lambda m: m.update(profile_encoder="minilm")), C, "profile_encoder"),
    "recorded size wrong": (lambda ad: _cfg(ad, lambda m: m["weights"].update(bytes=12)), W, "records"),
    "recorded checksum a number": (lambda ad: _cfg(ad, lambda m: m["weights"].update(sha256=1)), C, "weights"),
}
NAMES = sorted(DAMAGE)


def _damaged(sft: Path, tmp_path: Path, name: str) -> tuple[Path, str | None]:
    ad = tmp_path / "adapter"
    shutil.copytree(sft / "adapter", ad)
    tensor = DAMAGE[name][0](ad)
    return ad, tensor if isinstance(tensor, str) else None


def _check_line(line: str, ad: Path, name: str, tensor: str | None) -> None:
    _, f, word = DAMAGE[name]
    assert str(ad) in line, line
    if f != "adapter":
        assert f in line, line
    assert word in line, line
    if tensor:
        assert tensor in line, line  # names the tensor


@pytest.mark.parametrize("name", NAMES)
def test_python_api_refuses_with_one_error(sft, tmp_path, name, tiny_model_dir):
    """load_adapter: what eval, serve, DPO --init-adapter and the analyses all call."""
    from pluralign.models import load_backbone

    ad, tensor = _damaged(sft, tmp_path, name)
    model, _ = load_backbone(str(tiny_model_dir), dtype="fp32", device="cpu")
    with pytest.raises(PluralignError) as ei:
        load_adapter(model, ad)
    _check_line(str(ei.value), ad, name, tensor)


@pytest.mark.parametrize("name", NAMES)
def test_eval_adapter(sft, tmp_path, name, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ad, tensor = _damaged(sft, tmp_path, name)
    out = tmp_path / "eval"
    res = invoke(["eval", "--model", tiny_model_dir, "--adapter", ad, "--max-items", "2", "--no-plot", "--no-progress", "--out", out])
    _check_line(assert_one_error(res), ad, name, tensor)
    assert not out.exists()


@pytest.mark.parametrize("name", NAMES)
def test_serve_adapter(sft, tmp_path, name, tiny_model_dir, monkeypatch):
    uvicorn = pytest.importorskip("uvicorn")
    pytest.importorskip("fastapi")

    def started(*a, **k):
        raise AssertionError("the server started with a damaged adapter")

    monkeypatch.setattr(uvicorn, "run", started)
    ad, tensor = _damaged(sft, tmp_path, name)
    res = invoke(["serve", "--model", tiny_model_dir, "--adapter", ad, "--port", "65001", "--device", "cpu"])
    _check_line(assert_one_error(res), ad, name, tensor)


@pytest.mark.parametrize("name", ["weights cut in half", "weights one byte flipped", "NaN weight (no checksum)",
                                  "inf weight (checksum matches)", "config not JSON", "rank a string", "extra a list",
                                  "recorded size wrong", "weights missing", "method unknown"])
def test_dpo_init_adapter(sft, tmp_path, name, tiny_model_dir):
    ad, tensor = _damaged(sft, tmp_path, name)
    res = invoke(["train", "--method", "lora", "--stage", "dpo", "--model", tiny_model_dir, *COMMON, "--steps", "2",
                  "--save-steps", "0", "--init-adapter", ad, "--out", tmp_path / "dpo"])
    _check_line(assert_one_error(res), ad, name, tensor)
    assert not (tmp_path / "dpo" / "adapter").exists()


def test_the_undamaged_adapter_loads_everywhere(sft, tmp_path, tiny_model_dir, monkeypatch):
    """The control: the same commands on the intact adapter succeed (the damage is what fails)."""
    monkeypatch.chdir(tmp_path)
    res = invoke(["eval", "--model", tiny_model_dir, "--adapter", sft / "adapter", "--max-items", "2", "--no-plot", "--no-progress",
                  "--bootstrap", "0", "--out", tmp_path / "eval"])
    assert res.exit_code == 0, res.output
    assert read_adapter_config(sft / "adapter", check_weights=True)["method"] == "lora"


def test_adapter_path_that_is_a_file_or_missing(tmp_path, tiny_model_dir):
    f = tmp_path / "a-file"
    f.write_text("x")
    for p, word in ((f, "a file"), (tmp_path / "missing", "not found")):
        line = assert_one_error(invoke(["eval", "--model", tiny_model_dir, "--adapter", p, "--out", tmp_path / "o"]))
        assert str(p) in line and word in line, line


def test_saving_non_finite_weights_is_refused(sft, tmp_path, tiny_model_dir):
    from pluralign.adapters import save_adapter
    from pluralign.models import load_backbone

    model, _ = load_backbone(str(tiny_model_dir), dtype="fp32", device="cpu")
    m = load_adapter(model, sft / "adapter")
    p = next(p for p in m.parameters() if p.requires_grad)
    with torch.no_grad():
        p.view(-1)[0] = float("nan")
    with pytest.raises(PluralignError, match="NaN or inf"):
        save_adapter(m, tmp_path / "out", base_model="tiny")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------ header checks
@pytest.mark.parametrize("cut", [0, 1, 7, 8, 9, 50, -1, -100])
def test_weights_problem_finds_every_truncation(sft, tmp_path, cut):
    data = (sft / "adapter" / W).read_bytes()
    assert weights_problem(sft / "adapter" / W) is None
    f = tmp_path / W
    f.write_bytes(data[:cut] if cut >= 0 else data[:cut])
    assert weights_problem(f) is not None


# ------------------------------------------------------------------------------------ checkpoints
def test_torch_file_problem_finds_truncated_optimizer_and_scheduler_states(tmp_path):
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.randn(64, 64))])
    f = tmp_path / "optimizer.pt"
    torch.save({"state": {0: {"exp_avg": torch.randn(64, 64)}}, "param_groups": opt.state_dict()["param_groups"]}, f)
    s = tmp_path / "scheduler.pt"
    torch.save({"last_epoch": 3, "base_lrs": [1e-3]}, s)
    assert torch_file_problem(f) is None and torch_file_problem(s) is None
    data = f.read_bytes()
    for n in (0, 10, len(data) // 2, len(data) - 30, len(data) - 1):
        (tmp_path / "cut.pt").write_bytes(data[:n])
        assert torch_file_problem(tmp_path / "cut.pt") is not None, n
    (tmp_path / "junk.pt").write_bytes(os.urandom(500))
    assert torch_file_problem(tmp_path / "junk.pt") is not None
    assert torch_file_problem(tmp_path / "missing.pt") is not None


@pytest.mark.parametrize("which", ["optimizer.pt", "scheduler.pt"])
def test_truncated_state_in_the_only_checkpoint_is_one_error_on_resume(tmp_path, tiny_model_dir, which):
    run = tmp_path / "run"
    res = invoke(train_args(tiny_model_dir, run, steps=4, save_steps=2))
    assert res.exit_code == 0, res.output
    shutil.rmtree(run / "checkpoints" / "checkpoint-4")
    shutil.rmtree(run / "adapter")
    (run / "train_summary.json").unlink()
    f = run / "checkpoints" / "checkpoint-2" / which
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    line = assert_one_error(invoke(train_args(tiny_model_dir, run, steps=4, save_steps=2, extra=["--resume"])))
    assert "checkpoint-2" in line and which in line, line


# ------------------------------------------------------------------------------------ soft prompts
SOFT = {
    "prompt.json a list": (lambda d: (d / "prompt.json").write_text("[]"), "prompt.json"),
    "prompt.json binary": (lambda d: (d / "prompt.json").write_bytes(bytes(range(256))), "prompt.json"),
    "prompt.json not JSON": (lambda d: (d / "prompt.json").write_text("{"), "prompt.json"),
    "weights truncated": (lambda d: _bytes(d, "prompt.safetensors", lambda b: b[: len(b) // 2]), "prompt.safetensors"),
    "weights empty": (lambda d: (d / "prompt.safetensors").write_bytes(b""), "prompt.safetensors"),
    "NaN in the prompt": (lambda d: save_file({"soft_prompt": torch.full((2, 64), float("nan"))}, str(d / "prompt.safetensors")),
                          "prompt.safetensors"),
    "wrong hidden size": (lambda d: (save_file({"soft_prompt": torch.zeros(2, 8)}, str(d / "prompt.safetensors")),
                                     (d / "prompt.json").unlink()), ""),
}


@pytest.mark.parametrize("name", sorted(SOFT))
def test_eval_soft_prompt_damaged(name, tmp_path, tiny_model_dir, monkeypatch):
    from pluralign.adapters.softprompt import save_soft_prompt

    monkeypatch.chdir(tmp_path)
    d = tmp_path / "sp"
    save_soft_prompt(d, torch.zeros(2, 64), {"model": "tiny"})
    damage, f = SOFT[name]
    damage(d)
    line = assert_one_error(invoke(["eval", "--model", tiny_model_dir, "--soft-prompt", d, "--data", "wvs-shares", "--max-items", "2",
                                    "--no-plot", "--no-progress", "--out", tmp_path / "eval"]))
    assert str(d) in line and f in line, line
    assert not (tmp_path / "eval").exists()
