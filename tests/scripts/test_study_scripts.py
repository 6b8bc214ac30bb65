"""The study drivers: ``scripts/study.py`` (the beat-the-mean study) and ``scripts/softprompt_study.py``
run end to end on a tiny model, skip finished work and resume interrupted work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import load_script

def _load(name: str):
    return load_script(name)


@pytest.fixture(scope="module")
def study():
    return _load("study")


def _config(root: Path, model: Path) -> dict:
    return {
        "root": str(root), "sets": {"A": ["USA", "CHN"]},
        "selection": {"data": "wvs-shares", "questions": ["Q1", "Q2"]},
        "common": {"model": str(model), "task": "distributional", "steps": 4, "batch_size": 4, "save_steps": 2,
                   "logging_steps": 1, "profile_encoder": "culture-map"},
        "eval_common": {"batch_size": 16, "no_plot": True},
        "jobs": [{"name": "lora", "sets": ["A"], "seeds": [0, 1], "train": {"method": "lora"}},
                 {"name": "vanilla", "set": "A", "seed": 0, "eval": {"method": "vanilla", "model": str(model)}}],
    }


def test_expand_builds_one_job_per_set_and_seed(study, tmp_path):
    jobs = study.expand(_config(tmp_path / "runs", tmp_path / "m"))
    assert [j["name"] for j in jobs] == ["lora-A-s0", "lora-A-s1", "vanilla-A-s0"]
    tr = jobs[1]["train"]
    assert tr[:2] == ["pluralign", "train"] and tr[tr.index("--seed") + 1] == "1"
    assert tr[tr.index("--test-units") + 1] == "USA,CHN" and tr[tr.index("--split") + 1] == "country"
    assert "--out" in tr and tr[tr.index("--out") + 1].endswith("lora-A-s1")
    ev = jobs[0]["eval"]
    assert ev[ev.index("--adapter") + 1].endswith("lora-A-s0/adapter") and "--no-plot" in ev
    assert jobs[2]["train"] is None and "--adapter" not in jobs[2]["eval"]  # an evaluation-only baseline


def test_config_strings_read_environment_variables_and_an_unset_one_is_one_error(study, tmp_path, monkeypatch):
    cfg = _config(tmp_path / "runs", tmp_path / "m")
    cfg["common"]["model"] = cfg["eval_common"]["model"] = "${STUDY_TEST_MODEL}"
    monkeypatch.setenv("STUDY_TEST_MODEL", "/models/qwen.gguf")
    jobs = study.expand(cfg)
    tr, ev = jobs[0]["train"], jobs[0]["eval"]
    assert tr[tr.index("--model") + 1] == "/models/qwen.gguf"
    assert ev.count("--model") == 1 and ev[ev.index("--model") + 1] == "/models/qwen.gguf"  # given once, not twice
    monkeypatch.delenv("STUDY_TEST_MODEL")
    with pytest.raises(SystemExit, match=r"error: config\.common\.model: environment variable STUDY_TEST_MODEL is not set"):
        study.expand(cfg)


def test_a_job_runs_is_skipped_when_done_and_resumes_from_its_checkpoint(study, tiny_model_dir, tmp_path):
    job = study.expand(_config(tmp_path / "runs", tiny_model_dir))[0]
    msg = study.run_job(job)
    assert "finished" in msg, (msg, (job["out"] / "train.log").read_text()[-2000:] if (job["out"] / "train.log").exists() else "")
    summary = job["out"] / "eval" / "summary.json"
    assert summary.exists() and (job["out"] / "adapter" / "adapter_config.json").exists()
    assert study.run_job(job) == "lora-A-s0: done (skipped)"
    # an interrupted run (checkpoints, no adapter, no evaluation) continues with --resume
    summary.unlink()
    shutil.rmtree(job["out"] / "adapter")
    assert any(p.name.startswith("checkpoint-") for p in (job["out"] / "checkpoints").iterdir())
    plan = study.run_job(job, dry=True)
    assert plan.splitlines()[0].endswith("--resume")
    assert "finished" in study.run_job(job)
    assert summary.exists()
    assert "resum" in (job["out"] / "train.log").read_text().lower()


def _blend(root: Path) -> Path:
    """Four BLEnD regions, three questions each: every US top answer has three other regions' answers as distractors."""
    d = root / "annotations"
    d.mkdir(parents=True)
    foods = {"US": ["burger", "apple pie", "coffee"], "UK": ["fish and chips", "trifle", "tea"],
             "China": ["dumplings", "mooncake", "green tea"], "Mexico": ["tacos", "flan", "atole"]}
    for region, ans in foods.items():
        doc = {f"q{i}": {"en_question": f"What is the most popular {what} in {region}?",
                         "annotations": [{"en_answers": [a], "count": 4}, {"en_answers": ["other"], "count": 1}]}
               for i, (what, a) in enumerate(zip(("dish", "dessert", "drink"), ans))}
        (d / f"{region}_data.json").write_text(json.dumps(doc))
    return d


