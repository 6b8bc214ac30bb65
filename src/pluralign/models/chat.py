"""Chat prompts with a plain-text fallback for models without a chat template."""

from __future__ import annotations

from typing import Sequence

Message = dict  # {"role": "system"|"user"|"assistant", "content": str}


def has_chat_template(tok) -> bool:
    return bool(getattr(tok, "chat_template", None))


def build_chat_prompt(
    tok,
    messages: Sequence[Message],
    *,
    add_generation_prompt: bool = True,
    answer_prefix: str = "",
    use_chat_template: bool | None = None,
    enable_thinking: bool = False,
) -> str:
    """Render ``messages`` to one prompt string ready for the model's answer.

    With a chat template (``use_chat_template`` None = auto), the template renders the turns and the
    generation prompt. Without one, a plain fallback::

        System: ...\n\nUser: ...\n\nAssistant:

    ``answer_prefix`` is appended after the generation prompt (e.g. ``"Answer: "``).

    ``enable_thinking`` is passed to the template (False by default): hybrid reasoning models such
    as Qwen3 would otherwise start their answer with ``<think>``, so the answer token would be read
    where the model wants to open its reasoning; with False, Qwen3's template emits an empty
    ``<think>\n\n</think>\n\n`` block and the next token is the answer. Templates that do not use
    the variable ignore it.
    """
    use = has_chat_template(tok) if use_chat_template is None else use_chat_template
    if use:
        if not has_chat_template(tok):
            from pluralign.errors import PluralignError

            raise PluralignError(
                f"model {getattr(tok, 'name_or_path', '?')} has no chat template; use --no-chat-template for the plain format",
                field="chat_template",
            )
        text = tok.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt, enable_thinking=enable_thinking
        )
        return text + answer_prefix
    parts = []
    for m in messages:
        role = {"system": "System", "user": "User", "assistant": "Assistant"}.get(m["role"], m["role"].title())
        parts.append(f"{role}: {m['content']}")
    text = "\n\n".join(parts)
    if add_generation_prompt:
        text += "\n\nAssistant:"
        if answer_prefix:
            text += " " + answer_prefix.lstrip()
        else:
            text += " "
    return text
