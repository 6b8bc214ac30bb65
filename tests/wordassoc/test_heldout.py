"""Held-out pairs held out for real, P@K by hand, P@N at a fixed number of words, and the study driver (issue 29, part 3)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pluralign.data.loaders.swow import Association, SwowData, exclude_reversed_pairs, reversed_pairs, split_cues
from pluralign.errors import PluralignError
from pluralign.wordassoc.heldout import adapter_leaks, prepare_training, training_record
from pluralign.wordassoc.metrics import distinct_counts, precision_at_k
from pluralign.wordassoc.tasks import generation_examples, ranking_examples

FIX = Path(__file__).parent / "fixtures"


def _data(n: int = 120, seed: int = 0, k: int = 6) -> SwowData:
    """Cues w0..w{n-1}; each cue's responses are k other cues (so reversed pairs abound) and a plain word."""
    rng = np.random.default_rng(seed)
    cues = {}
    for i in range(n):
        others = rng.choice([j for j in range(n) if j != i], size=k, replace=False)
        words = [f"w{j}" for j in others] + [f"plain{i}"]
        counts = np.sort(rng.integers(1, 20, size=len(words)))[::-1]
        cues[f"w{i}"] = [Association(w, int(c), c / 40) for w, c in zip(words, counts)]
    return SwowData(cues, "en", "R1", "toy")


def _targets(records: list[dict]) -> dict[str, set[str]]:
    """cue -> the words of its SFT completion (or ranking candidates)."""
    out: dict[str, set[str]] = {}
    for r in records:
        text = r["completion"][0]["content"] if "completion" in r else ", ".join(r["candidates"])
        out.setdefault(r["cue"], set()).update(w.strip() for w in text.split(","))
    return out


@pytest.mark.parametrize("mode", ["exclude", "keep"])
def test_no_test_cue_has_its_reversed_pair_in_the_sft_targets(mode):
    d = _data()
    train, stats, sp = prepare_training(d, split_seed=0, sample_seed=0, train_cues=None, held_out_pairs=mode)
    test = sp.test
    assert not set(train.cues) & set(test.cues)  # the cues are held out in both variants
    seen = _targets(generation_examples(train, n_targets=3))
    for c, t in _targets(ranking_examples(train, n_candidates=5)).items():
        seen[c] = seen.get(c, set()) | t
    leaks = [(r, c) for c, assoc in test.cues.items() for a in assoc for r in [a.response] if c in seen.get(r, set())]
    if mode == "exclude":
        assert leaks == [] and stats["pairs_removed"] > 0 and stats["held_out_cues"] > 0
        assert reversed_pairs(test, train) == {}  # at any depth
    else:
        assert leaks and stats is None  # the cue split alone leaves reversed pairs in training
        got = reversed_pairs(test, train, depth=5)
        assert sorted((r, c) for c, rs in got.items() for r in rs) == sorted(set(leaks))


def test_exclusion_removes_exactly_the_reversed_pairs():
    a = lambda w, c: Association(w, c, c / 10)  # noqa: E731
    train = SwowData({"dog": [a("cat", 5), a("bone", 3), a("pet", 2)], "sun": [a("moon", 4), a("hot", 3), a("sky", 1)]}, "en", "R1")
    test = SwowData({"cat": [a("dog", 6), a("mouse", 2), a("milk", 1)], "moon": [a("night", 5), a("star", 4), a("cheese", 1)]}, "en", "R1")
    # (cat, dog) is a test pair and (dog, cat) a training pair: removed; moon has no response "sun": (sun, moon) stays
    clean, stats = exclude_reversed_pairs(train, [test])
    assert [x.response for x in clean.cues["dog"]] == ["bone", "pet"] and [x.response for x in clean.cues["sun"]] == ["moon", "hot", "sky"]
    assert stats == {"pairs_removed": 1, "train_cues_changed": 1, "held_out_cues": 1}
    assert reversed_pairs(test, train) == {"cat": ["dog"]} and reversed_pairs(test, train, depth=1) == {"cat": ["dog"]}
    assert reversed_pairs(test, clean) == {}
    assert train.cues["dog"][0].response == "cat"  # the input is not changed
    # matching ignores case and spaces
    upper = SwowData({"Cat": [a("DOG ", 6), a("mouse", 2), a("milk", 1)]}, "en", "R1")
    assert reversed_pairs(upper, train) == {"Cat": ["DOG "]}


