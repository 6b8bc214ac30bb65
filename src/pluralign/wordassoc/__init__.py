"""Word-association learning for cultural alignment (ALIGN; SWOW free associations).

* :mod:`.tasks` — prompts for the two tasks (generation: cue → associations; ranking: cue +
  candidates → ranked list), per language, and the parser of model output;
* :mod:`.metrics` — Precision@K and the Spearman reward / ranking score;
* :mod:`.generate` — batched, left-padded generation and the held-out evaluation;
* :mod:`.train` — SFT with LoRA (TRL ``SFTTrainer`` + peft), then GRPO (TRL) with a Spearman reward;
* :mod:`.transfer` — WVS answers for USA / China before and after training, high-tension items.

Importing this package does not import TRL (only :mod:`.train` does).
"""
