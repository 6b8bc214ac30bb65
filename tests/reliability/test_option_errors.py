"""Options (issue 27, class 13): every usage error of every command is one ``error:`` line and exit
status 2 (no boxed panel, no usage block); values that name nothing, non-finite soft-prompt
constants and unknown DE strategies are refused before any work and leave no file; a short
word-association run does not crash after saving; a cache folder under a regular file is one line.
"""

from __future__ import annotations

import os

import pytest

from reliability._helpers import assert_one_error, invoke, stderr_of

BOX = ("╭", "╰", "│", "─")


def _commands():
    """``(path, click command)`` of every leaf command of ``pluralign``."""
    import typer.main

    from pluralign.cli.main import app

    out = []

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in sorted(subs.items()):
                walk(sub, [*path, name])
        else:
            out.append((path, cmd))

    walk(typer.main.get_command(app), [])
    return out


COMMANDS = _commands()


def _numeric_options():
    """``(path, --flag, int | float)`` of every whole-number or number option (from the commands'
    type hints, which every typer version keeps)."""
    import typing

    cases = []
    for path, cmd in COMMANDS:
        hints = typing.get_type_hints(cmd.callback) if cmd.callback else {}
        for p in cmd.params:
            t = hints.get(p.name)
            args = [a for a in typing.get_args(t) if a is not type(None)]
            t = args[0] if len(args) == 1 else t
            longs = [o for o in getattr(p, "opts", []) if o.startswith("--")]
            if longs and t in (int, float):
                cases.append((path, longs[0], t.__name__))
    return cases


NUMERIC = _numeric_options()


def _assert_usage_line(res, *needles):
    line = assert_one_error(res)
    text = res.output + stderr_of(res)
    assert not any(b in text for b in BOX), text
    assert "Usage:" not in text and "Try '" not in text, text
    for n in needles:
        assert n in line, line
    return line


def test_the_matrix_covers_every_command():
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {"eval", "train", "softprompt", "compare", "serve", "wordassoc train", "wordassoc eval", "data inspect"} <= names
    assert len(NUMERIC) >= 100  # the numeric options of all commands


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=[" ".join(p) for p, _ in COMMANDS])
def test_mistyped_option(path):
    _assert_usage_line(invoke([*path, "--nosuch-option", "1"]), "--nosuch-option")


@pytest.mark.parametrize("path, opt, kind", NUMERIC, ids=[f"{' '.join(p)} {o}" for p, o, _ in NUMERIC])
def test_non_numeric_value(path, opt, kind):
    _assert_usage_line(invoke([*path, opt, "abc"]), opt)


@pytest.mark.parametrize("args, needle", [
    (["nosuch"], "nosuch"), (["wordassoc", "nosuch"], "nosuch"), (["data", "nosuch"], "nosuch"),
    (["softprompt"], "--country"), (["eval", "--method"], "--method"), (["train", "--steps"], "--steps"),
    (["eval", "--plot", "yes"], "yes"), (["eval", "--max-items", "1.5"], "--max-items"), (["train", "--lr", "1e-3x"], "--lr"),
    (["train", "--steps", ""], "--steps"), (["eval", "--batch-size", "1,2"], "--batch-size"),
])
def test_other_usage_errors(args, needle):
    _assert_usage_line(invoke(args), needle)


def test_help_and_no_arguments_still_show_the_help():
    res = invoke(["--help"])
    assert res.exit_code == 0 and "eval" in res.output
    res = invoke(["eval", "--help"])
    assert res.exit_code == 0 and "--adapter" in res.output
    res = invoke([])
    assert res.exit_code in (0, 2) and "Usage" in res.output + stderr_of(res) and "error:" not in stderr_of(res)


def test_the_installed_entry_point_prints_one_line(tmp_path):
    import subprocess
    import sys

    from reliability._helpers import ROOT

    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), COLUMNS="80")
    for args in (["eval", "--mdoel", "x"], ["train", "--steps", "many"]):
        p = subprocess.run([sys.executable, "-m", "pluralign.cli.main", *args], capture_output=True, text=True, env=env, timeout=120,
                           cwd=tmp_path)
        assert p.returncode == 2, p.stderr
        assert p.stderr.count("error:") == 1 and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert p.stdout == "" and "Traceback" not in p.stderr