def test_adapter_records_rebuild_the_training_data():
    d = _data(80, k=12)
    _, _, sp = prepare_training(d, split_seed=3, sample_seed=1, train_cues=60, held_out_pairs="keep")
    part = sp.test
    keep = training_record(d, stage="sft", split_seed=3, sample_seed=1, train_cues=60, min_responses=3, held_out_pairs="keep", depth=3)
    leaks, source = adapter_leaks(d, part, {"training_data": keep}, split_seed=3)
    train, _, _ = prepare_training(d, split_seed=3, sample_seed=1, train_cues=60, held_out_pairs="keep")
    assert leaks == reversed_pairs(part, train, depth=3) and leaks and "sft: 60 cues" in source
    excl = dict(keep, held_out_pairs="exclude")
    assert adapter_leaks(d, part, {"training_data": excl}, split_seed=3)[0] == {}
    # an RL adapter: its SFT stage counts too
    rl = dict(excl, stage="rl", depth=5, previous=keep)
    assert adapter_leaks(d, part, {"training_data": rl}, split_seed=3)[0] == leaks
    with pytest.raises(PluralignError, match="--split-seed 3"):
        adapter_leaks(d, part, {"training_data": keep}, split_seed=0)
    none, src = adapter_leaks(d, part, None, split_seed=3, adapter=False)
    assert none == {} and "nothing trained" in src
    old, src = adapter_leaks(d, part, {}, split_seed=3)
    assert old == reversed_pairs(part, split_cues(d, seed=3).train, depth=5) and "no record" in src


# ------------------------------------------------------------------------------------ P@K
def test_precision_at_k_by_hand():
    human = ["Animal", "cat", "bark", "leash"]
    gen = ["animal.", "Animal", "bone", "cat", "walk", "bark"]
    # distinct normalised words: animal, bone, cat, walk, bark -> first 4: animal, bone, cat, walk: 2 hits of 4
    assert precision_at_k(gen, human, 4) == pytest.approx(2 / 4)
    assert precision_at_k(gen, human, 5) == pytest.approx(3 / 5)
    assert precision_at_k(gen, human, 10) == pytest.approx(3 / 10)  # 5 distinct words: the missing 5 are misses
    assert precision_at_k(["cat"], human, 3) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        precision_at_k(gen, human, 0)


def test_distinct_counts_by_hand():
    got = distinct_counts([["a", "A", "b"], ["x"], ["p", "q", "r", "s", "t"]], ks=(2, 5))
    assert got == {"n_cues": 3, "mean": pytest.approx(8 / 3), "median": 2.0, "min": 1, "max": 5,
                   "share_at_least": {"2": pytest.approx(2 / 3), "5": pytest.approx(1 / 3)}}


