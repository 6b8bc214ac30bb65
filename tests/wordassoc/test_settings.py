"""Word-association settings have one declaration each (issue 28): the LoRA is pluralign.adapters'
LoRASettings, recorded as stage folders recorded it before; the study's flags are StudyConfig's fields."""

from __future__ import annotations

from pluralign.adapters.config import LoRASettings
from pluralign.wordassoc.train import RLStage, SFTStage, align_lora, lora_config, stage_settings


def test_align_lora_is_the_adapters_lora_and_records_as_before():
    lora = align_lora(r=4, alpha=8)
    assert type(lora) is LoRASettings and lora.target_modules == ("all-linear",)
    assert stage_settings(SFTStage())["lora"] == {"r": 16, "alpha": 32.0, "dropout": 0.05, "target_modules": "all-linear"}
    assert stage_settings(RLStage(lora=lora))["lora"] == {"r": 4, "alpha": 8, "dropout": 0.05, "target_modules": "all-linear"}
    assert stage_settings(RLStage(lora=None))["lora"] is None
    pc = lora_config(lora)
    assert pc.target_modules == "all-linear" and pc.r == 4 and pc.lora_alpha == 8
    assert sorted(lora_config(LoRASettings(target_modules=("q_proj", "v_proj"))).target_modules) == ["q_proj", "v_proj"]


def test_study_flags_are_study_config_fields():
    import inspect

    from pluralign._fields import settings
    from pluralign.cli._validate import RULES
    from pluralign.cli.wordassoc import study_cmd
    from pluralign.wordassoc.study import StudyConfig

    params = inspect.signature(study_cmd).parameters
    fields = {s.name: s for s in settings(StudyConfig) if s.meta.get("cli", True)}
    assert list(params)[:-2] == list(fields) and list(params)[-2:] == ["dry_run", "report"]
    assert params["seeds"].default.default == "0,1,2" and params["threads"].default.default == 1
    assert set(RULES["wordassoc study"]) == {s.name for s in settings(StudyConfig)}


def test_rl_stage_nests_grpo_settings_and_records_them_as_before():
    from pluralign.training.config import GRPOSettings

    rec = stage_settings(RLStage())
    assert "grpo" not in rec and {k: rec[k] for k in ("num_generations", "max_completion_length", "temperature", "beta")} == \
        {"num_generations": 4, "max_completion_length": 32, "temperature": 1.0, "beta": 0.0}
    assert "loss_type" not in rec  # at its default: not recorded, as before
    assert stage_settings(RLStage(grpo=GRPOSettings(num_generations=2, loss_type="grpo")))["loss_type"] == "grpo"