def test_softprompt_study_records_the_reworded_and_knowledge_checks_and_skips_finished_searches(tiny_model_dir, tmp_path, capsys):
    sp = _load("softprompt_study")
    argv = ["--model", str(tiny_model_dir), "--countries", "USA", "--optimizers", "de", "--subspace-dims", "0", "--seeds", "0",
            "--tokens", "2", "--pop", "4", "--gens", "1", "--batch-size", "48", "--threads", "1", "--out", str(tmp_path / "sp"),
            "--knowledge", "10", "--knowledge-root", str(_blend(tmp_path / "blend"))]
    s = sp.main(argv)
    run = s["runs"]["USA-de-d0-s0"]
    assert run["evaluations"] == 8 and run["loss"] <= run["initial_best"]
    assert set(run["reworded"]) == {"naive_loss", "loss", "kept"}
    assert run["reworded"]["naive_loss"] != pytest.approx(s["baselines"]["USA"]["naive_loss"])  # other wording, other answers
    k0, k = s["baselines"]["USA"]["knowledge"], run["knowledge"]
    assert k0["region"] == "US" and k0["n"] == k["n"] == 3 and len(k["correct"]) == 3
    assert k["accuracy"] == pytest.approx(sum(k["correct"]) / 3) and k["naive_accuracy"] == k0["accuracy"]
    out = capsys.readouterr().out
    assert "Generalisation check" in out and "| USA | de full |" in out and "Knowledge check" in out and "| USA | US (n=3) | de full |" in out
    # specificity: the searched prompt's scores against every target; its own target's L1 is the search's loss
    assert f"| USA de full (n=1) | **{run['loss']:.2f}** |" in out and "| USA | de full (n=1) |" in out  # + the per-dimension row
    again = sp.main(argv)  # finished: nothing re-run
    assert again["runs"]["USA-de-d0-s0"] == run
    # a study from before the knowledge check: its finished searches get it from their saved prompt
    f = tmp_path / "sp" / "summary.json"
    old = json.loads(f.read_text())
    del old["runs"]["USA-de-d0-s0"]["knowledge"], old["baselines"]["USA"]["knowledge"]
    f.write_text(json.dumps(old))
    back = sp.main(argv)
    assert back["runs"]["USA-de-d0-s0"]["knowledge"]["correct"] == k["correct"]


def test_softprompt_study_report_on_a_missing_or_broken_summary_is_one_error_line(tmp_path, capsys):
    sp = _load("softprompt_study")
    with pytest.raises(SystemExit) as e:
        sp.main(["--out", str(tmp_path / "none"), "--report"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and "none/summary.json does not exist" in err and "Traceback" not in err
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "summary.json").write_text('{"runs": ')  # cut off mid-write by hand
    with pytest.raises(SystemExit) as e:
        sp.main(["--out", str(tmp_path / "broken"), "--report"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "broken/summary.json: not a readable study summary" in err and err.count("\n") == 1
    assert not (tmp_path / "broken" / "curves.png").exists()


def test_softprompt_study_with_bf16_searches_reports_exact_fp32_scores(tiny_model_dir, tmp_path, capsys):
    """--autocast bf16 speeds up the searches only: the baselines and the reported L1 of each searched
    prompt are fp32 scores (the same as a fp32 study's baselines; the loss = rescore_exact of the saved prompt)."""
    import torch

    from pluralign.blackbox.population import PopulationConfig, rescore_exact
    from pluralign.adapters.softprompt import load_soft_prompt
    from pluralign.data.loaders.hofstede import country_target
    from pluralign.models import load_backbone

    sp = _load("softprompt_study")
    common = ["--model", str(tiny_model_dir), "--countries", "USA", "--optimizers", "de", "--subspace-dims", "0", "--seeds", "0",
              "--tokens", "2", "--pop", "4", "--gens", "1", "--batch-size", "48", "--threads", "1", "--knowledge", "0"]
    s = sp.main(common + ["--autocast", "bf16", "--out", str(tmp_path / "bf16")])
    ref = sp.main(common + ["--out", str(tmp_path / "fp32")])
    assert s["baselines"]["USA"]["naive_loss"] == ref["baselines"]["USA"]["naive_loss"]  # baselines: exact in both
    run = s["runs"]["USA-de-d0-s0"]
    model, tok = load_backbone(str(tiny_model_dir))
    x, _ = load_soft_prompt(tmp_path / "bf16" / "USA-de-d0-s0")
    ex = rescore_exact(model, tok, x.float(), country_target("USA"), cfg=PopulationConfig(tokens=2, batch_size=48))
    assert run["loss"] == pytest.approx(ex["loss"], abs=1e-4) and run["scores"] == pytest.approx(ex["scores"], abs=1e-4)  # saved as fp32
    assert run["search_loss"] != run["loss"]  # what the bf16 search saw is not what is reported
    assert "exact fp32 scores" in capsys.readouterr().out
    assert torch.is_tensor(x) and x.shape == (2, model.get_input_embeddings().weight.shape[1])
    # the precision is recorded per search: the bf16 study continues in fp32 in the same folder (another machine)
    def with_(flag: str, value: str) -> list[str]:
        i = common.index(flag)
        return common[:i] + [flag, value] + common[i + 2:] + ["--out", str(tmp_path / "bf16")]

    more = sp.main(with_("--seeds", "0,1"))
    assert more["runs"]["USA-de-d0-s0"] == {**run, "autocast": "bf16"} and more["runs"]["USA-de-d0-s1"]["autocast"] == "off"
    assert more["runs"]["USA-de-d0-s1"]["search_loss"] == more["runs"]["USA-de-d0-s1"]["loss"]  # an fp32 search is its own exact score
    assert "1 of the 2 searches (USA-de-d0-s0; the other 1 in fp32) ran with bf16" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:  # other settings still refuse to mix: one error line, exit 2
        sp.main(with_("--pop", "5"))
    assert e.value.code == 2 and "was made with" in capsys.readouterr().err