def test_p_at_n_at_a_fixed_number_of_words_tops_up_short_cues(monkeypatch):
    """The first completions give one word per cue; the top-up rounds add more. P@K comes from the
    first completions (missing words are misses), P@N at N words from all of them."""
    import pluralign.wordassoc.generate as gen
    from pluralign.data.loaders.swow import load_swow

    d = load_swow(FIX / "strength.SWOW-EN.R1.csv")
    calls = []

    def fake(model, tok, prompts, cfg, progress=True):
        calls.append((len(prompts), cfg.seed, cfg.num_samples))
        if len(calls) == 1:
            return [["fruit"] for _ in prompts]
        return [["red, tree, zzz", "red"] for _ in prompts]

    monkeypatch.setattr(gen, "generate_texts", fake)
    monkeypatch.setattr(gen, "_prompt", lambda tok, messages, cfg: messages[-1]["content"])
    res = gen.evaluate_generation(None, None, d, gen.GenConfig(num_samples=1, seed=7), ks=(5,), progress=False, fixed_words=3,
                                  leaks={"apple": ["tree"]}, leak_source="toy")
    human = {c: {a.response for a in v} for c, v in d.cues.items()}
    # P@5 from the first completion: "fruit" alone
    for c in d.cues:
        assert res["per_cue"]["P@5"][c] == pytest.approx(("fruit" in human[c]) / 5)
    fw = res["fixed_words"]
    assert fw["n_words"] == 3 and fw["top_up_rounds"] == 1 and fw["cues_topped_up"] == len(d.cues) and fw["cues_short"] == 0
    # merged words: fruit (first call), then red, tree, zzz: the first 3 are fruit, red, tree
    for c in d.cues:
        assert fw["per_cue"][c] == pytest.approx(len({"fruit", "red", "tree"} & human[c]) / 3)
    assert fw["P@3"] == pytest.approx(np.mean(list(fw["per_cue"].values())))
    assert calls[1][0] == len(d.cues) and calls[1][1] != 7 and calls[1][2] >= 2  # other seed, sampled
    assert res["distinct_words"]["mean"] == 1 and fw["distinct_words"]["mean"] == 4
    # the cues held out for real: all but apple
    assert res["clean"]["n_cues"] == len(d.cues) - 1 and "apple" not in res["clean"]["per_cue"]["P@5"]
    assert res["held_out_pairs"] == {"source": "toy", "cues_with_reversed_pair_in_training": 1, "reversed_pairs": 1,
                                     "clean_cues": len(d.cues) - 1}


# ------------------------------------------------------------------------------------ the study driver
def test_the_study_runs_missing_steps_only_and_stops_on_a_failure(tmp_path):
    from pluralign.wordassoc.study import StudyConfig, plan, run

    cfg = StudyConfig(out=str(tmp_path / "st"), seeds=(0, 1), split_seed=4)
    steps = plan(cfg)
    assert [s.name for s in steps] == ["eval vanilla", "s0 SFT", "s0 eval SFT", "s0 GRPO", "s0 eval SFT+GRPO",
                                       "s1 SFT", "s1 eval SFT", "s1 GRPO", "s1 eval SFT+GRPO"]
    for s in steps:
        argv = s.argv
        assert argv[argv.index("--split-seed") + 1] == "4"
    rl = steps[3].argv  # s0 GRPO: continues the s0 SFT adapter
    assert rl[0] == "train" and rl[rl.index("--stage") + 1] == "rl"
    assert rl[rl.index("--adapter") + 1].endswith("s0/sft/adapter") and rl[rl.index("--seed") + 1] == "0"
    assert steps[1].argv[steps[1].argv.index("--held-out-pairs") + 1] == "exclude"
    ran = []

    def runner(argv, log):
        ran.append(argv)
        st = next(s for s in steps if s.argv == argv)
        st.result.parent.mkdir(parents=True, exist_ok=True)
        st.result.write_text("{}")
        return 0

    assert run(cfg, dry=True, runner=runner, echo=lambda m: None) == [] and ran == []
    assert len(run(cfg, runner=runner, echo=lambda m: None)) == 9
    assert run(cfg, runner=runner, echo=lambda m: None) == [] and len(ran) == 9  # all done: nothing again
    (tmp_path / "st" / "s1" / "eval-rl.json").unlink()
    assert run(cfg, runner=runner, echo=lambda m: None) == ["s1 eval SFT+GRPO"]
    (tmp_path / "st" / "s1" / "eval-rl.json").unlink()
    with pytest.raises(PluralignError, match="s1 eval SFT\\+GRPO failed"):
        run(cfg, runner=lambda argv, log: 1, echo=lambda m: None)


