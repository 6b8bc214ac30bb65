"""pluralign: pluralistic cultural alignment of language models.

Sub-packages follow the data flow:

* :mod:`pluralign.data`        profiles, survey items, loaders, splits, task shapes; preference / prompt data
                               (PRISM, Community Alignment, BLEnD)
* :mod:`pluralign.models`      backbone loading (hub id, local folder, GGUF) and chat prompts
* :mod:`pluralign.evaluation`  option scoring, metrics, prompting methods, the evaluation runner; open-ended
                               generation eval (win rate vs base with a judge, BLEnD answer match, diversity)
* :mod:`pluralign.adapters`    MoE-LoRA (CuMA, MixLoRA, HydraLoRA) and peft baselines
* :mod:`pluralign.training`    conditional SFT and DPO (survey answers, preference pairs) and GRPO (an in-house
                               implementation, also ALIGN's RL stage)
* :mod:`pluralign.blackbox`    gradient-free soft prompts (VSM 2013 / Hofstede)
* :mod:`pluralign.serve`       HTTP serving API
"""

__version__ = "0.1.0"

from pluralign.errors import PluralignError  # noqa: E402

__all__ = ["PluralignError", "__version__"]
