"""Issue 8, "correct by default": warm-up steps, DPO at step 0, DPO pairs, --init-adapter split, auto split."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pluralign.data import GroupExample, IndividualExample, Profile, SurveyDataset, SurveyItem
from pluralign.errors import PluralignError
from pluralign.training import TrainConfig
from pluralign.training.data import encode_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

ITEMS = {
    "Q1": SurveyItem("Q1", "How important is family in your life?", ("Very important", "Rather important", "Not very important", "Not at all important")),
    "Q3": SurveyItem("Q3", "Do you agree or disagree?", ("agree", "neither", "disagree")),
}
THA, DEU = Profile(country="Thailand", sex="female", age=55), Profile(country="Germany", sex="male", age=23)


from training.test_training import _cfg  # noqa: E402  (the same tiny-run defaults)


def _individual_ds() -> SurveyDataset:
    exs = []
    for r in range(6):
        prof = (THA, DEU)[r % 2]
        for q, it in ITEMS.items():
            exs.append(IndividualExample(f"r{r}", prof, q, 0 if r % 2 == 0 else it.n_options - 1))
    return SurveyDataset("tiny-ind", "individual", dict(ITEMS), exs, source="<test>")


# ------------------------------------------------------------------------- 1. auto means one thing
def test_auto_split_is_the_same_rule_for_train_and_eval(tmp_path):
    from pluralign.data.splits import resolve_auto_split
    from pluralign.training.run import resolve_split_by

    assert resolve_auto_split("individual") == "respondent" and resolve_auto_split("distributional") == "country"
    for kind in ("individual", "distributional"):
        assert resolve_split_by(_cfg(tmp_path, split="auto"), kind) == resolve_auto_split(kind)
    assert "country for group data" in TrainConfig.help()["split"]


# ------------------------------------------------------------------------- 2. warm-up
def test_warmup_is_an_integer_number_of_steps_and_warms_up(tmp_path, tiny_tokenizer):
    from conftest import make_tiny_model

    from pluralign.adapters import adapter_config, build_adapted_model
    from pluralign.training.run import build_trainer, make_training_args

    cfg = _cfg(tmp_path, steps=10, warmup_ratio=0.25, scheduler="cosine", lr=1e-2)
    args = make_training_args(cfg, tmp_path, device="cpu", bf16=False)
    assert isinstance(args.warmup_steps, int) and args.warmup_steps == math.ceil(0.25 * 10) == 3
    model = build_adapted_model(make_tiny_model("llama"), "lora", adapter_config("lora"))
    tr = build_trainer(model, tiny_tokenizer, encode_dataset(tiny_tokenizer, _individual_ds()), cfg, tmp_path)
    tr.create_optimizer_and_scheduler(num_training_steps=cfg.steps)
    sched = tr.lr_scheduler
    assert sched.get_last_lr()[0] == 0.0
    sched.step()
    assert 0 < sched.get_last_lr()[0] < cfg.lr  # step 1 is still warming up
    for _ in range(2):
        sched.step()
    assert sched.get_last_lr()[0] == pytest.approx(cfg.lr)  # peak at the end of the warm-up


# ------------------------------------------------------------------------- 3. DPO: policy == reference at step 0
@pytest.mark.parametrize("bf16", [False, True])
def test_dpo_margin_is_zero_and_loss_log2_at_step_0_with_adapter_dropout(tmp_path, tiny_tokenizer, bf16):
    from conftest import make_tiny_model

    from pluralign.adapters import adapter_config, build_adapted_model
    from pluralign.training.run import build_trainer

    ds = _individual_ds()
    rows = encode_dataset(tiny_tokenizer, ds, dpo_reference=ds)
    conf = adapter_config("lora")
    assert conf.dropout == 0.05
    model = build_adapted_model(make_tiny_model("llama", seed=1), "lora", conf)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a trained-looking adapter: B != 0, so adapter dropout changes the output
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    cfg = _cfg(tmp_path, stage="dpo", steps=1, batch_size=len(rows), lr=1e-3, dpo_beta=1.0)
    tr = build_trainer(model, tiny_tokenizer, rows, cfg, tmp_path, device="cpu", bf16=bf16)
    assert all(m.p == 0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    tr.train()
    log = next(h for h in tr.state.log_history if "dpo_loss" in h)
    assert abs(log["rewards/margin"]) < 1e-6, log
    assert log["dpo_loss"] == pytest.approx(math.log(2), abs=1e-6), log


# ------------------------------------------------------------------------- 3a/b. DPO pairs
def test_dpo_pairs_nominal_items_get_the_least_likely_option_not_the_far_end(tiny_tokenizer):
    opts = ("red", "green", "blue")
    for ordinal, want in ((True, 2), (False, 1)):
        items = {"C": SurveyItem("C", "Which colour?", opts, ordinal=ordinal)}
        # mean over groups: THA (1, 0, 0), DEU (0.5, 0, 0.5) -> (0.75, 0, 0.25): mode 0 == r0's answer
        exs = [IndividualExample("r0", THA, "C", 0), IndividualExample("r1", DEU, "C", 0), IndividualExample("r2", DEU, "C", 2)]
        ds = SurveyDataset("nom", "individual", items, exs, source="<test>")
        rows = encode_dataset(tiny_tokenizer, ds, dpo_reference=ds)
        assert rows[0].answer == 0
        assert rows[0].rejected == want, (ordinal, rows[0].rejected)  # ordinal: far end; nominal: least likely (share 0)
        assert rows[2].answer == 2 and rows[2].rejected == 0  # the mean-collapse answer where it differs


def test_dpo_pairs_of_group_rows_follow_the_target_distribution(tiny_tokenizer):
    from pluralign.data.tasks import mean_distributions

    exs = [
        GroupExample("THA", Profile(country="Thailand"), "Q3", (0.6, 0.05, 0.35)),
        GroupExample("DEU", Profile(country="Germany"), "Q3", (1.0, 0.0, 0.0)),
        GroupExample("THA", Profile(country="Thailand"), "Q1", (0.4, 0.3, 0.2, 0.1)),  # equal: human == mean
        GroupExample("DEU", Profile(country="Germany"), "Q1", (0.4, 0.3, 0.2, 0.1)),
    ]
    ds = SurveyDataset("grp", "distributional", dict(ITEMS), exs, source="<test>")
    rows = encode_dataset(tiny_tokenizer, ds, dpo_reference=ds)
    assert [r.item_id for r in rows] == ["Q3", "Q3"]  # rows with human == mean are skipped
    mean = mean_distributions(ds)["Q3"]
    for r in rows:
        h = np.asarray(r.target)
        d = h - mean
        assert h[r.answer] > h[r.rejected] and d[r.answer] > d[r.rejected], (r.answer, r.rejected)
    # Thailand's mode (0) is what the mean over-predicts: prefer 'disagree' (under-predicted) over 'neither'
    assert (rows[0].answer, rows[0].rejected) == (2, 1)
    assert (rows[1].answer, rows[1].rejected) == (0, 2)
    same = SurveyDataset("same", "distributional", dict(ITEMS), exs[2:], source="<test>")
    with pytest.raises(PluralignError, match="no DPO pair"):
        encode_dataset(tiny_tokenizer, same, dpo_reference=same)


# ------------------------------------------------------------------------- 3c. --init-adapter from another split
def test_dpo_refuses_an_init_adapter_from_another_split(tmp_path, tiny_model_dir):
    from pluralign.training import train

    common = dict(
        model=str(tiny_model_dir), data="wvs-shares", task="distributional", countries=["USA", "DEU", "THA"],
        questions=["Q1", "Q2", "Q3", "Q4", "Q5", "Q6"], split="question", test_frac=0.34, steps=1, batch_size=4,
        warmup_ratio=0.0, save_steps=0, logging_steps=1, progress=False, method="lora",
    )
    train(TrainConfig(**common, out=str(tmp_path / "sft")))
    init = str(tmp_path / "sft" / "adapter")
    for change, field in ((dict(seed=1), "seed"), (dict(questions=["Q1", "Q2", "Q3", "Q4", "Q5"]), "questions"),
                          (dict(test_frac=0.5), "test_frac"), (dict(split="country", test_units=["THA"]), "by")):
        cfg = TrainConfig(**{**common, **change}, stage="dpo", init_adapter=init, out=str(tmp_path / f"dpo-{field}"))
        with pytest.raises(PluralignError) as e:
            train(cfg)
        assert e.value.field == field and "init-adapter" in e.value.message, str(e.value)
    s = train(TrainConfig(**common, stage="dpo", init_adapter=init, out=str(tmp_path / "dpo-ok")))
    assert s["steps"] == 1
