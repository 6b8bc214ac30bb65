"""TrainConfig is the one declaration of `pluralign train`'s settings (issue 28): flags, help, defaults
and rules come from its fields; the GRPO block nests; records with the old flat grpo_* keys still read."""

from __future__ import annotations

import json

import pytest

from pluralign._fields import flatten, settings
from pluralign.errors import PluralignError
from pluralign.training.config import GRPOSettings, TrainConfig


def test_grpo_settings_nest_and_old_flat_records_read():
    cfg = TrainConfig(stage="grpo", grpo=GRPOSettings(beta=0.1, loss_type="grpo", reward=["judge"], mask_truncated_completions=True))
    rec = json.loads(json.dumps(cfg.to_dict()))
    assert rec["grpo"]["beta"] == 0.1 and "grpo_beta" not in rec
    assert TrainConfig(**rec) == cfg  # a record read back as keyword arguments
    flat = cfg.flat_dict()
    assert flat["grpo_beta"] == 0.1 and flat["grpo_mask_truncated"] is True and "grpo" not in flat
    assert TrainConfig.from_dict(flat) == cfg  # a record written before the block was nested
    assert flatten(TrainConfig, rec) == flat
    with pytest.raises(PluralignError, match="grpo_bta"):
        TrainConfig.from_dict({"grpo_bta": 1})


def test_every_flag_and_rule_comes_from_a_field():
    from pluralign.cli._common import cli_defaults
    from pluralign.cli._validate import RULES, Choice, Float

    names = [s.name for s in settings(TrainConfig)]
    assert set(RULES["train"]) == set(names)
    assert isinstance(RULES["train"]["grpo_loss_type"], Choice) and RULES["train"]["grpo_loss_type"].choices == ("grpo", "dapo", "bnpo", "dr_grpo")
    assert isinstance(RULES["train"]["grpo_top_p"], Float) and RULES["train"]["grpo_top_p"].open_lo
    flags = cli_defaults(TrainConfig)
    assert {"max_grad_norm", "save_total_limit", "num_workers"}.isdisjoint(flags)  # config-file / API settings only
    assert flags["save_steps"] is None and flags["grpo_reward"] is None and flags["grpo_num_generations"] == 4


def test_config_file_with_a_nested_grpo_block(tmp_path):
    from pluralign.cli._validate import check_config_file

    f = tmp_path / "c.json"
    f.write_text(json.dumps({"stage": "grpo", "grpo": {"beta": 0.05, "loss_type": "dr_grpo"}}))
    assert check_config_file(f)["grpo_loss_type"] == "dr_grpo"
    f.write_text(json.dumps({"grpo": {"loss_type": "ppo"}}))
    with pytest.raises(PluralignError, match="ppo") as e:
        check_config_file(f)
    assert e.value.field == "grpo_loss_type"
