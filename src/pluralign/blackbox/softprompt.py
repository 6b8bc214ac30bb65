"""The soft-prompt file format and model wrapper now live in :mod:`pluralign.adapters.softprompt`
(a searched soft prompt is an adapter, loaded by evaluation and serve alike); this module
re-exports them so that ``pluralign.blackbox.softprompt`` imports keep working."""

from pluralign.adapters.softprompt import (  # noqa: F401
    META_FILE,
    PEFT_CONFIG_FILE,
    PEFT_KEY,
    PEFT_WEIGHTS_FILE,
    PROMPT_FILE,
    TENSOR_KEY,
    SoftPromptModel,
    extend_inputs,
    load_soft_prompt,
    load_soft_prompt_model,
    peft_prompt_config,
    save_soft_prompt,
)

__all__ = ["SoftPromptModel", "extend_inputs", "load_soft_prompt", "load_soft_prompt_model", "peft_prompt_config", "save_soft_prompt"]
