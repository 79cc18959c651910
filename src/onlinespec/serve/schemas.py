"""Validation of /v1/completions and /v1/chat/completions bodies into one `CompletionRequest`.

Every refusal is an `ApiError(400)` naming the offending field. Fields of the OpenAI API this server does not
implement are refused unless they carry their neutral value (so clients that always send defaults still work);
fields that are not in the API at all are refused by name.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from onlinespec.decoding.config import SEED_RANGE
from onlinespec.serve.errors import bad_request, printable

COMMON_FIELDS = {"model", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "stream", "stream_options"}
COMMON_FIELDS |= {"n", "user"}
KIND_FIELDS = {"completion": {"prompt"}, "chat": {"messages", "max_completion_tokens"}}
# Parameters of the OpenAI API this server does not implement, with the values that mean "off".
NEUTRAL = {
    "echo": (False,),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "best_of": (None, 1),
    "suffix": (None,),
    "presence_penalty": (None, 0),
    "frequency_penalty": (None, 0),
    "logit_bias": (None, {}),
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "functions": (None, []),
    "function_call": (None, "none"),
    "parallel_tool_calls": (None,),
    "response_format": (None, {"type": "text"}),
    "service_tier": (None, "auto", "default"),
    "store": (None, False),
    "metadata": (None, {}),
}
ROLES = ("system", "developer", "user", "assistant")
MIN_SEED, MAX_SEED = SEED_RANGE  # what the sampler's generator takes (64 bits, either sign)
MAX_STOP_STRINGS = 4


@dataclass(frozen=True)
class CompletionRequest:
    kind: str  # "completion" | "chat"
    model: str | None
    prompt: str | list[int] | None  # completions: text, or token ids
    messages: list[dict] | None  # chat: [{"role": ..., "content": str}]
    max_tokens: int | None  # None: the server's default, trimmed to the context
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    stop: tuple[str, ...] = ()
    stream: bool = False
    include_usage: bool = False


def parse_json(raw: bytes) -> dict:
    """The request body as a JSON object, or a 400 that says what is wrong with it.

    Refused here, before any field is read: invalid JSON (integers of more than 4,300 digits included: Python's
    limit), nesting deeper than the parser's recursion limit, and strings or keys holding a lone UTF-16 surrogate
    (`"\\ud800"` is valid JSON but no valid text: it cannot be tokenised, logged or echoed back as UTF-8).
    """
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        raise bad_request("the request body is nested too deeply to be a request", code="invalid_json") from None
    if not isinstance(body, dict):
        raise bad_request(f"the request body must be a JSON object, got {type(body).__name__}", code="invalid_json")
    _refuse_lone_surrogates(body)
    return body


def _refuse_lone_surrogates(body: dict) -> None:
    """Walk the parsed body (iteratively: no recursion on client-chosen depth) and refuse the first key or string
    that holds a lone surrogate, naming where it is (the name itself written with the surrogate escaped)."""
    pending: list[tuple[str, object]] = [("", body)]
    while pending:
        path, value = pending.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                where = f"{path}.{key}" if path else key
                if _SURROGATE.search(key):
                    _surrogate_error(where)
                pending.append((where, item))
        elif isinstance(value, list):
            pending.extend((f"{path}[{i}]", item) for i, item in enumerate(value))
        elif isinstance(value, str) and _SURROGATE.search(value):
            _surrogate_error(path)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _surrogate_error(where: str) -> None:
    where = printable(where)
    raise bad_request(f"'{where}' holds a lone UTF-16 surrogate, which is not text: send valid UTF-8", param=where)


def parse_request(body: dict, kind: str, max_tokens_limit: int) -> CompletionRequest:
    """Check every field of a completions (`kind="completion"`) or chat (`kind="chat"`) body."""
    allowed = COMMON_FIELDS | KIND_FIELDS[kind]
    for name, value in body.items():
        if name in allowed:
            continue
        if name in NEUTRAL:
            if value not in NEUTRAL[name]:
                raise bad_request(f"'{name}' is not supported by this server", param=name, code="unsupported_parameter")
            continue
        raise bad_request(f"unrecognized request argument supplied: {name}", param=name, code="unknown_parameter")
    n = _integer(body, "n", 1, None)
    if n is not None and n != 1:
        raise bad_request(f"only n = 1 is supported (one completion per request), got {n}", param="n")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise bad_request("'model' must be a string", param="model")
    max_tokens = _integer(body, "max_tokens", 1, max_tokens_limit)
    if kind == "chat":
        alias = _integer(body, "max_completion_tokens", 1, max_tokens_limit)
        max_tokens = alias if alias is not None else max_tokens
    stream = _boolean(body, "stream")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or set(options) - {"include_usage"}):
        raise bad_request("'stream_options' must be an object with at most 'include_usage'", param="stream_options")
    if options is not None and not stream:
        raise bad_request("'stream_options' is only allowed when 'stream' is true", param="stream_options")
    include_usage = bool(options and _boolean(options, "include_usage", "stream_options.include_usage"))
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise bad_request("'user' must be a string", param="user")
    temperature = _number(body, "temperature", 0.0, 2.0)
    top_p = _number(body, "top_p", 0.0, 1.0)
    if top_p is not None and top_p <= 0:
        raise bad_request(f"'top_p' must be in (0, 1], got {top_p}", param="top_p")
    top_k = _integer(body, "top_k", 0, None)
    seed = _integer(body, "seed", MIN_SEED, MAX_SEED)
    return CompletionRequest(
        kind=kind,
        model=model,
        prompt=_prompt(body) if kind == "completion" else None,
        messages=_messages(body) if kind == "chat" else None,
        max_tokens=max_tokens,
        temperature=0.0 if temperature is None else temperature,
        top_p=1.0 if top_p is None else top_p,
        top_k=top_k or 0,
        seed=seed or 0,
        stop=_stop(body),
        stream=stream,
        include_usage=include_usage,
    )


def _integer(body: dict, name: str, lo: int | None, hi: int | None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"'{name}' must be an integer, got {json.dumps(value)}", param=name)
    if lo is not None and value < lo:
        raise bad_request(f"'{name}' must be >= {lo}, got {value}", param=name)
    if hi is not None and value > hi:
        raise bad_request(f"'{name}' must be <= {hi} on this server, got {value}", param=name)
    return value


def _number(body: dict, name: str, lo: float, hi: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise bad_request(f"'{name}' must be a number, got {json.dumps(value)}", param=name)
    if not lo <= value <= hi:
        raise bad_request(f"'{name}' must be between {lo:g} and {hi:g}, got {value}", param=name)
    return float(value)


def _boolean(body: dict, name: str, param: str | None = None) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad_request(f"'{param or name}' must be true or false, got {json.dumps(value)}", param=param or name)
    return value


def _stop(body: dict) -> tuple[str, ...]:
    value = body.get("stop")
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise bad_request("'stop' must be a non-empty string or a list of non-empty strings", param="stop")
    if len(stops) > MAX_STOP_STRINGS:
        raise bad_request(f"'stop' takes at most {MAX_STOP_STRINGS} strings, got {len(stops)}", param="stop")
    return tuple(stops)


def _prompt(body: dict) -> str | list[int]:
    if "prompt" not in body or body["prompt"] is None:
        raise bad_request("'prompt' is required", param="prompt")
    prompt = body["prompt"]
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str):
        if not prompt.strip():
            raise bad_request("'prompt' is empty: give some text to continue", param="prompt")
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        return prompt
    if isinstance(prompt, list) and len(prompt) > 1 and all(isinstance(p, str | list) for p in prompt):
        raise bad_request("batches of prompts are not supported: send one prompt per request", param="prompt")
    raise bad_request("'prompt' must be a non-empty string or a list of token ids", param="prompt")


def _messages(body: dict) -> list[dict]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty list of {role, content} objects", param="messages")
    out = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad_request(f"'{where}' must be an object with 'role' and 'content'", param=where)
        extra = set(message) - {"role", "content", "name"}
        if extra:
            raise bad_request(f"'{where}' has unsupported field '{sorted(extra)[0]}'", param=f"{where}.{min(extra)}")
        role = message.get("role")
        if role not in ROLES:
            raise bad_request(f"'{where}.role' must be one of {', '.join(ROLES)}, got {json.dumps(role)}", param=where)
        out.append({"role": role, "content": _content(message.get("content"), f"{where}.content")})
    return out


def _content(content, where: str) -> str:
    """Message content: a string, or a list of {"type": "text", "text": ...} parts (joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad_request(f'\'{where}\' parts must be {{"type": "text", "text": ...}}', param=where)
            texts.append(part["text"])
        return "".join(texts)
    raise bad_request(f"'{where}' must be a string or a list of text parts", param=where)
