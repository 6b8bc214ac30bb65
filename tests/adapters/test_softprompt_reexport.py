"""The soft-prompt format and wrapper live on the adapters floor (issue 28); the old module path
``pluralign.blackbox.softprompt`` (scripts, recorded commands) re-exports the same objects."""

from __future__ import annotations

import inspect

import pluralign.adapters.softprompt as new
import pluralign.blackbox.softprompt as old


def test_old_path_reexports_the_same_objects():
    names = ["SoftPromptModel", "extend_inputs", "load_soft_prompt", "load_soft_prompt_model", "peft_prompt_config", "save_soft_prompt",
             "PROMPT_FILE", "META_FILE", "TENSOR_KEY", "PEFT_CONFIG_FILE", "PEFT_WEIGHTS_FILE", "PEFT_KEY"]
    for name in names:
        assert getattr(old, name) is getattr(new, name), name
    assert new.SoftPromptModel.__module__ == "pluralign.adapters.softprompt"
    import pluralign.adapters
    import pluralign.blackbox

    for name in ("SoftPromptModel", "load_soft_prompt", "load_soft_prompt_model", "save_soft_prompt"):
        assert getattr(pluralign.adapters, name) is getattr(new, name) is getattr(pluralign.blackbox, name)


def test_evaluate_run_loads_soft_prompts_itself():
    from pluralign.evaluation.run import evaluate_run

    assert list(inspect.signature(evaluate_run).parameters) == ["cfg"]