# ------------------------------------------------------------------------------------ lists that name nothing
EMPTY_LISTS = [
    (cmd, opt, value)
    for cmd, opts in ((["eval"], ("--countries", "--questions", "--test-units")),
                      (["train"], ("--countries", "--questions", "--test-units", "--target-modules")),
                      (["generate-eval"], ("--countries", "--questions", "--test-units")))
    for opt in opts
    for value in (",", "", " , ,", ",,,")
]


@pytest.mark.parametrize("cmd, opt, value", EMPTY_LISTS, ids=[f"{' '.join(c)} {o}={v!r}" for c, o, v in EMPTY_LISTS])
def test_a_list_naming_nothing_is_refused_not_read_as_all(cmd, opt, value, tmp_path, monkeypatch):
    names = {" ".join(p) for p, _ in COMMANDS}
    if " ".join(cmd) not in names:
        pytest.skip(f"no {' '.join(cmd)} command")
    monkeypatch.chdir(tmp_path)
    extra = ["--adapter", tmp_path / "no-adapter"] if cmd[0] == "generate-eval" else []  # a required flag, checked after the lists
    res = invoke([*cmd, opt, value, *extra, "--out", tmp_path / ("o.json" if cmd[0] == "generate-eval" else "o")])
    _assert_usage_line(res, opt, "names nothing")
    assert sorted(os.listdir(tmp_path)) == []


def test_a_train_config_list_naming_nothing_is_refused(tmp_path):
    import json

    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"countries": ","}))
    line = assert_one_error(invoke(["train", "--config", cfg, "--out", tmp_path / "o"]))
    assert "countries" in line and "names nothing" in line
    cfg.write_text(json.dumps({"countries": []}))  # an empty list in a config: not set (all countries)
    res = invoke(["train", "--config", cfg, "--steps", "0", "--out", tmp_path / "o"])
    assert "countries" not in assert_one_error(res)  # fails on --steps, not on the empty list


# ------------------------------------------------------------------------------------ softprompt
SP_BAD = [
    ("--constants", "PDI=nan", "finite"), ("--constants", "PDI=inf", "finite"), ("--constants", "IDV=-inf", "finite"),
    ("--constants", "PDI=1e999", "finite"), ("--constants", "PDI=NaN,IDV=50", "finite"), ("--constants", "PDI=abc", "not a number"),
    ("--constants", "PDI=", "not a number"), ("--constants", "PDI", "DIMENSION=NUMBER"), ("--constants", "XYZ=5", "unknown dimension"),
    ("--constants", "PDI=1,pdi=2", "twice"), ("--constants", ",", "names no constant"), ("--constants", "", "names no constant"),
    ("--de-variant", "nosuch", "DE variant"), ("--de-variant", "DE/nosuch/1/bin", "selection"), ("--de-variant", "DE/rand/3/bin", "1 or 2"),
    ("--de-variant", "DE/rand/1/xyz", "crossover"), ("--de-variant", "DE/rand/1", "DE variant"), ("--de-variant", "de/rand/1/bin", "DE variant"),
    ("--de-variant", "", "DE variant"), ("--de-variant", "DE/rand/one/bin", "1 or 2"), ("--de-variant", "DE/best/1/bin/x", "DE variant"),
]


