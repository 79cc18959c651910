"""Validation of /v1/completions and /v1/chat/completions bodies into one `CompletionRequest`.

The bodies are pydantic models (strict types: `true` is no integer, `"1"` no number; unknown fields forbidden);
`parse_request` turns the first validation error into an `ApiError(400)` in the OpenAI shape, naming the offending
field. A JSON `null` means the field's default, as in OpenAI's API. Fields of the OpenAI API this server does not
implement are refused unless they carry their neutral value (so clients that always send defaults still work);
fields that are not in the API at all are refused by name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from onlinespec.decoding.config import SEED_RANGE
from onlinespec.serve.errors import ApiError, bad_request, printable

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


def _refuse(message: str, code: str = "invalid_value") -> PydanticCustomError:
    """A validation error whose message is ours, word for word: `parse_request` writes it after the field's quoted
    name (no context is given, so pydantic leaves the braces of the message alone)."""
    return PydanticCustomError(code, message)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_the_default(cls, data: Any) -> Any:
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data


class StreamOptions(_Strict):
    include_usage: bool = False


def _text_parts_joined(content: Any) -> Any:
    """Message content: a string, or a list of {"type": "text", "text": ...} parts (joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
            raise _refuse('parts must be {"type": "text", "text": ...}')
        return "".join(p["text"] for p in content)
    raise _refuse("must be a string or a list of text parts")


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: Annotated[str, BeforeValidator(_text_parts_joined)]
    name: str | None = None


def _one_prompt(prompt: Any) -> Any:
    """A completions prompt: text, or token ids; a batch of one is that one prompt, a larger batch is refused."""
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str):
        if not prompt.strip():
            raise _refuse("is empty: give some text to continue")
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        return prompt
    if isinstance(prompt, list) and len(prompt) > 1 and all(isinstance(p, str | list) for p in prompt):
        raise _refuse("is a batch: batches of prompts are not supported, send one prompt per request")
    raise _refuse("must be a non-empty string or a list of token ids")


def _some_messages(messages: Any) -> Any:
    if not isinstance(messages, list) or not messages:
        raise _refuse("must be a non-empty list of {role, content} objects")
    return messages


def _stop_strings(value: Any) -> Any:
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise _refuse("must be a non-empty string or a list of non-empty strings")
    if len(stops) > MAX_STOP_STRINGS:
        raise _refuse(f"takes at most {MAX_STOP_STRINGS} strings, got {len(stops)}")
    return tuple(stops)


PromptValue = Annotated[str | list[int], BeforeValidator(_one_prompt)]
Messages = Annotated[list[Message], BeforeValidator(_some_messages)]
StopStrings = Annotated[tuple[str, ...], BeforeValidator(_stop_strings)]


class _Body(_Strict):
    """The fields both endpoints share."""

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    top_k: int = Field(0, ge=0)
    seed: int = Field(0, ge=MIN_SEED, le=MAX_SEED)
    stop: StopStrings = ()
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    user: str | None = None
    # the API's parameters this server does not implement: only their neutral values (NEUTRAL) pass
    echo: Any = None
    logprobs: Any = None
    top_logprobs: Any = None
    best_of: Any = None
    suffix: Any = None
    presence_penalty: Any = None
    frequency_penalty: Any = None
    logit_bias: Any = None
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    parallel_tool_calls: Any = None
    response_format: Any = None
    service_tier: Any = None
    store: Any = None
    metadata: Any = None

    @field_validator(*NEUTRAL, mode="before")
    @classmethod
    def _only_neutral(cls, value: Any, info: ValidationInfo) -> Any:
        if value not in NEUTRAL[info.field_name]:
            raise _refuse("is not supported by this server", code="unsupported_parameter")
        return value

    @field_validator("n")
    @classmethod
    def _one_completion(cls, n: int) -> int:
        if n != 1:
            raise _refuse(f"must be 1: only n = 1 is supported (one completion per request), got {n}")
        return n

    @field_validator("max_tokens", "max_completion_tokens", check_fields=False)
    @classmethod
    def _within_this_server(cls, value: int | None, info: ValidationInfo) -> int | None:
        limit = (info.context or {}).get("max_tokens_limit")
        if value is not None and limit is not None and value > limit:
            raise _refuse(f"must be <= {limit} on this server, got {value}")
        return value


