"""Backbones: load by short name, hub id, local folder or GGUF file; chat prompts."""

from pluralign.models.loading import SHORT_NAMES, load_backbone, load_tokenizer, resolve_model
from pluralign.models.chat import build_chat_prompt, has_chat_template

__all__ = ["SHORT_NAMES", "load_backbone", "load_tokenizer", "resolve_model", "build_chat_prompt", "has_chat_template"]