@pytest.mark.parametrize("opt, value, needle", SP_BAD, ids=[f"{o}={v!r}" for o, v, _ in SP_BAD])
def test_softprompt_bad_constants_and_de_variants_leave_nothing(opt, value, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = invoke(["softprompt", "--country", "USA", opt, value, "--out", tmp_path / "sp"])
    _assert_usage_line(res, opt, needle)
    assert os.listdir(tmp_path) == []  # no output folder, no default runs/ folder


@pytest.mark.parametrize("variant, pop, ok", [("DE/rand/2/bin", 5, False), ("DE/rand/2/exp", 6, True), ("DE/best/1/bin", 3, False),
                                              ("DE/target-to-best/1/line", 4, True)])
def test_de_population_follows_the_variant(variant, pop, ok, tmp_path, monkeypatch):
    from pluralign.blackbox.optimizers import de_min_pop, parse_de_variant

    parse_de_variant(variant)
    assert (pop >= de_min_pop(variant)) is ok
    if not ok:
        monkeypatch.chdir(tmp_path)
        _assert_usage_line(invoke(["softprompt", "--country", "USA", "--de-variant", variant, "--pop", str(pop)]), "--pop")
        assert os.listdir(tmp_path) == []


def test_optimizer_refuses_a_bad_variant_before_breeding():
    import numpy as np

    from pluralign.blackbox.optimizers import OptimizerConfig, make_optimizer
    from pluralign.errors import PluralignError

    x0 = np.zeros((6, 3))
    for v in ("DE/nosuch/1/bin", "DE/rand/1/xyz"):
        with pytest.raises(PluralignError, match="DE"):
            make_optimizer("de", x0, x0 - 1, x0[0] + 1, OptimizerConfig(de_variant=v))
    make_optimizer("de", x0, x0 - 1, x0[0] + 1, OptimizerConfig(de_variant="DE/rand/2/exp")).ask()


def test_vsm_constants_must_be_finite():
    from pluralign.blackbox.vsm import VSMConfig
    from pluralign.errors import PluralignError

    for bad in (float("nan"), float("inf"), "x", True):
        with pytest.raises(PluralignError, match="constant of PDI"):
            VSMConfig(constants={"PDI": bad})


# ------------------------------------------------------------------------------------ cache folders
@pytest.mark.parametrize("where", ["file", "under-file", "deep-under-file"])
def test_cache_folder_under_a_regular_file(where, tmp_path, monkeypatch):
    from pluralign.errors import PluralignError
    from pluralign.paths import cache_dir

    f = tmp_path / "a-file"
    f.write_text("x")
    p = {"file": f, "under-file": f / "cache", "deep-under-file": f / "a" / "b"}[where]
    monkeypatch.setenv("PLURALIGN_CACHE", str(p))
    with pytest.raises(PluralignError, match="PLURALIGN_CACHE") as ei:
        cache_dir()
    assert str(p) in str(ei.value) and "\n" not in str(ei.value)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 60)
    monkeypatch.chdir(tmp_path)
    line = assert_one_error(invoke(["eval", "--model", gguf, "--data", "wvs-shares", "--max-items", "2", "--out", tmp_path / "o"]))
    assert "PLURALIGN_CACHE" in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("sub", ["x", "x/y"])
def test_trunk_cache_dir_under_a_file(sub, tmp_path):
    f = tmp_path / "a-file"
    f.write_text("x")
    _assert_usage_line(invoke(["train", "--trunk-cache-dir", f / sub, "--out", tmp_path / "o"]), "--trunk-cache-dir", "a file")
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------ wordassoc short runs
def _swow(tmp_path):
    """A SWOW strength file with enough cues for every part of the cue split."""
    f = tmp_path / "strength.SWOW-EN.R1.csv"
    f.write_text("cue,response,R1,N,R1.Strength\n" + "".join(
        f"cue{i},resp{j},{5 - j},20,{(5 - j) / 20}\n" for i in range(60) for j in range(4)))
    return f


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_wordassoc_sft_shorter_than_the_logging_interval(steps, tmp_path, tiny_model_dir, one_thread):
    import json

    fix = _swow(tmp_path)
    out = tmp_path / "wa"
    res = invoke(["wordassoc", "train", "--stage", "sft", "--model", tiny_model_dir, "--data", fix, "--min-responses", "1",
                  "--sft-steps", steps, "--batch-size", "2", "--lora-r", "4", "--device", "cpu", "--no-progress", "--out", out])
    assert res.exit_code == 0, (res.output, stderr_of(res), res.exception)
    summary = json.loads((out / "sft" / "summary.json").read_text())
    assert summary["losses"], summary  # the loss was logged even though the run is shorter than the default interval
    assert (out / "sft" / "adapter" / "adapter_config.json").exists()
    assert "SFT: loss" in stderr_of(res)


def test_wordassoc_damaged_adapter_is_one_line(tmp_path, tiny_model_dir):
    fix = _swow(tmp_path)
    common = ["wordassoc", "eval", "--model", tiny_model_dir, "--data", fix, "--min-responses", "1", "--device", "cpu", "--no-transfer"]
    ad = tmp_path / "ad"
    ad.mkdir()
    (ad / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (ad / "adapter_model.safetensors").write_bytes(b"\x10\0\0\0\0\0\0\0{\"a\":")
    line = assert_one_error(invoke([*common, "--adapter", ad, "--out", tmp_path / "e.json"]))
    assert "adapter_model.safetensors" in line and "damaged" in line, line
    (ad / "adapter_config.json").write_text("[]")
    assert "peft" in assert_one_error(invoke([*common, "--adapter", ad, "--out", tmp_path / "e.json"]))
    assert not (tmp_path / "e.json").exists()