def test_the_pooled_report_pairs_seeds_and_cues(tmp_path):
    from pluralign.wordassoc.stats import cue_interval
    from pluralign.wordassoc.study import StudyConfig, pooled_markdown

    rng = np.random.default_rng(0)
    cues = [f"c{i}" for i in range(40)]

    def result(shift, leak=()):
        p5 = {c: float(np.clip(rng.binomial(5, 0.2) / 5 + shift, 0, 1)) for c in cues}
        rho = {c: float(rng.uniform(-1, 1)) for c in cues}
        clean = {c: v for c, v in p5.items() if c not in leak}
        return {"schema": "pluralign.wordassoc.eval/1", "n_eval_cues": len(cues),
                "held_out_pairs": {"clean_cues": len(clean), "reversed_pairs": len(leak), "source": "toy"},
                "generation": {"P@5": float(np.mean(list(p5.values()))), "per_cue": {"P@5": p5},
                               "intervals": {"P@5": cue_interval(list(p5.values()))},
                               "distinct_words": {"n_cues": 40, "mean": 4.0 + shift, "median": 4.0},
                               "fixed_words": {"n_words": 5, "P@5": float(np.mean(list(p5.values()))), "per_cue": p5},
                               "clean": {"n_cues": len(clean), "P@5": float(np.mean(list(clean.values()))), "per_cue": {"P@5": clean}}},
                "ranking": {"spearman": float(np.mean(list(rho.values()))), "per_cue": {"spearman": rho}}}

    results = {"vanilla": result(0.0), 0: {"SFT": result(0.2, leak=("c1", "c2")), "SFT+GRPO": result(0.3)},
               1: {"SFT": result(0.2), "SFT+GRPO": result(0.25)}}
    text = pooled_markdown(StudyConfig(out=str(tmp_path), seeds=(0, 1, 2)), results)
    assert "2 of 3 seeds finished (0, 1)" in text
    sft = next(ln for ln in text.splitlines() if ln.startswith("| SFT | 2 |"))
    means = [results[s]["SFT"]["generation"]["P@5"] for s in (0, 1)]
    assert f"{np.mean(means):.3f} [{min(means):.3f}, {max(means):.3f}]" in sft
    change = next(ln for ln in text.splitlines() if ln.startswith("| vanilla → SFT |"))
    assert "[+" in change  # a positive paired change with its interval
    assert "held out for real" in text and "## Seed 0" in text and "## Seed 1" in text
    with pytest.raises(PluralignError, match="no finished evaluation"):
        pooled_markdown(StudyConfig(out=str(tmp_path), seeds=(0,)), {})


@pytest.mark.parametrize("args, flag", [
    (["study", "--seeds", ","], "--seeds"), (["study", "--seeds", "0,0"], "--seeds"),
    (["study", "--held-out-pairs", "maybe"], "--held-out-pairs"), (["study", "--train-cues", "0"], "--train-cues"),
    (["train", "--held-out-pairs", "maybe"], "--held-out-pairs"), (["eval", "--fixed-words", "-1"], "--fixed-words"),
])
def test_bad_flags_are_one_error_line(args, flag, tmp_path):
    from typer.testing import CliRunner

    from pluralign.cli.main import app

    out = tmp_path / ("e.json" if args[0] == "eval" else "o")
    res = CliRunner().invoke(app, ["wordassoc", *args, "--data", str(FIX / "strength.SWOW-EN.R1.csv"), "--out", str(out)]
                             if args[0] != "study" else ["wordassoc", *args, "--out", str(out), "--dry-run"])
    assert res.exit_code == 2, res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and flag in errors[0] and "Traceback" not in res.output
    assert not out.exists()


