"""Request -> prompt token ids and generation budget, with the context-length checks a client can act on.

The HTTP handlers encode on the event loop while the decoding thread decodes text; a Rust tokenizer refuses to
be used from two threads at once ("Already borrowed"), so the handlers use their own copy of the tokenizer.
"""

from __future__ import annotations

import copy

import torch

from onlinespec.prompting import encode_prompt, has_chat_template
from onlinespec.serve.errors import bad_request
from onlinespec.serve.schemas import CompletionRequest


class PromptEncoder:
    def __init__(self, tokenizer, vocab_size: int, context_length: int | None, default_max_tokens: int) -> None:
        self.tokenizer = copy.deepcopy(tokenizer)
        self.vocab_size = vocab_size
        self.context_length = context_length
        self.default_max_tokens = default_max_tokens

    @property
    def has_chat_template(self) -> bool:
        return has_chat_template(self.tokenizer)

    def encode(self, req: CompletionRequest) -> torch.Tensor:
        """The prompt as LongTensor [T]: raw text (completions, `encode_prompt(chat=False)`), token ids, or chat
        messages through the model's chat template (`encode_prompt(chat=True)`)."""
        if req.kind == "chat":
            param = "messages"
            if not self.has_chat_template:
                raise bad_request("this model has no chat template: use /v1/completions with a raw prompt", param)
            try:
                ids = encode_prompt(self.tokenizer, req.messages, chat=True)
            except Exception as exc:  # the template's own checks (e.g. roles must alternate) are user errors
                raise bad_request(f"the chat template refused these messages: {exc}", param) from None
        elif isinstance(req.prompt, list):
            param = "prompt"
            bad = [t for t in req.prompt if not 0 <= t < self.vocab_size]
            if bad:
                raise bad_request(f"token id {bad[0]} is outside the vocabulary (0..{self.vocab_size - 1})", param)
            ids = torch.tensor(req.prompt, dtype=torch.long)
        else:
            param, ids = "prompt", encode_prompt(self.tokenizer, req.prompt, chat=False)
        if ids.numel() == 0:
            raise bad_request("the prompt encodes to no tokens: give some text to continue", param)
        if self.context_length is not None and ids.shape[0] >= self.context_length:
            raise bad_request(
                f"the prompt has {ids.shape[0]} tokens but the model's context is {self.context_length}: shorten it",
                param,
                code="context_length_exceeded",
            )
        return ids

    def max_new_tokens(self, req: CompletionRequest, prompt_tokens: int) -> int:
        """The request's max_tokens, refused if prompt + max_tokens exceed the context; the server default
        (trimmed to the room left in the context) when the request gives none."""
        room = self.context_length - prompt_tokens if self.context_length is not None else None
        if req.max_tokens is None:
            return min(self.default_max_tokens, room) if room is not None else self.default_max_tokens
        if room is not None and req.max_tokens > room:
            raise bad_request(
                f"the prompt has {prompt_tokens} tokens and max_tokens is {req.max_tokens}, together more than the "
                f"model's context of {self.context_length} tokens: lower max_tokens to at most {room}",
                "max_tokens",
                code="context_length_exceeded",
            )
        return req.max_tokens