class CompletionBody(_Body):
    prompt: PromptValue


class ChatBody(_Body):
    messages: Messages
    max_completion_tokens: int | None = Field(None, ge=1)  # the chat API's newer name for max_tokens


BODIES: dict[str, type[_Body]] = {"completion": CompletionBody, "chat": ChatBody}
# pydantic's error types -> what the value must be, for the messages of type errors
EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "string_type": "a string",
    "model_type": "an object",
    "dict_type": "an object",
    "list_type": "a list",
}


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
    """Check every field of a completions (`kind="completion"`) or chat (`kind="chat"`) body; the first error is
    the 400 the client gets."""
    try:
        parsed = BODIES[kind].model_validate(body, context={"max_tokens_limit": max_tokens_limit})
    except ValidationError as exc:
        raise _api_error(exc.errors()[0], BODIES[kind]) from None
    if parsed.stream_options is not None and not parsed.stream:
        raise bad_request("'stream_options' is only allowed when 'stream' is true", param="stream_options")
    max_tokens = parsed.max_tokens
    if isinstance(parsed, ChatBody) and parsed.max_completion_tokens is not None:
        max_tokens = parsed.max_completion_tokens
    return CompletionRequest(
        kind=kind,
        model=parsed.model,
        prompt=parsed.prompt if isinstance(parsed, CompletionBody) else None,
        messages=[{"role": m.role, "content": m.content} for m in parsed.messages]
        if isinstance(parsed, ChatBody)
        else None,
        max_tokens=max_tokens,
        temperature=parsed.temperature,
        top_p=parsed.top_p,
        top_k=parsed.top_k,
        seed=parsed.seed,
        stop=parsed.stop,
        stream=parsed.stream,
        include_usage=bool(parsed.stream_options and parsed.stream_options.include_usage),
    )


def _api_error(error: dict, model: type[BaseModel]) -> ApiError:
    """One pydantic error -> the OpenAI-shaped 400: `param` is the field's path (`messages[0].role`), the message
    names it and says what it must be."""
    param = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]).lstrip(".")
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "extra_forbidden":
        return bad_request(f"unrecognized request argument supplied: {param}", param=param, code="unknown_parameter")
    if kind == "unsupported_parameter":
        return bad_request(f"'{param}' {error['msg']}", param=param, code="unsupported_parameter")
    if kind == "missing":
        message = "is required"
    elif kind in EXPECTED:
        message = f"must be {EXPECTED[kind]}, got {_shown(value)}"
    elif kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        message = f"must be {_allowed(model, str(error['loc'][0]))}, got {value}"
    elif kind == "literal_error":
        message = f"must be one of {ctx.get('expected')}, got {_shown(value)}"
    else:  # our own validators' messages (_refuse), and anything else pydantic says
        message = error["msg"]
    return bad_request(f"'{param}' {message}", param=param)


def _allowed(model: type[BaseModel], name: str) -> str:
    """The range a bounded field's `Field(...)` declares, in words: "between 0 and 2", "in (0, 1]", ">= 1"."""
    bounds = {}
    for constraint in model.model_fields[name].metadata:
        for kind in ("ge", "gt", "le", "lt"):
            if hasattr(constraint, kind):
                bounds[kind] = getattr(constraint, kind)
    lo, hi = bounds.get("ge", bounds.get("gt")), bounds.get("le", bounds.get("lt"))
    if lo is not None and hi is not None:
        if "ge" in bounds and "le" in bounds:
            return f"between {_number(lo)} and {_number(hi)}"
        return f"in {'[' if 'ge' in bounds else '('}{_number(lo)}, {_number(hi)}{']' if 'le' in bounds else ')'}"
    sign, bound = next((s, bounds[k]) for k, s in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if k in bounds)
    return f"{sign} {_number(bound)}"


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


SHOWN_CHARS = 80  # an error echoes at most this much of the value it refuses (a client may send megabytes)


def _shown(value: Any) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."