def test_the_study_dry_run_lists_the_steps(tmp_path):
    from typer.testing import CliRunner

    from pluralign.cli.main import app

    res = CliRunner().invoke(app, ["wordassoc", "study", "--seeds", "5", "--out", str(tmp_path / "st"), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert res.output.count("would run") == 5 and "--seed 5" in res.output and not (tmp_path / "st").exists()


def test_train_records_its_held_out_pairs_and_eval_reports_both_variants(tmp_path, tiny_model_dir):
    """End to end on a tiny model: `train` (exclude, the default) records its training data; `eval`
    rebuilds it, finds no reversed pair, and reports distinct words, P@N at N words and the clean
    variant; an adapter trained with `keep` shows the cues it leaked; `report` prints both tables."""
    from typer.testing import CliRunner

    from pluralign.cli.main import app
    from pluralign.data.loaders.swow import load_swow, sample_cues

    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(60)]
    rows = []
    for i, c in enumerate(words):
        for j, r in enumerate(rng.choice([w for w in words if w != c], size=4, replace=False)):
            rows.append(f"{c},{r},{5 - j},20,{(5 - j) / 20}\n")
    f = tmp_path / "strength.SWOW-EN.R1.csv"
    f.write_text("cue,response,R1,N,R1.Strength\n" + "".join(rows))
    run = CliRunner().invoke
    common = ["--model", str(tiny_model_dir), "--data", str(f), "--device", "cpu", "--no-progress", "--threads", "1", "--split-seed", "2"]
    for mode in ("exclude", "keep"):
        r = run(app, ["wordassoc", "train", "--stage", "sft", *common, "--sft-steps", "1", "--batch-size", "2", "--lora-r", "2",
                      "--held-out-pairs", mode, "--out", str(tmp_path / mode)])
        assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "exclude" / "sft" / "adapter" / "pluralign_wordassoc.json").read_text())["training_data"]
    assert meta["held_out_pairs"] == "exclude" and meta["split_seed"] == 2 and meta["depth"] == 3 and meta["excluded"]["pairs_removed"] > 0
    ev = ["wordassoc", "eval", *common, "--tasks", "generation", "--no-transfer", "--eval-cues", "6", "--max-new-tokens", "4",
          "--num-samples", "2", "--fixed-words", "2", "--top-up-rounds", "1"]
    outs = {}
    for name, extra in (("vanilla", []), ("exclude", ["--adapter", str(tmp_path / "exclude" / "sft" / "adapter")]),
                        ("keep", ["--adapter", str(tmp_path / "keep" / "sft" / "adapter")])):
        outs[name] = tmp_path / f"eval-{name}.json"
        r = run(app, [*ev, *extra, "--out", str(outs[name])])
        assert r.exit_code == 0, r.output
    res = {k: json.loads(v.read_text()) for k, v in outs.items()}
    d = load_swow(f)
    part = sample_cues(split_cues(d, seed=2).test, 6, seed=2)
    n = len(part)
    ex = res["exclude"]
    assert ex["held_out_pairs"]["cues_with_reversed_pair_in_training"] == 0 and ex["held_out_pairs"]["training_excluded_reversed_pairs"]
    g = ex["generation"]
    assert g["clean"]["n_cues"] == g["n_cues"] == n and g["fixed_words"]["n_words"] == 2 and g["distinct_words"]["n_cues"] == n
    # the keep adapter: the leaked cues are exactly the reversed pairs of its (rebuilt) training data
    train, _, _ = prepare_training(d, split_seed=2, sample_seed=0, train_cues=None, held_out_pairs="keep")
    leaks = reversed_pairs(part, train, depth=3)
    assert leaks  # this toy file leaves one in the cue split alone
    assert res["keep"]["held_out_pairs"]["cues_with_reversed_pair_in_training"] == len(leaks)
    assert res["keep"]["generation"]["clean"]["n_cues"] == n - len(leaks)
    assert res["vanilla"]["held_out_pairs"]["cues_with_reversed_pair_in_training"] == 0
    r = run(app, ["wordassoc", "report", str(outs["vanilla"]), str(outs["keep"]), "--labels", "vanilla,SFT keep"])
    assert r.exit_code == 0, r.output
    assert "distinct words / cue" in r.output and "P@N at N words" in r.output and "cues held out for real" in r.output
    # evaluating a recorded adapter on another split is refused before the model loads
    r = run(app, [*ev[:-2], "--adapter", str(tmp_path / "exclude" / "sft" / "adapter"), "--split-seed", "0",
                  "--out", str(tmp_path / "x.json")])
    assert r.exit_code == 2 and "--split-seed 2" in r.output and not (tmp_path / "x.json").exists()
