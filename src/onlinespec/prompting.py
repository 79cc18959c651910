"""Prompt text or chat messages -> token ids, with one chat-template rule for generate, bench and serve.

The rule: with `chat=True` and a tokenizer that has a chat template, the messages (a text is one user message) go
through the template with the generation prompt appended; otherwise the text (for messages: their contents joined
by blank lines) is tokenized with the tokenizer's special tokens. Callers check for an empty result themselves, so
each keeps its own error message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

Messages = Sequence[Mapping[str, str]]  # [{"role": "user", "content": "..."}, ...]


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def encode_prompt(tokenizer, prompt: str | Messages, chat: bool = True) -> torch.Tensor:
    """A text or chat messages -> LongTensor [T] (T may be 0), by the rule above. Errors of the chat template
    itself (e.g. roles that must alternate) propagate."""
    if isinstance(prompt, str):
        messages, text = [{"role": "user", "content": prompt}], prompt
    else:
        messages, text = list(prompt), "\n\n".join(m["content"] for m in prompt)
    if chat and has_chat_template(tokenizer):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    else:
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)
