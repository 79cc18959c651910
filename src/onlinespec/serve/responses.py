"""OpenAI-shaped response bodies and server-sent-event chunks for completions and chat completions.

Every finished response carries `usage` (prompt/completion/total tokens) and `speculative`: the request's
speculative-decoding stats (tau, alpha, drafted/accepted tokens, target forwards, tokens/s, ...), whether the
draft learned from it, and the draft round that decoded it.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

from onlinespec.pipeline import GenerationResult

FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length"}


def sse(payload: dict | str) -> str:
    """One server-sent event: `data: <json>` and a blank line."""
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


DONE_EVENT = sse("[DONE]")


@dataclass
class ResponseShape:
    kind: str  # "completion" | "chat"
    model: str
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        self.id = self.id or f"{'chatcmpl' if self.kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"

    def _head(self, object_name: str) -> dict:
        return {"id": self.id, "object": object_name, "created": self.created, "model": self.model}

    def full(self, result: GenerationResult, speculative: dict) -> dict:
        """The non-streaming response."""
        reason = FINISH_REASONS[result.finish_reason]
        if self.kind == "chat":
            choice = {"index": 0, "message": {"role": "assistant", "content": result.text}}
            body = self._head("chat.completion")
        else:
            choice = {"index": 0, "text": result.text}
            body = self._head("text_completion")
        body["choices"] = [{**choice, "logprobs": None, "finish_reason": reason}]
        body["usage"] = usage(result)
        body["speculative"] = speculative
        return body

    def chunk(self, text: str | None = None, finish_reason: str | None = None, role: bool = False) -> dict:
        """One streaming chunk; `role=True` is the chat stream's opening chunk."""
        if self.kind == "chat":
            delta: dict = {"role": "assistant", "content": ""} if role else {}
            if text is not None:
                delta["content"] = text
            choice = {"index": 0, "delta": delta}
            body = self._head("chat.completion.chunk")
        else:
            choice = {"index": 0, "text": text or ""}
            body = self._head("text_completion")
        body["choices"] = [{**choice, "logprobs": None, "finish_reason": finish_reason}]
        return body

    def final_chunks(self, result: GenerationResult, speculative: dict, include_usage: bool) -> list[dict]:
        """The chunk with the finish reason (and `speculative`), then the usage chunk if asked for."""
        last = self.chunk(finish_reason=FINISH_REASONS[result.finish_reason])
        last["speculative"] = speculative
        if not include_usage:
            return [last]
        tail = {**self._head(last["object"]), "choices": [], "usage": usage(result), "speculative": speculative}
        return [last, tail]


def usage(result: GenerationResult) -> dict:
    prompt, completion = result.stats.prompt_tokens, result.stats.new_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
